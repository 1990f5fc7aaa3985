"""Prometheus metrics of the service, read at each scrape from the running cameras and the database."""
from __future__ import annotations

import shutil
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class _Collector:
    def __init__(self, db: Any, service: Any, media_root: str) -> None:
        self.db, self.service, self.media_root = db, service, media_root

    def collect(self) -> Any:
        cams = self.service.snapshot() if self.service is not None else []
        per_camera = [
            (GaugeMetricFamily, "xvad_camera_frames_per_second", "sampled frames scored per second",
             "frames_per_second"),
            (CounterMetricFamily, "xvad_camera_frames", "sampled frames scored", "frames"),
            (CounterMetricFamily, "xvad_camera_dropped_frames", "sampled frames dropped because the service "
             "fell behind", "dropped"),
            (CounterMetricFamily, "xvad_camera_windows", "windows scored", "windows"),
            (CounterMetricFamily, "xvad_camera_alerts", "alerts raised by this process", "alerts"),
            (GaugeMetricFamily, "xvad_camera_queue_depth", "frames waiting for the model", "queue_depth"),
            (GaugeMetricFamily, "xvad_camera_latency_p50_seconds", "median seconds from frame to window score",
             "latency_p50"),
            (GaugeMetricFamily, "xvad_camera_latency_p95_seconds", "95th percentile seconds from frame to window "
             "score", "latency_p95"),
        ]
        for kind, name, doc, key in per_camera:
            family = kind(name, doc, labels=["camera"])
            for c in cams:
                if c.get(key) is not None:
                    family.add_metric([c["name"]], float(c[key]))
            yield family
        up = GaugeMetricFamily("xvad_camera_up", "1 while the camera delivers frames", labels=["camera", "state"])
        for c in cams:
            up.add_metric([c["name"], c["state"]], 1.0 if c["state"] == "running" else 0.0)
        yield up
        paused = GaugeMetricFamily("xvad_media_paused", "1 while alert media are not written (disk nearly full)")
        paused.add_metric([], 1.0 if self.service is not None and self.service.media_paused else 0.0)
        yield paused
        try:
            free = shutil.disk_usage(self.media_root).free
        except OSError:
            free = 0
        disk = GaugeMetricFamily("xvad_media_free_bytes", "free space where alert media are written")
        disk.add_metric([], float(free))
        yield disk


def metrics_text(db: Any, service: Any, media_root: str) -> str:
    """The Prometheus text exposition of the current figures."""
    registry = CollectorRegistry()
    registry.register(_Collector(db, service, media_root))
    return generate_latest(registry).decode()
