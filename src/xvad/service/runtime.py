"""The service's engine: every camera read in its own thread, one inference thread for all of them.

The inference thread takes the frames that have arrived from every camera (round robin, at most a
share of the batch each, never waiting on one camera), runs the backbone on all of them in one call
per model, then each camera's due windows through the head in one call, and turns the scores into
alerts. An alert's start is committed to the database before anything else happens; its clip is
recorded from the decoded frames and explained in the background (:mod:`.media`); notifications go
through the outbox (:mod:`.notify`). A camera that stalls only stops sending frames; the others go on.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..errors import VideoError
from ..stream.inference import FrameFeature, Scorer
from . import audit
from .camera import CameraRun
from .media import ClipRecorder, ReportJob, ReportWorker, free_mb
from .retention import prune_audit, sweep

log = logging.getLogger(__name__)
SWEEP_EVERY = 3600.0              # seconds between retention sweeps
POLL_EVERY = 2.0                  # seconds between looks at the cameras' enabled flags in the database
RETRY_OPEN = (2.0, 60.0)          # seconds between attempts to open a camera that will not open: first, most


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

class OpenAlert:
    """An alert being recorded: its uid and id, its clip recorder (None: no media), its recorded peak."""

    def __init__(self, uid: str, alert_id: int, recorder: ClipRecorder | None, peak: float) -> None:
        self.uid, self.id, self.recorder, self.peak = uid, alert_id, recorder, peak


class Service:
    """Runs ``settings.cameras`` (or the ones named in ``only``) against ``db``.

    ``models``: a loader ``path or None -> model`` (default :func:`xvad.load_model`), called once per
    distinct model. ``notify``: called as ``notify(event, payload)`` for alert starts and ends and
    camera state changes (the outbox); it must not block.
    """

    def __init__(self, settings: Any, db: Any, *, only: Sequence[str] | None = None, models: Any = None,
                 notify: Any = None, batch: int = 16) -> None:
        from ..checkpoint import load_model

        self.settings = settings
        self.db = db
        self.notify = notify or (lambda event, payload: None)
        self.batch = int(batch)
        self.media_root = os.path.join(str(settings.data), "media")
        load = models or load_model
        chosen = [c for c in settings.cameras if only is None or c.name in only]
        unknown = set(only or []) - {c.name for c in settings.cameras}
        if unknown:
            from ..errors import ConfigError
            raise ConfigError(f"--cameras: no camera named {', '.join(sorted(unknown))} in the configuration")
        self.scorers: dict[str | None, Scorer] = {}                 # one per distinct model
        self.cameras: dict[str, CameraRun] = {}
        self._model_of: dict[str, str | None] = {}
        for c in chosen:
            key = self._model_of[c.name] = None if c.model is None else str(c.model)
            if key not in self.scorers:
                self.scorers[key] = Scorer(load(key))
            self.cameras[c.name] = CameraRun(c, self.scorers[key].model)
        self.open: dict[str, OpenAlert] = {}
        self.finishing: list[tuple[CameraRun, OpenAlert]] = []     # clips still in their post-roll
        self.reports = ReportWorker(self._report_done)
        self.media_paused = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._retry: dict[str, tuple[float, float]] = {}             # camera -> (next attempt, delay)
        self._wanted: dict[str, bool] = {c.name: bool(c.enabled) for c in chosen}
        self._seen: dict[str, bool] = {}                               # the enabled flags last read
        self._thread: threading.Thread | None = None
        self.host, self.pid = socket.gethostname(), os.getpid()

    # -- life ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Close what a crash left open, register the cameras, open them and start inference."""
        names = list(self.cameras)
        closed = self.db.close_interrupted(names, audit=audit.alert_hook(self.db, "alert.ended",
                                                                         {"reason": "interrupted"}))
        if closed:
            log.warning("closed %d alert(s) left open by an earlier run as interrupted", closed)
        for name in names:        # clips a killed run was still writing: their records say "missing"
            for part in glob.glob(os.path.join(self.media_root, glob.escape(name), "*", "*.part")):
                os.remove(part)
        for name, cam in self.cameras.items():
            s = cam.settings
            self.db.upsert_camera(name, s.source, s.purpose or "", s.model_dump(mode="json"))
        enabled = {c["name"]: c.get("enabled", True) for c in self.db.cameras()}   # an overseer's stop holds
        for name, cam in self.cameras.items():
            self._wanted[name] = self._seen[name] = self._wanted[name] and enabled.get(name, True)
            if self._wanted[name]:
                self._open_camera(cam)
            else:                               # stopped here or in the configuration: a start is a change
                self.db.set_camera_enabled(name, False)
                self.db.set_camera_state(name, "stopped")
        self._thread = threading.Thread(target=self._main, name="xvad-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain and stop: close open alerts (reason "shutdown"), finish clips, explanations and readers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for cam in self.cameras.values():
            self._close_alert(cam, "shutdown")
            cam.stop()
            self.db.set_camera_state(cam.name, "stopped")
        for cam, alert in self.finishing:
            self._finish_clip(cam, alert)
        self.finishing.clear()
        self.reports.close(timeout)

    def stop_camera(self, name: str) -> None:
        """The overseer's stop button for one camera: its open alert is closed, its reader stopped."""
        cam = self._halt(name)
        self.db.set_camera_enabled(name, False)    # the stop holds across restarts, until a start
        if cam is not None:
            self._release(cam)

    def _halt(self, name: str) -> CameraRun | None:
        """Under the lock, quick: close the camera's alert and clips, take no more of its frames."""
        with self._lock:
            cam = self.cameras[name]
            if not self._wanted[name] and cam.state in ("stopping", "stopped"):
                return None
            self._wanted[name] = False
            self._close_alert(cam, "camera stopped")
            for item in [x for x in self.finishing if x[0] is cam]:    # clips in their post-roll end here
                self.finishing.remove(item)
                self._finish_clip(cam, item[1])
            cam.state = "stopping"
        return cam

    def _release(self, cam: CameraRun) -> None:
        """Stop the halted camera's reader, outside the lock (it may take seconds): the others go on."""
        cam.stop()
        self.db.set_camera_state(cam.name, "stopped")
        self.notify("camera", {"camera": cam.name, "state": "stopped"})

    def start_camera(self, name: str) -> None:
        cam = self.cameras[name]
        self.db.set_camera_enabled(name, True)
        with self._lock:
            self._wanted[name] = True
            if cam.state in ("running", "reconnecting", "opening"):
                return
            self._open_camera(self._fresh(name))

    def _fresh(self, name: str) -> CameraRun:
        """A new run of camera ``name`` (a reader is started once), in place of the old one."""
        old = self.cameras[name]
        cam = self.cameras[name] = CameraRun(old.settings, old.model)
        return cam

    def _open_camera(self, cam: CameraRun) -> None:
        """Open the camera in a thread of its own: a source that takes long to answer (a network
        timeout) must not hold up inference for the other cameras."""
        cam.state = "opening"
        threading.Thread(target=self._open_now, args=(cam,), name=f"xvad-open-{cam.name}", daemon=True).start()

    def _open_now(self, cam: CameraRun) -> None:
        try:
            cam.start()
            if not self._wanted.get(cam.name) or self.cameras.get(cam.name) is not cam:
                cam.stop()                      # stopped (or replaced) while it was opening
                return
        except VideoError as exc:
            delay = self._retry.get(cam.name, (0.0, RETRY_OPEN[0]))[1]
            self._retry[cam.name] = (time.monotonic() + delay, min(delay * 2, RETRY_OPEN[1]))
            log.warning("%s: cannot open the camera (%s); retrying in %.0f s", cam.name, exc, delay)
            self.db.set_camera_state(cam.name, "offline")
            self.notify("camera", {"camera": cam.name, "state": "offline", "error": str(exc)})
            return
        self._retry.pop(cam.name, None)
        self.db.set_camera_state(cam.name, "running")
        self.notify("camera", {"camera": cam.name, "state": "online"})

    # -- the inference thread ----------------------------------------------------------------------------
    def _main(self) -> None:
        next_sweep = next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_sweep:           # retention, once an hour
                next_sweep = now + SWEEP_EVERY
                self._sweep()
            if now >= next_poll:            # stop and start asked through the database (another process)
                next_poll = now + POLL_EVERY
                self._follow_database()
                self._check_disk()
            with self._lock:
                busy = self.step()
            if not busy:
                self._stop.wait(0.005)

    def _sweep(self) -> None:
        try:
            sweep(self.db, [c.settings for c in self.cameras.values()], self.media_root)
            prune_audit(self.db, self.settings.audit_retention_days)
        except Exception as exc:            # retention failing must not stop detection
            log.warning("retention sweep failed: %s", exc)

    def _check_disk(self) -> None:
        """Media writing pauses while the disk is nearly full (the metrics say so) and resumes after."""
        paused = free_mb(self.media_root) < self.settings.disk_min_free_mb
        if paused != self.media_paused:
            log.warning("media writing %s", "paused: the disk is nearly full" if paused else "resumes")
        self.media_paused = paused

    def _follow_database(self) -> None:
        try:
            wanted = {c["name"]: c.get("enabled", True) for c in self.db.cameras()}
        except Exception as exc:
            log.warning("cannot read the cameras' state: %s", exc)
            return
        for name, enabled in wanted.items():   # a change of the flag counts, not a difference (ours race it)
            if name not in self.cameras or enabled == self._seen.get(name, enabled):
                continue
            self._seen[name] = enabled
            if enabled != self._wanted.get(name):
                if enabled:
                    self.start_camera(name)
                elif (cam := self._halt(name)) is not None:    # the reader stops in a thread of its own
                    threading.Thread(target=self._release, args=(cam,), daemon=True).start()

    def step(self) -> bool:
        """One round over every camera; False when no camera had anything."""
        self._reopen_due()
        share = max(1, self.batch // max(1, len(self.cameras)))
        taken: dict[str | None, list[tuple[CameraRun, Any]]] = {}
        markers: list[tuple[CameraRun, Any]] = []   # handled after the frames that came before them
        for name, cam in self.cameras.items():
            if cam.state not in ("running", "reconnecting"):
                continue
            frames, found = cam.take(share)
            for f in frames:
                taken.setdefault(self._model_of[name], []).append((cam, f))
            markers += [(cam, m) for m in found]
        for key, items in taken.items():
            scorer = self.scorers[key]
            feats = scorer.features([f.tensor for _, f in items])      # every camera's frames, one call
            due: list[tuple[CameraRun, list[FrameFeature]]] = []
            for (cam, f), feat in zip(items, feats):
                window = cam.push(f, feat)
                if window is not None:
                    due.append((cam, window))
            done = time.perf_counter()
            for (cam, window), s in zip(due, scorer.score([w for _, w in due])):
                change = cam.decide(window, s.score, s.class_index, s.class_name, done)
                if change == "start":
                    self._alert_started(cam, window)
                elif change == "end":
                    self._close_alert(cam, "scores", end_time=window[-1].time)
                elif cam.tracker.open is not None and cam.name in self.open:
                    a, rec = cam.tracker.open, self.open[cam.name]
                    if a.peak > rec.peak:       # a commit when the record changes, not every window
                        rec.peak = a.peak
                        self.db.alert_updated(rec.uid, peak_score=a.peak, windows=a.windows)
            for cam, f in items:       # after the decisions, so an alert started in this batch gets them
                self._record(cam, f)
        for cam, m in markers:         # after the frames that came before them (a source's end, a loss, a gap)
            self._marker(cam, m)
        return bool(taken or markers)

    def _reopen_due(self) -> None:
        now = time.monotonic()
        for name, (when, delay) in list(self._retry.items()):
            if now >= when and self._wanted.get(name):
                self._retry[name] = (math.inf, delay)         # until this attempt has failed or worked
                self._open_camera(self._fresh(name))
        for name, cam in self.cameras.items():   # a reader that gave up: open it again later
            if cam.ended and cam.state == "offline" and self._wanted.get(name) and name not in self._retry:
                self._retry[name] = (now + RETRY_OPEN[0], RETRY_OPEN[0] * 2)

    def _marker(self, cam: CameraRun, item: Any) -> None:
        what = cam.marker(item)
        if what == "disconnect" or what == "end":
            self._close_alert(cam, "disconnect" if what == "disconnect" else "source ended")
            self.db.set_camera_state(cam.name, "offline" if cam.state != "ended" else "stopped")
            self.notify("camera", {"camera": cam.name, "state": "offline"})
        elif what == "back":
            self.db.set_camera_state(cam.name, "running")
            self.notify("camera", {"camera": cam.name, "state": "online"})

    # -- alerts -----------------------------------------------------------------------------------------
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
        alert_id = self.db.alert_started(
            uid=uid, camera=cam.name, started_at=utcnow(), start_time=window[-1].time, score=a.score,
            class_name=a.class_name, class_index=a.class_index, checkpoint_id=getattr(model, "checkpoint_id", None),
            xvad_version=__version__, threshold=cam.threshold, policy=f"{cam.k}/{cam.n}", window=cam.window,
            stride=s.stride, fps=cam.fps,
            media_dir=None if recorder is None else os.path.relpath(folder, self.media_root),
            host=self.host, pid=self.pid, audit=audit.alert_hook(self.db, "alert.raised", {
                "camera": cam.name, "score": a.score, "class_name": a.class_name, "threshold": cam.threshold,
                "checkpoint_id": getattr(model, "checkpoint_id", None)}))
        if recorder is None:
            self.db.media_state(uid, "skipped")
            log.warning("%s: disk nearly full: alert %d recorded without media", cam.name, alert_id)
        self.open[cam.name] = OpenAlert(uid, alert_id, recorder, a.score)
        cam.log.info("%s: alert %d starts at %.2f s (score %.3f)", cam.name, alert_id, window[-1].time, a.score)
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
                self._finish_clip(cam, rec)

    def _record(self, cam: CameraRun, frame: Any) -> None:
        """Give the frame to the camera's clips: the open alert's, and those in their post-roll."""
        if frame.image is None:
            return
        rec = self.open.get(cam.name)
        if rec is not None and rec.recorder is not None and rec.recorder.add(frame.time, frame.image):
            self._finish_clip(cam, rec)        # the longest clip: the alert goes on without more video
            rec.recorder = None
        for item in [x for x in self.finishing if x[0] is cam]:
            if item[1].recorder is not None and item[1].recorder.add(frame.time, frame.image):
                self.finishing.remove(item)
                self._finish_clip(cam, item[1])

    def _finish_clip(self, cam: CameraRun, rec: OpenAlert) -> None:
        recorder = rec.recorder
        if recorder is None:
            return
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
        job = ReportJob(rec.uid, cam.name, path, recorder.folder, cam.model, cam.threshold, s.alert, s.stride,
                        cam.fps)
        if self.reports.submit(job):
            self.db.explanation_state(rec.uid, "pending")
        else:
            self.db.explanation_state(rec.uid, "skipped", error="the explanation worker is busy")

    def _report_done(self, uid: str, state: str, files: dict[str, str], error: str | None) -> None:
        self.db.explanation_state(uid, state, error=error)
        if files:
            self.db.media_state(uid, "complete", files=files)

    # -- figures ---------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        return [cam.snapshot() for cam in self.cameras.values()]
