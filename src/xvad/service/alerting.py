"""The service's alerts: an alert's start committed with its audit entry, its clip recorded from the
decoded frames (pre-roll to post-roll), its explanation queued for the background worker, its end.

:class:`AlertMedia` is a part of :class:`~xvad.service.runtime.Service` (which it is mixed into): the
inference thread calls these methods under the service's lock.
"""
from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..stream.inference import FrameFeature
from . import audit
from .camera import CameraRun
from .media import ClipRecorder, ReportJob, free_mb

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class OpenAlert:
    """An alert being recorded: its uid and id, its clip recorder (None: no media), its recorded peak,
    and the model and threshold that raised it (its explanation uses them, even after a swap)."""

    def __init__(self, uid: str, alert_id: int, recorder: ClipRecorder | None, peak: float, model: Any = None,
                 threshold: float = 0.5) -> None:
        self.uid, self.id, self.recorder, self.peak = uid, alert_id, recorder, peak
        self.model, self.threshold = model, threshold


class AlertMedia:
    """Alert starts and ends, clips and explanations (the attributes are the service's)."""

    settings: Any
    db: Any
    notify: Any
    media_root: str
    media_paused: bool
    open: dict[str, OpenAlert]
    finishing: list[tuple[CameraRun, OpenAlert]]
    finisher: Any          # media.ClipFinisher: clips are closed off the inference thread
    reports: Any
    host: str
    pid: int

    def _check_disk(self) -> None:
        """Media writing pauses while the disk is nearly full (the metrics say so) and resumes after."""
        paused = free_mb(self.media_root) < self.settings.disk_min_free_mb
        if paused != self.media_paused:
            log.warning("media writing %s", "paused: the disk is nearly full" if paused else "resumes")
        self.media_paused = paused

    def _alert_started(self, cam: CameraRun, window: list[FrameFeature]) -> None:
        a = cam.tracker.open
        assert a is not None
        s = cam.settings
        uid = uuid.uuid4().hex
        folder = os.path.join(self.media_root, cam.name, uid)
        self._check_disk()
        recorder = None
        if not self.media_paused:
            start = window[-1].time
            try:
                recorder = ClipRecorder(folder, cam.fps, [(t, im) for t, im in cam.recent
                                                          if start - s.pre_roll - 1e-6 <= t < start], s.post_roll)
            except OSError as exc:              # no room even for its folder
                log.warning("%s: alert clip not started: %s", cam.name, exc)
        model = cam.model
        checkpoint_id = getattr(model, "checkpoint_id", None)
        alert_id = self.db.alert_started(
            uid=uid, camera=cam.name, started_at=utcnow(), start_time=window[-1].time, score=a.score,
            class_name=a.class_name, class_index=a.class_index, checkpoint_id=checkpoint_id,
            xvad_version=__version__, threshold=cam.threshold, policy=f"{cam.k}/{cam.n}", window=cam.window,
            stride=s.stride, fps=cam.fps, model_version=cam.model_version,
            media_dir=None if recorder is None else os.path.relpath(folder, self.media_root),
            host=self.host, pid=self.pid, audit=audit.alert_hook(self.db, "alert.raised", {
                "camera": cam.name, "score": a.score, "class_name": a.class_name, "threshold": cam.threshold,
                "checkpoint_id": checkpoint_id, "model_version": cam.model_version}))
        if recorder is None:
            self.db.media_state(uid, "skipped")
            log.warning("%s: disk nearly full: alert %d recorded without media", cam.name, alert_id)
        self.open[cam.name] = OpenAlert(uid, alert_id, recorder, a.score, model, cam.threshold)
        cam.log.info("%s: alert %d starts at %.2f s (score %.3f, model %s)", cam.name, alert_id, window[-1].time,
                     a.score, cam.model_version or "configured")
        self.notify("alert_start", {"id": alert_id, "uid": uid, "camera": cam.name, "score": a.score,
                                    "class": a.class_name, "time": window[-1].time})

    def _close_alert(self, cam: CameraRun, reason: str, end_time: float | None = None) -> None:
        a = cam.tracker.close()
        rec = self.open.pop(cam.name, None)
        if a is None or rec is None:
            return
        t = end_time if end_time is not None else (cam.last.time if cam.last is not None else a.start_time)
        self.db.alert_ended(rec.uid, ended_at=utcnow(), end_time=t, peak_score=a.peak, reason=reason,
                            windows=a.windows, audit=audit.alert_hook(self.db, "alert.ended", {
                                "camera": cam.name, "reason": reason, "peak_score": a.peak}))
        cam.log.info("%s: alert %d ends (%s; peak %.3f)", cam.name, rec.id, reason, a.peak)
        self.notify("alert_end", {"id": rec.id, "uid": rec.uid, "camera": cam.name, "peak_score": a.peak,
                                  "reason": reason, "time": t})
        if rec.recorder is not None:
            if reason == "scores":
                rec.recorder.alert_ended(t)
                self.finishing.append((cam, rec))
            else:                                 # no more frames will come: the clip ends here
                self._finish_later(cam, rec)

    def _record(self, cam: CameraRun, frame: Any) -> None:
        """Give the frame to the camera's clips: the open alert's, and those in their post-roll."""
        if frame.image is None:
            return
        rec = self.open.get(cam.name)
        if rec is not None and rec.recorder is not None and rec.recorder.add(frame.time, frame.image):
            self._finish_later(cam, rec)       # the longest clip: the alert goes on without more video
            rec.recorder = None
        for item in [x for x in self.finishing if x[0] is cam]:
            if item[1].recorder is not None and item[1].recorder.add(frame.time, frame.image):
                self.finishing.remove(item)
                self._finish_later(cam, item[1])

    def _finish_later(self, cam: CameraRun, rec: OpenAlert) -> None:
        """Hand the alert's clip to the finisher (:meth:`_finish_clip` in its thread)."""
        if rec.recorder is not None:
            self.finisher.submit(cam, rec, rec.recorder)

    def _finish_clip(self, cam: CameraRun, rec: OpenAlert, recorder: Any) -> None:
        """Close the clip's file, record it, and queue the alert's report (the finisher's thread)."""
        try:
            path = recorder.close()
        except Exception as exc:                  # a clip failing must not stop the service
            log.warning("%s: alert %d: clip not written: %s", cam.name, rec.id, exc)
            recorder.discard()
            path = None
        if path is None:
            self.db.media_state(rec.uid, "missing")
            return
        self.db.media_state(rec.uid, "complete", files={"clip": os.path.basename(path)})
        if not cam.settings.explain:
            return
        s = cam.settings
        job = ReportJob(rec.uid, cam.name, path, recorder.folder, rec.model or cam.model, rec.threshold, s.alert,
                        s.stride, cam.fps)
        if self.reports.submit(job):
            self.db.explanation_state(rec.uid, "pending")
        else:
            self.db.explanation_state(rec.uid, "skipped", error="the explanation worker is busy")

    def _report_done(self, uid: str, state: str, files: dict[str, str], error: str | None) -> None:
        self.db.explanation_state(uid, state, error=error)
        if files:
            self.db.media_state(uid, "complete", files=files)
