"""Real-time detection on a stream: every frame through the backbone once, windows from a ring buffer.

A reader thread decodes and samples the source (:mod:`.source`). The detector takes the frames
that have arrived (up to ``batch`` at a time), runs the backbone on them in one call and keeps each
frame's feature vector in a ring buffer of the last ``window`` frames. Every ``stride`` frames the
buffered features go through the GRU and head (``model.classify``), which is cheap: the naive
alternative re-runs the backbone over each overlapping window, ``window / stride`` times the work.

The window score is the softmax probability of the alert class (binary models: class 1) or, for
multi-class models, of the most likely non-normal class (class 0 is "normal"), whose name is
reported. An :class:`~.policy.AlertPolicy` (k of the last n windows over the threshold) turns
scores into alerts; events go to a JSON-lines file (:mod:`.events`); alerts can be explained in
the background (:mod:`.explainer`) and the frames written to an annotated video (:mod:`.annotate`).
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from .. import __version__
from ..video import VideoError, model_images, needs_partner, preprocess
from .annotate import AnnotatedVideo, FrameInfo
from .errors import StreamError
from .events import EventLog
from .policy import AlertPolicy, parse_alert
from .source import Disconnect, End, Frame, FrameQueue, Gap, Reader, Reconnect, parse_source

DEFAULT_FPS = 8.0


@dataclass
class WindowResult:
    """The score of one window, which ends at frame ``frame_index`` (source time ``time``, seconds).

    ``latency``: seconds from the window's last frame being decoded to its score. ``event`` is
    "start" or "end" when this window started or ended an alert (``alert_id`` names it).
    """

    frame_index: int
    time: float
    score: float
    class_name: str | None
    alert_on: bool
    latency: float
    start_frame: int = 0
    start_time: float = 0.0
    class_index: int = 1
    event: str | None = None
    alert_id: int | None = None


@dataclass
class _Entry:
    index: int
    time: float
    feature: torch.Tensor
    arrival: float
    image: np.ndarray | None
    tensor: torch.Tensor | None


@dataclass
class _Alert:
    id: int
    start_time: float
    start_frame: int
    class_name: str | None
    class_index: int
    peak: float
    peak_class: str | None
    windows: int = 1


def window_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, C]`` logits -> (score ``[B]``, class index ``[B]``): p(class 1) for two classes, else the
    most likely class other than 0 (normal) and its probability."""
    p = logits.float().softmax(-1)
    if p.shape[-1] == 2:
        return p[:, 1], torch.ones(p.shape[0], dtype=torch.long)
    score, idx = p[:, 1:].max(-1)
    return score, idx + 1


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
    ``log_windows``: an events line per window too. ``source_options``: FFmpeg options for
    opening the source (e.g. ``{"rtsp_transport": "udp"}``).
    """

    def __init__(self, model: Any, fps: float | None = None, window: int | None = None, stride: int = 2,
                 threshold: float = 0.5, alert: str | tuple[int, int] = "3/5", batch: int = 8,
                 events: str | os.PathLike | None = None, explain_dir: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, live: bool | None = None, *,
                 log_windows: bool = False, precision: str | None = None, realtime: bool = False,
                 reconnect: tuple[float, float] | None = (0.5, 10.0), give_up_after: float = 300.0,
                 timeout: float = 10.0, queue_size: int | None = None, explain_method: str = "gradcam",
                 source_options: dict[str, str] | None = None) -> None:
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
        self.events_path = None if events is None else os.fspath(events)
        self.explain_dir = None if explain_dir is None else os.fspath(explain_dir)
        self.out = None if out is None else os.fspath(out)
        if self.out is not None and not self.out.lower().endswith((".mp4", ".m4v", ".mov")):
            raise StreamError(f"{self.out}: the annotated video is an MP4; name it *.mp4")
        self.live = live
        self.log_windows = log_windows
        self.realtime = realtime
        if precision is not None:
            try:
                model.set_precision(precision)
            except ValueError as exc:
                raise StreamError(str(exc)) from None
        if reconnect is None:
            self.reconnect = Reconnect(enabled=False)
        else:
            self.reconnect = Reconnect(float(reconnect[0]), float(reconnect[1]), float(give_up_after))
        self.timeout = float(timeout)
        self.queue_size = queue_size
        self.explain_method = explain_method
        self.source_options = dict(source_options or {})
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

    def run(self, source: Any) -> Iterator[WindowResult]:
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
        size, mean, std, crop = int(cfg["size"]), cfg["mean"], cfg["std"], cfg.get("crop", "center")

        def transform(image: np.ndarray, partner: np.ndarray | None) -> torch.Tensor:
            return preprocess(model_images(image, partner, cfg)[None], size, mean, std, crop)[0]

        # live: a short queue, so that when processing falls behind the wait stays short (the
        # oldest frames are dropped); a file: room for two batches, so the backbone never waits
        qsize = self.queue_size or (max(2, self.batch // 4) if live else 2 * self.batch)
        reader = Reader(spec, self.fps, transform, FrameQueue(qsize), live=live,
                        keep_images=self.out is not None or self.explain_dir is not None,
                        realtime=self.realtime, reconnect=self.reconnect, timeout=self.timeout,
                        pairs=needs_partner(cfg))
        reader.open()                                  # fails here, before any output exists
        try:
            events = EventLog(self.events_path, self.checkpoint)
        except OSError as exc:
            reader.stop()
            raise StreamError(f"{self.events_path}: cannot write the events file "
                              f"({exc.strerror or exc})") from None
        return self._run(spec, reader, live, events)

    # -- the loop -----------------------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self._running = False
        self._frames = 0
        self._windows = 0
        self._alerts = 0
        self._gaps = 0
        self._latencies: deque[float] = deque(maxlen=10000)
        self._started = None
        self._elapsed = 0.0
        self._reader: Reader | None = None
        self._last: WindowResult | None = None
        self._alert: _Alert | None = None
        self._end_reason: str | None = None
        self._explainer = None
        self._shown: tuple[float, str | None, bool] | None = None   # what the video shows
        self._shown_alerts = 0

    def _run(self, spec: Any, reader: Reader, live: bool, events: EventLog) -> Iterator[WindowResult]:
        self._running = True
        self._live = live
        self._device = next(self.model.parameters()).device
        self._reader = reader
        self.source = spec.name
        model = self.model.eval()
        policy = AlertPolicy(self.threshold, self.k, self.n)
        ring: deque[_Entry] = deque(maxlen=self.window)
        self._since = 0                            # frames in the ring's segment
        video = None
        error: BaseException | None = None
        try:
            try:
                if self.out is not None:
                    video = AnnotatedVideo(self.out, self.fps, self.threshold)
                if self.explain_dir is not None:
                    from .explainer import ExplainWorker
                    self._explainer = ExplainWorker(model, self.explain_dir, events, self.fps, spec.name,
                                                    self.explain_method)
            except OSError as exc:
                raise StreamError(f"{exc.filename or self.out or self.explain_dir}: cannot write there "
                                  f"({exc.strerror or exc})") from None
            events.write("start", source=spec.name, kind=spec.kind, live=live, realtime=self.realtime,
                         fps=self.fps, source_fps=reader.source_fps, window=self.window, stride=self.stride,
                         threshold=self.threshold, alert=f"{self.k}/{self.n}", batch=self.batch,
                         classes=self.classes, precision=model.precision,
                         checkpoint_path=getattr(model, "checkpoint_path", None),
                         xvad_version=__version__, pid=os.getpid())
            self._started = time.perf_counter()
            threads = torch.get_num_threads()
            reader.start()
            first = True
            while True:
                batch, marker = self._take(reader)
                if first and batch:
                    first = False
                    if torch.get_num_threads() != threads:   # a torch whose thread setting is global
                        torch.set_num_threads(threads)
                if batch:
                    yield from self._process(batch, ring, policy, video, events)
                if marker is None:
                    if self._stop.is_set():
                        self._end_reason = self._stop_reason or "stopped"
                        break
                    continue
                if isinstance(marker, Disconnect):
                    self._close_alert(events, "disconnect", None)
                    self._shown = None
                    policy.reset()
                    ring.clear()
                    self._since = 0
                    events.write("disconnect", time=marker.time, reason=marker.reason)
                elif isinstance(marker, Gap):
                    self._gaps += 1
                    events.write("gap", began=marker.began, ended=marker.ended,
                                 seconds=round(marker.seconds, 3), attempts=marker.attempts,
                                 reconnected=marker.reconnected, reason=marker.reason)
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
            self._finish(reader, events, video, error)

    def _take(self, reader: Reader) -> tuple[list[Frame], Any]:
        """Up to ``batch`` frames (live: those that have arrived, after waiting for the first), and
        the marker that ended the batch, if any."""
        q = reader.queue
        first = None
        while first is None:
            if self._stop.is_set():
                return [], None
            first = q.get(timeout=0.1)
        if not isinstance(first, Frame):
            return [], first
        batch = [first]
        while len(batch) < self.batch:
            # live: whatever has arrived (waiting adds latency); a file: full batches, which the
            # backbone runs most efficiently, unless the file ends or the run is stopped
            item = q.get_nowait() if self._live else q.get(timeout=0.1)
            if item is None:
                if self._live or self._stop.is_set():
                    break
                continue
            if not isinstance(item, Frame):
                return batch, item
            batch.append(item)
        return batch, None

    def _process(self, batch: list[Frame], ring: deque, policy: AlertPolicy, video: AnnotatedVideo | None,
                 events: EventLog) -> list[WindowResult]:
        model = self.model
        x = torch.stack([f.tensor for f in batch]).to(self._device)
        keep_tensor = self._explainer is not None
        with torch.inference_mode():
            feats = model.frame_features(x)
        pending: list[tuple[int, list[_Entry]]] = []     # (position in batch, window entries)
        for i, (f, feat) in enumerate(zip(batch, feats)):
            ring.append(_Entry(f.index, f.time, feat, f.arrival, f.image, f.tensor if keep_tensor else None))
            self._since += 1
            if self._since >= self.window and (self._since - self.window) % self.stride == 0:
                pending.append((i, list(ring)))
        self._frames += len(batch)
        results: list[WindowResult] = []
        if pending:
            with torch.inference_mode():
                logits = model.classify(torch.stack([torch.stack([e.feature for e in w]) for _, w in pending]))
            scores, classes = window_scores(logits)
            done = time.perf_counter()
            for (pos, entries), score, cls in zip(pending, scores.tolist(), classes.tolist()):
                results.append(self._decide(entries, float(score), int(cls), done, policy, events))
        if video is not None:
            k = 0
            for i, f in enumerate(batch):
                while k < len(pending) and pending[k][0] == i:
                    r = results[k]
                    video.add_score(r.score, r.alert_on)
                    self._shown = (r.score, r.class_name, r.alert_on)
                    if r.event == "start":
                        self._shown_alerts = r.alert_id or self._shown_alerts
                    k += 1
                if f.image is not None:
                    score, name, on = self._shown or (None, None, False)
                    video.write(f.image, FrameInfo(f.index, f.time, score, name, on, self._shown_alerts))
        return results

    def _decide(self, entries: list[_Entry], score: float, cls: int, done: float, policy: AlertPolicy,
                events: EventLog) -> WindowResult:
        last = entries[-1]
        name = self.classes[cls] if cls < len(self.classes) else f"class_{cls}"
        change = policy.update(score)
        latency = done - last.arrival
        self._windows += 1
        self._latencies.append(latency)
        result = WindowResult(last.index, last.time, score, name, policy.on, latency, entries[0].index,
                              entries[0].time, cls)
        if change == "start":
            self._alerts += 1
            self._alert = _Alert(self._alerts, last.time, last.index, name, cls, score, name)
            result.event, result.alert_id = "start", self._alerts
            events.write("alert_start", alert=self._alerts, time=last.time, frame=last.index,
                         window_frames=[entries[0].index, last.index],
                         window_times=[entries[0].time, last.time], score=score, **{"class": name},
                         class_index=cls, passes=f"{policy.count}/{self.n}", threshold=self.threshold)
            if self._explainer is not None:
                self._submit_explanation(entries, cls, score, name)
        elif self._alert is not None:
            a = self._alert
            result.alert_id = a.id
            if change == "end":
                result.event = "end"
                self._close_alert(events, "scores", result)
            else:
                a.windows += 1
                if score > a.peak:
                    a.peak, a.peak_class = score, name
        if self.log_windows:
            events.write("window", frame=last.index, time=last.time, start_frame=entries[0].index,
                         start_time=entries[0].time, score=round(score, 6), **{"class": name},
                         alert=policy.on, latency=round(latency, 4))
        self._last = result
        return result

    def _submit_explanation(self, entries: list[_Entry], cls: int, score: float, name: str | None) -> None:
        from .explainer import Job

        if any(e.image is None or e.tensor is None for e in entries):
            return
        job = Job(self._alerts, np.stack([e.image for e in entries]), torch.stack([e.tensor for e in entries]),
                  [e.time for e in entries], [e.index for e in entries], cls, score, name)
        self._explainer.submit(job)

    def _close_alert(self, events: EventLog, reason: str, result: WindowResult | None) -> None:
        a, self._alert = self._alert, None
        if a is None:
            return
        end_time = result.time if result is not None else (self._last.time if self._last else a.start_time)
        end_frame = result.frame_index if result is not None else (self._last.frame_index if self._last
                                                                   else a.start_frame)
        events.write("alert_end", alert=a.id, time=end_time, frame=end_frame, started=a.start_time,
                     start_frame=a.start_frame, duration=round(end_time - a.start_time, 3),
                     peak_score=a.peak, peak_class=a.peak_class, **{"class": a.class_name},
                     windows=a.windows, reason=reason,
                     score=None if result is None else result.score)

    def _finish(self, reader: Reader, events: EventLog | None, video: AnnotatedVideo | None,
                error: BaseException | None) -> None:
        reader.stop()
        if self._started is not None:
            self._elapsed = time.perf_counter() - self._started
        problems: list[str] = []
        if events is not None and self._alert is not None:
            self._close_alert(events, self._end_reason or "stopped", None)
        out_path = None
        if video is not None:
            try:
                out_path = video.close()
            except Exception as exc:   # keep going: the events must still be closed
                problems.append(f"annotated video: {exc}")
        if self._explainer is not None:
            self._explainer.close()
        self._running = False
        self._summary = self._make_summary()
        if out_path:
            self._summary["out"] = out_path
        if events is not None:
            fields = {k: v for k, v in self._summary.items() if k != "source"}
            if error is not None:
                fields["error"] = " ".join(str(error).split())[:300] or type(error).__name__
            events.write("stop", source=self.source, reason=self._end_reason or "end", **fields)
            events.close()

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
            "alerts": self._alerts,
            "alert_on": self._alert is not None,
            "dropped": stats.dropped if stats else 0,
            "corrupt": stats.corrupt if stats else 0,
            "decoded": stats.decoded if stats else 0,
            "gaps": self._gaps,
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
        return {"frames": self._frames, "windows": self._windows, "alerts": self._alerts,
                "alert_on": self._alert is not None,
                "dropped": r.stats.dropped if r else 0, "corrupt": r.stats.corrupt if r else 0,
                "fps": self._frames / elapsed if elapsed > 0 else None,
                "score": None if last is None else last.score,
                "class": None if last is None else last.class_name,
                "latency": None if last is None else last.latency,
                "reader": None if r is None else r.state}
