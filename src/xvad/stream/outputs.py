"""What a detection run writes: the events file, the annotated video and the alerts' explanations.

:class:`Outputs` takes the run's happenings (windows, alert starts and ends, gaps, frames) and writes
each to the outputs that were asked for; the detector itself never opens a file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import StreamError
from .alerts import Alert
from .annotate import AnnotatedVideo, FrameInfo
from .events import EventLog
from .inference import FrameFeature


@dataclass
class OutputOptions:
    """Where a run writes: ``events`` (JSON lines), ``video`` (annotated MP4), ``explain_dir`` (one
    folder per alert, explained with ``explain_method``), and whether every window gets an events line."""

    events: str | None = None
    video: str | None = None
    explain_dir: str | None = None
    explain_method: str = "gradcam"
    log_windows: bool = False

    def __post_init__(self) -> None:
        if self.video is not None and not self.video.lower().endswith((".mp4", ".m4v", ".mov")):
            raise StreamError(f"{self.video}: the annotated video is an MP4; name it *.mp4")

    @property
    def needs_images(self) -> bool:
        """Whether frames must carry their pictures (for the video or the explanations)."""
        return self.video is not None or self.explain_dir is not None


class Outputs:
    """The open outputs of one run. ``events`` is opened at once (a bad path fails before any frame);
    the video and the explanation worker by :meth:`open`."""

    def __init__(self, options: OutputOptions, checkpoint: str | None) -> None:
        self.options = options
        try:
            self.events = EventLog(options.events, checkpoint)
        except OSError as exc:
            raise StreamError(f"{options.events}: cannot write the events file ({exc.strerror or exc})") from None
        self.video: AnnotatedVideo | None = None
        self.explainer: Any = None
        self._shown: tuple[float, str | None, bool] | None = None   # what the video shows
        self._shown_alert = 0

    def open(self, model: Any, fps: float, threshold: float, source: str) -> None:
        o = self.options
        try:
            if o.video is not None:
                self.video = AnnotatedVideo(o.video, fps, threshold)
            if o.explain_dir is not None:
                from .explainer import ExplainWorker
                self.explainer = ExplainWorker(model, o.explain_dir, self.events, fps, source, o.explain_method)
        except OSError as exc:
            raise StreamError(f"{exc.filename or o.video or o.explain_dir}: cannot write there "
                              f"({exc.strerror or exc})") from None

    # -- what happened ---------------------------------------------------------------------------
    def window(self, frames: list[FrameFeature], score: float, name: str | None, on: bool, latency: float) -> None:
        if self.options.log_windows:
            last = frames[-1]
            self.events.write("window", frame=last.index, time=last.time, start_frame=frames[0].index,
                              start_time=frames[0].time, score=round(score, 6), **{"class": name},
                              alert=on, latency=round(latency, 4))

    def alert_started(self, alert: Alert, frames: list[FrameFeature], passes: str, threshold: float) -> None:
        last = frames[-1]
        self.events.write("alert_start", alert=alert.id, time=last.time, frame=last.index,
                          window_frames=[frames[0].index, last.index], window_times=[frames[0].time, last.time],
                          score=alert.score, **{"class": alert.class_name}, class_index=alert.class_index,
                          passes=passes, threshold=threshold)
        if self.explainer is None:
            return
        images = [f.image for f in frames if f.image is not None]
        tensors = [f.tensor for f in frames if f.tensor is not None]
        if len(images) == len(tensors) == len(frames):   # every frame kept its picture and its input
            from .explainer import Job
            self.explainer.submit(Job(alert.id, np.stack(images), torch.stack(tensors), [f.time for f in frames],
                                      [f.index for f in frames], alert.class_index, alert.score, alert.class_name,
                                      [f.region for f in frames]))

    def alert_ended(self, alert: Alert, reason: str, time: float, frame: int, score: float | None) -> None:
        self.events.write("alert_end", alert=alert.id, time=time, frame=frame, started=alert.start_time,
                          start_frame=alert.start_frame, duration=round(time - alert.start_time, 3),
                          peak_score=alert.peak, peak_class=alert.peak_class, **{"class": alert.class_name},
                          windows=alert.windows, reason=reason, score=score)

    def shown(self, score: float, name: str | None, on: bool, alert_id: int | None, started: bool) -> None:
        """A window score the annotated video shows from now on."""
        if self.video is not None:
            self.video.add_score(score, on)
        self._shown = (score, name, on)
        if started:
            self._shown_alert = alert_id or self._shown_alert

    def frame(self, index: int, time: float, image: np.ndarray | None) -> None:
        if self.video is not None and image is not None:
            score, name, on = self._shown or (None, None, False)
            self.video.write(image, FrameInfo(index, time, score, name, on, self._shown_alert))

    def disconnected(self, time: float | None, reason: str) -> None:
        self._shown = None
        self.events.write("disconnect", time=time, reason=reason)

    def write(self, type_: str, **fields: Any) -> None:
        self.events.write(type_, **fields)

    def close(self) -> tuple[str | None, list[str]]:
        """Finish the video and the explanations; returns the video's path and any problems (the
        events file stays open for the run's last line: :meth:`finish`)."""
        problems: list[str] = []
        out_path = None
        if self.video is not None:
            try:
                out_path = self.video.close()
            except Exception as exc:   # keep going: the events must still be closed
                problems.append(f"annotated video: {exc}")
        if self.explainer is not None:
            self.explainer.close()
        return out_path, problems

    def finish(self, **fields: Any) -> None:
        self.events.write("stop", **fields)
        self.events.close()
