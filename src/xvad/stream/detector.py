"""Real-time detection on one source: a reader, the inference part, the alert lifecycle and the outputs.

``Detector(model).run(source)`` composes the pieces: :mod:`.source` decodes and samples the source in a
thread; :mod:`.inference` runs the backbone on batches of frames and the head on each due window of
the ring buffer; :mod:`.alerts` turns window scores into alerts (k of the last n windows over the
threshold); :mod:`.outputs` writes the events file, the annotated video and the explanations.

The window score is the softmax probability of the alert class (binary models: class 1) or, for
multi-class models, of the most likely non-normal class (class 0 is "normal"), whose name is reported.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import StreamError, VideoError
from ..video import frame_tensor, needs_partner, parse_source
from .alerts import AlertTracker
from .frames import Disconnect, End, Frame, FrameQueue, Gap
from .inference import FrameFeature, FrameInput, Scorer, WindowBuffer, WindowResult, window_scores
from .outputs import OutputOptions, Outputs
from .policy import parse_alert
from .source import Reader, Reconnect

__all__ = ["DEFAULT_FPS", "Detector", "WindowResult", "window_scores"]

DEFAULT_FPS = 8.0


def camera_log(name: str) -> logging.Logger:
    """The logger of one camera (``xvad.camera.<name>``), so that each camera's lines can be told apart
    and silenced or raised on their own."""
    return logging.getLogger("xvad.camera." + "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80])


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


class Detector:
    """Detect anomalies on a file, a webcam or a network stream.

    ``for result in Detector(model).run(source): ...`` yields a :class:`WindowResult` per window;
    ``summary()`` gives the counts and speeds afterwards. ``stop()`` (from another thread or a
    signal handler) ends the run cleanly: the events file is complete and the video playable.

    ``fps``: sampling rate (default: the model's ``config["fps"]``, else 8). ``window``: frames per
    window (default: ``config["frames"]``). ``stride``: frames between windows. ``alert``: "k/n".
    ``batch``: at most this many frames per backbone call. ``events``: JSON-lines file.
    ``explain_dir``: explain each alert there (Grad-CAM). ``out``: annotated MP4. ``live``: drop
    frames when behind and reconnect when the source goes away (default: True for URLs and
    webcams). ``realtime``: pace a file at its own rate (simulates a camera; implies live
    dropping unless ``live=False``). ``reconnect``: ``(initial, max)`` backoff in seconds, or
    None to end at the first disconnection; ``give_up_after``: seconds without the source before
    giving up (`StreamError`). ``timeout``: network open/read timeout. ``queue_size``: decoded
    frames waiting for the backbone (default: 2 for live sources, ``2 * batch`` for files).
    ``precision``: "auto", "fp32" or "bf16" for the backbone (default: the model's setting).
    ``engine``: "auto", "torch" or "openvino": what runs the backbone (default: the model's;
    :meth:`xvad.models.CRNN.set_engine`).
    ``log_windows``: an events line per window too. ``source_options``: FFmpeg options for
    opening the source (e.g. ``{"rtsp_transport": "udp"}``). ``name``: the camera's name in the log
    (``xvad.camera.<name>``). ``skip_still``: motion and flow models skip the backbone on frames in
    which nothing moves (:class:`~.inference.FrameInput`), using the feature of an empty image.
    """

    def __init__(self, model: Any, fps: float | None = None, window: int | None = None, stride: int = 2,
                 threshold: float = 0.5, alert: str | tuple[int, int] = "3/5", batch: int = 8,
                 events: str | os.PathLike | None = None, explain_dir: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, live: bool | None = None, *,
                 log_windows: bool = False, precision: str | None = None, engine: str | None = None,
                 realtime: bool = False,
                 reconnect: tuple[float, float] | None = (0.5, 10.0), give_up_after: float = 300.0,
                 timeout: float = 10.0, queue_size: int | None = None, explain_method: str = "gradcam",
                 source_options: dict[str, str] | None = None, name: str | None = None,
                 skip_still: bool = False) -> None:
        cfg = getattr(model, "config", {}) or {}
        self.model = model
        self.fps = float(fps if fps is not None else (cfg.get("fps") or DEFAULT_FPS))
        self.window = int(window if window is not None else cfg.get("frames", 16))
        self.stride = int(stride)
        self.threshold = float(threshold)
        self.k, self.n = parse_alert(alert)
        self.batch = int(batch)
        for name, value in (("window", self.window), ("stride", self.stride), ("batch", self.batch)):
            if value < 1:
                raise StreamError(f"{name} must be at least 1, not {value}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise StreamError(f"fps must be positive, not {fps}")
        if not 0.0 <= self.threshold <= 1.0:
            raise StreamError(f"threshold must be between 0 and 1, not {threshold}")
        self.outputs = OutputOptions(None if events is None else os.fspath(events),
                                     None if out is None else os.fspath(out),
                                     None if explain_dir is None else os.fspath(explain_dir),
                                     explain_method, log_windows)
        self.live = live
        self.realtime = realtime
        try:
            if precision is not None:
                model.set_precision(precision)
            if engine is not None:
                model.set_engine(engine)      # after the precision: "auto" then means fp32 with OpenVINO
        except ValueError as exc:
            raise StreamError(str(exc)) from None
        if reconnect is None:
            self.reconnect = Reconnect(enabled=False)
        else:
            self.reconnect = Reconnect(float(reconnect[0]), float(reconnect[1]), float(give_up_after))
        self.timeout = float(timeout)
        self.queue_size = queue_size
        self.source_options = dict(source_options or {})
        self.name = name
        self.skip_still = skip_still
        self.log = camera_log(name or "detector")
        self.classes = list(getattr(model, "classes", None) or cfg.get("classes") or ["normal", "alert"])
        self.checkpoint = getattr(model, "checkpoint_id", None)
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._summary: dict[str, Any] = {}
        self._reset_counters()

    # -- public ----------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Ask the run to end (safe from any thread or a signal handler); outputs are finished."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    def summary(self) -> dict[str, Any]:
        """Counts and speeds of the current (or last) run."""
        return dict(self._summary) if self._summary and not self.running else self._make_summary()

    @property
    def running(self) -> bool:
        return self._running

    def process(self, source: Any) -> dict[str, Any]:
        """Run over the whole source and return :meth:`summary`."""
        for _ in self.run(source):
            pass
        return self.summary()

    def run(self, source: Any) -> Generator[WindowResult, None, None]:
        """Open ``source`` (one-line `VideoError` if impossible) and yield a result per window.

        The source is opened by this call; frames flow once iteration starts. Leaving the loop
        early (``break``) closes the run properly, as does :meth:`stop`.
        """
        if self._running:
            raise StreamError("this detector is already running; make one detector per stream")
        self._reset_counters()
        self._stop.clear()
        self._stop_reason = None
        self._summary = {}
        spec = parse_source(source, self.source_options)
        live = self.live if self.live is not None else (spec.live or self.realtime)
        cfg = self.model.config
        # live: a short queue, so that when processing falls behind the wait stays short (the
        # oldest frames are dropped); a file: room for two batches, so the backbone never waits
        qsize = self.queue_size or (max(2, self.batch // 4) if live else 2 * self.batch)
        reader = Reader(spec, self.fps, FrameInput(cfg, self.skip_still), FrameQueue(qsize),
                        live=live, keep_images=self.outputs.needs_images, realtime=self.realtime,
                        reconnect=self.reconnect, timeout=self.timeout, pairs=needs_partner(cfg))
        reader.open()                                  # fails here, before any output exists
        try:
            outputs = Outputs(self.outputs, self.checkpoint)
        except StreamError:
            reader.stop()
            raise
        return self._run(spec, reader, live, outputs)

    # -- the loop -----------------------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self._running = False
        self._frames = 0
        self._windows = 0
        self._gaps = 0
        self._latencies: deque[float] = deque(maxlen=10000)
        self._started: float | None = None
        self._elapsed = 0.0
        self._reader: Reader | None = None
        self._last: WindowResult | None = None
        self._alerts = AlertTracker(self.threshold, self.k, self.n)
        self._end_reason: str | None = None
        self._explainer: Any = None
        self._scorer: Scorer | None = None

    def _run(self, spec: Any, reader: Reader, live: bool, outputs: Outputs) -> Generator[WindowResult, None, None]:
        self._running = True
        self._live = live
        self._reader = reader
        self.source = spec.name
        scorer = self._scorer = Scorer(self.model, self.classes)
        buffer = WindowBuffer(self.window, self.stride)
        error: BaseException | None = None
        self.log = camera_log(self.name or spec.name)
        reader.log = self.log
        self.log.info("%s: detection starts (%s, %g fps, window %d, stride %d)", spec.name, spec.kind, self.fps,
                 self.window, self.stride)
        try:
            outputs.open(self.model, self.fps, self.threshold, spec.name)
            self._explainer = outputs.explainer
            outputs.write("start", source=spec.name, kind=spec.kind, live=live, realtime=self.realtime,
                          fps=self.fps, source_fps=reader.source_fps, window=self.window, stride=self.stride,
                          threshold=self.threshold, alert=f"{self.k}/{self.n}", batch=self.batch,
                          classes=self.classes, precision=self.model.precision,
                          checkpoint_path=getattr(self.model, "checkpoint_path", None),
                          xvad_version=__version__, pid=os.getpid())
            self._started = time.perf_counter()
            threads = torch.get_num_threads()
            reader.start()
            first = True
            while True:
                batch, marker = reader.queue.take(self.batch, self._live, self._stop)
                if first and batch:
                    first = False
                    if torch.get_num_threads() != threads:   # a torch whose thread setting is global
                        torch.set_num_threads(threads)
                if batch:
                    yield from self._process(batch, scorer, buffer, outputs)
                if marker is None:
                    if self._stop.is_set():
                        self._end_reason = self._stop_reason or "stopped"
                        break
                    continue
                if isinstance(marker, Disconnect):
                    self._close_alert(outputs, "disconnect", None)
                    self._alerts.reset()
                    buffer.clear()
                    outputs.disconnected(marker.time, marker.reason)
                    self.log.warning("%s: source lost (%s); reconnecting", spec.name, marker.reason)
                elif isinstance(marker, Gap):
                    self._gaps += 1
                    outputs.write("gap", began=marker.began, ended=marker.ended, seconds=round(marker.seconds, 3),
                                  attempts=marker.attempts, reconnected=marker.reconnected, reason=marker.reason)
                    self.log.info("%s: gap of %.1f s, %s", spec.name, marker.seconds,
                             "reconnected" if marker.reconnected else "not reconnected")
                elif isinstance(marker, End):
                    self._end_reason = marker.reason if marker.reason != "stopped" else \
                        (self._stop_reason or "stopped")
                    if marker.error is not None:
                        raise marker.error
                    if self._frames == 0 and marker.reason == "end":
                        raise VideoError(f"{spec.name}: no decodable video frames")
                    break
        except GeneratorExit:
            self._end_reason = self._end_reason or "closed"
            raise
        except BaseException as exc:
            error = exc
            self._end_reason = self._end_reason or "error"
            raise
        finally:
            self._finish(reader, outputs, error)

    def _process(self, batch: list[Frame], scorer: Scorer, buffer: WindowBuffer,
                 outputs: Outputs) -> list[WindowResult]:
        feats = scorer.features([f.tensor for f in batch])
        keep_tensor = outputs.explainer is not None
        due: list[tuple[int, list[FrameFeature]]] = []     # (position in batch, the window's frames)
        for i, (f, feat) in enumerate(zip(batch, feats)):
            tensor = None
            if keep_tensor:   # a still frame's input is that of the frame paired with itself
                tensor = f.tensor if f.tensor is not None or f.image is None else \
                    frame_tensor(f.image, f.image, self.model.config, f.region)
            window = buffer.push(FrameFeature(f.index, f.time, feat, f.arrival, f.image, tensor, f.region))
            if window is not None:
                due.append((i, window))
        self._frames += len(batch)
        scores = scorer.score([w for _, w in due])
        done = time.perf_counter()
        results = [self._decide(frames, s.score, s.class_index, s.class_name, done, outputs)
                   for (_, frames), s in zip(due, scores)]
        k = 0
        for i, f in enumerate(batch):
            while k < len(due) and due[k][0] == i:
                r = results[k]
                outputs.shown(r.score, r.class_name, r.alert_on, r.alert_id, r.event == "start")
                k += 1
            outputs.frame(f.index, f.time, f.image)
        return results

    def _decide(self, frames: list[FrameFeature], score: float, cls: int, name: str, done: float,
                outputs: Outputs) -> WindowResult:
        last = frames[-1]
        tracker = self._alerts
        change = tracker.update(score, cls, name, last.time, last.index)
        latency = done - last.arrival
        self._windows += 1
        self._latencies.append(latency)
        result = WindowResult(last.index, last.time, score, name, tracker.on, latency, frames[0].index,
                              frames[0].time, cls)
        alert = tracker.open
        if change == "start" and alert is not None:
            result.event, result.alert_id = "start", alert.id
            outputs.alert_started(alert, frames, f"{tracker.policy.count}/{self.n}", self.threshold)
            self.log.info("%s: alert %d starts at %.2f s (score %.3f, %s)", self.source, alert.id, last.time,
                          score, name)
        elif alert is not None:
            result.alert_id = alert.id
            if change == "end":
                result.event = "end"
                self._close_alert(outputs, "scores", result)
        outputs.window(frames, score, name, tracker.on, latency)
        self._last = result
        return result

    def _close_alert(self, outputs: Outputs, reason: str, result: WindowResult | None) -> None:
        alert = self._alerts.close()
        if alert is None:
            return
        end = result or self._last
        end_time = end.time if end is not None else alert.start_time
        end_frame = end.frame_index if end is not None else alert.start_frame
        outputs.alert_ended(alert, reason, end_time, end_frame, None if result is None else result.score)
        self.log.info("%s: alert %d ends at %.2f s (%s; peak %.3f)", self.source, alert.id, end_time, reason,
                      alert.peak)

    def _finish(self, reader: Reader, outputs: Outputs, error: BaseException | None) -> None:
        reader.stop()
        if self._started is not None:
            self._elapsed = time.perf_counter() - self._started
        if self._alerts.open is not None:
            self._close_alert(outputs, self._end_reason or "stopped", None)
        out_path, _ = outputs.close()
        self._running = False
        self._summary = self._make_summary()
        if out_path:
            self._summary["out"] = out_path
        fields = {k: v for k, v in self._summary.items() if k != "source"}
        if error is not None:
            fields["error"] = " ".join(str(error).split())[:300] or type(error).__name__
        outputs.finish(source=self.source, reason=self._end_reason or "end", **fields)
        self.log.info("%s: detection ends (%s): %d frames, %d windows, %d alerts", self.source,
                 self._end_reason or "end", self._frames, self._windows, self._alerts.count)

    def _make_summary(self) -> dict[str, Any]:
        r = self._reader
        stats = r.stats if r is not None else None
        elapsed = self._elapsed if not self._running else (
            time.perf_counter() - self._started if self._started else 0.0)
        lat = list(self._latencies)
        out = {
            "source": getattr(self, "source", None),
            "frames": self._frames,
            "windows": self._windows,
            "alerts": self._alerts.count,
            "alert_on": self._alerts.open is not None,
            "dropped": stats.dropped if stats else 0,
            "corrupt": stats.corrupt if stats else 0,
            "decoded": stats.decoded if stats else 0,
            "gaps": self._gaps,
            "still_skipped": self._scorer.skipped if self._scorer is not None else 0,
            "reconnects": stats.reconnects if stats else 0,
            "seconds": round(elapsed, 3),
            "fps": (self._frames / elapsed) if elapsed > 0 else None,
            "latency_p50": _percentile(lat, 50),
            "latency_p95": _percentile(lat, 95),
            "end": self._end_reason,
        }
        if self._explainer is not None:
            ex = self._explainer
            out["explained"] = ex.done
            out["explain_failed"] = ex.failed
            out["explain_skipped"] = ex.skipped
        return out

    @property
    def progress(self) -> dict[str, Any]:
        """Cheap live figures for a display: frames, windows, alerts, dropped, corrupt, frames/s,
        the last score and latency, and what the reader is doing."""
        r = self._reader
        elapsed = (time.perf_counter() - self._started) if self._running and self._started else self._elapsed
        last = self._last
        return {"frames": self._frames, "windows": self._windows, "alerts": self._alerts.count,
                "alert_on": self._alerts.open is not None,
                "dropped": r.stats.dropped if r else 0, "corrupt": r.stats.corrupt if r else 0,
                "fps": self._frames / elapsed if elapsed > 0 else None,
                "score": None if last is None else last.score,
                "class": None if last is None else last.class_name,
                "latency": None if last is None else last.latency,
                "reader": None if r is None else r.state}
