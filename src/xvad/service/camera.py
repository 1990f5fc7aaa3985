"""One camera inside the service: its reader thread, ring buffer of features, alert lifecycle, the
frames kept for the alerts' clips, and the figures the metrics and the API report.

The service's inference thread drives it (:mod:`.runtime`): it takes the camera's frames without
waiting, and after the shared backbone call hands back each frame's feature with :meth:`CameraRun.push`.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import VideoError
from ..stream import priority
from ..stream.alerts import AlertTracker
from ..stream.frames import Disconnect, End, Frame, FrameQueue, Gap
from ..stream.inference import FrameFeature, FrameInput, WindowBuffer
from ..stream.policy import parse_alert
from ..stream.source import Reader, Reconnect
from ..video import needs_partner, parse_source

# a live camera's queue holds this many seconds of frames (at least 4): when the service falls further
# behind, the oldest frames go. A second rides out the bursts when alerts start together (8 cameras, still
# stretches, side by side: 4 frames dropped 56 in 20 s where 8 dropped none) for up to a second of latency
QUEUE_SECONDS = 1.0
RECONNECT = (0.5, 10.0)   # seconds before reopening a lost source: first, at most (it never gives up)
# each camera decoded on one thread: the cameras are the parallelism; FFmpeg's own choice (a few slice
# threads per camera) cost 8 busy cameras another 3 to 4 frames/s (side-by-side runs of
# bench_serve.py's service runner, switched by hand)
DECODE_THREADS = 1


@dataclass
class CameraStats:
    """Counters of one camera since the service started (the metrics read them)."""

    frames: int = 0
    windows: int = 0
    alerts: int = 0
    last_score: float | None = None
    latencies: deque = field(default_factory=lambda: deque(maxlen=2000))
    started: float = field(default_factory=time.monotonic)

    def latency(self, q: float) -> float | None:
        return float(np.percentile(np.asarray(self.latencies), q)) if self.latencies else None


class CameraRun:
    """A camera's state between the reader and the shared model; ``settings`` is its
    :class:`~xvad.service.settings.CameraSettings`; ``version`` names the camera's model version that
    ``model`` is ("v3"; None: its configured model)."""

    def __init__(self, settings: Any, model: Any, version: str | None = None, live: bool | None = None,
                 skip_still: bool = False) -> None:
        self.settings = settings
        self.name: str = settings.name
        self.model = model
        self.model_version = version
        self.log = logging.getLogger(f"xvad.camera.{self.name}")
        self.spec = parse_source(settings.source, dict(settings.source_options or {}))
        cfg = model.config
        self.fps = float(settings.fps or cfg.get("fps") or 8.0)
        self.window = int(settings.window or cfg.get("frames", 16))
        self.k, self.n = parse_alert(settings.alert)
        self.buffer = WindowBuffer(self.window, settings.stride)
        self.threshold = self._threshold(model)
        self.tracker = AlertTracker(self.threshold, self.k, self.n)
        self.live = (self.spec.live or settings.realtime) if live is None else live
        queue = FrameQueue(max(4, math.ceil(QUEUE_SECONDS * self.fps)) if self.live else 16)
        self.reader = Reader(self.spec, self.fps, FrameInput(cfg, skip_still), queue, live=self.live,
                             keep_images=True, realtime=settings.realtime and not self.spec.live,
                             reconnect=Reconnect(*RECONNECT, float("inf")), pairs=needs_partner(cfg),
                             loop=settings.loop, decode_threads=DECODE_THREADS, nice=priority.READER)
        self.reader.log = self.log
        self.stats = CameraStats()
        self.state = "stopped"
        self.error: str | None = None
        self.ended = False
        # the pre-roll, and the frames that came with it in the same batch (the alert's start is decided after)
        self.recent: deque[tuple[float, np.ndarray]] = deque(maxlen=round(settings.pre_roll * self.fps) + 64)
        self.last: FrameFeature | None = None

    def _threshold(self, model: Any) -> float:
        """The camera's configured threshold if set, else the model's own (its checkpoint's), else 0.5."""
        if self.settings.threshold is not None:
            return float(self.settings.threshold)
        return float((getattr(model, "extra", None) or {}).get("threshold", 0.5))

    def use_model(self, model: Any, version: str | None) -> None:
        """Score the next windows with ``model`` (same input and backbone as the one it replaces: the
        reader and the buffered features stay); an open alert goes on, judged against the new threshold."""
        self.model, self.model_version = model, version
        self.threshold = self.tracker.policy.threshold = self._threshold(model)

    # -- life --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the source (a bad one raises `VideoError`) and start reading."""
        try:
            self.reader.open()
        except VideoError as exc:
            self.state, self.error = "offline", str(exc)
            raise
        self.reader.start()
        self.state, self.error, self.ended = "running", None, False
        self.log.info("%s: camera started (%s)", self.name, self.spec.kind)

    def stop(self) -> None:
        self.reader.stop()
        self.state = "stopped"
        self.log.info("%s: camera stopped", self.name)

    # -- frames in -----------------------------------------------------------------------------------
    def take(self, most: int) -> tuple[list[Frame], list[Any]]:
        """Up to ``most`` frames that have arrived, without waiting, up to and with the first marker (a
        loss, a gap, the end): the frames after a marker come in the next take."""
        frames: list[Frame] = []
        markers: list[Any] = []
        while len(frames) < most:
            item = self.reader.queue.get_nowait()
            if item is None:
                break
            if isinstance(item, Frame):
                frames.append(item)
            else:
                markers.append(item)
                break
        return frames, markers

    def marker(self, item: Any) -> str | None:
        """Note a reader marker; returns "disconnect", "back" or "end" for the runtime to act on."""
        if isinstance(item, Disconnect):
            self.buffer.clear()
            self.tracker.reset()
            self.state = "reconnecting"
            self.log.warning("%s: source lost (%s); reconnecting", self.name, item.reason)
            return "disconnect"
        if isinstance(item, Gap):
            self.state = "running" if item.reconnected else "offline"
            self.log.info("%s: gap of %.1f s", self.name, item.seconds)
            return "back" if item.reconnected else None
        if isinstance(item, End):
            self.ended = True
            self.state = "offline" if item.error is not None or self.spec.live else "ended"
            self.error = None if item.error is None else str(item.error)
            self.log.info("%s: source ended (%s)", self.name, item.reason)
            return "end"
        return None

    def push(self, frame: Frame, feature: Any) -> list[FrameFeature] | None:
        """The frame's backbone feature into the ring buffer; returns a window when one is due."""
        entry = FrameFeature(frame.index, frame.time, feature, frame.arrival, frame.image, None)
        self.stats.frames += 1
        if frame.image is not None:
            self.recent.append((frame.time, frame.image))
        self.last = entry
        return self.buffer.push(entry)

    def decide(self, frames: list[FrameFeature], score: float, class_index: int, name: str,
               done: float) -> str | None:
        """The window's score into the alert lifecycle: "start", "end" or None."""
        last = frames[-1]
        self.stats.windows += 1
        self.stats.last_score = score
        self.stats.latencies.append(done - last.arrival)
        change = self.tracker.update(score, class_index, name, last.time, last.index)
        if change == "start":
            self.stats.alerts += 1
        return change

    @property
    def dropped(self) -> int:
        return self.reader.stats.dropped

    @property
    def queue_depth(self) -> int:
        return len(self.reader.queue)

    def snapshot(self) -> dict[str, Any]:
        """The live state the API shows."""
        s = self.stats
        seconds = max(1e-9, time.monotonic() - s.started)
        return {"name": self.name, "state": self.state, "error": self.error, "source_kind": self.spec.kind,
                "fps": self.fps, "frames": s.frames, "frames_per_second": s.frames / seconds,
                "dropped": self.dropped, "windows": s.windows, "alerts": s.alerts, "alert_on": self.tracker.on,
                "last_score": s.last_score, "latency_p50": s.latency(50), "latency_p95": s.latency(95),
                "queue_depth": self.queue_depth, "purpose": self.settings.purpose,
                "model_version": self.model_version, "checkpoint_id": getattr(self.model, "checkpoint_id", None),
                "threshold": self.threshold}


def take_in_turn(cameras: list[Any], most: int) -> tuple[list[tuple[Any, Frame]], list[tuple[Any, Any]]]:
    """Up to ``most`` frames that have arrived, one of each camera in turn: a camera behind by a few
    frames catches up in the room the others leave (a fixed share each would hold it to its share even
    when the others have nothing). A camera's marker ends its turns; the markers come back apart.
    ``cameras``: :class:`CameraRun` objects, or anything with their ``take``."""
    frames: list[tuple[Any, Frame]] = []
    markers: list[tuple[Any, Any]] = []
    turn = list(cameras)
    while turn and len(frames) < most:
        again = []
        for cam in turn:
            if len(frames) == most:
                break
            got, found = cam.take(1)
            frames += [(cam, f) for f in got]
            markers += [(cam, m) for m in found]
            if got and not found:
                again.append(cam)
        turn = again
    return frames, markers
