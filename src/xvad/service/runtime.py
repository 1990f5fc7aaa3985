"""The service's engine: every camera read in its own thread, one inference thread for all of them.

The inference thread takes the frames that have arrived from every camera (round robin, one frame of
each in turn until the batch is full, never waiting on one camera), runs the backbone on all of them
in one call per distinct backbone (:mod:`.sharing`), then the due windows through each model's head in
one call, and turns the scores into alerts (:mod:`.alerting`). An alert's start is committed to the
database before anything else happens; its clip is recorded from the decoded frames and explained in the
background (:mod:`.media`); notifications go through the outbox (:mod:`.notify`). A camera that stalls
only stops sending frames; the others go on. Each camera runs its active model version
(:mod:`.versions`), else its configured model, and follows a change of it within a database poll.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import cv2
import torch

from ..errors import VideoError
from ..stream.inference import FrameFeature
from . import audit
from .alerting import AlertMedia, OpenAlert
from .camera import CameraRun, take_in_turn
from .media import ClipFinisher, ReportWorker
from .retention import prune_audit, sweep
from .sharing import ModelShelf
from .versions import active_versions, version_name

log = logging.getLogger(__name__)
SWEEP_EVERY = 3600.0              # seconds between retention sweeps
POLL_EVERY = 2.0                  # seconds between looks at the cameras' enabled flags and models in the database
RETRY_OPEN = (2.0, 60.0)          # seconds between attempts to open a camera that will not open: first, most


def inference_threads() -> int:
    """The shared inference thread's torch threads by default: half the cores. The cameras' readers
    need the rest, and an OpenMP pool spread over cores that readers hold waits at every barrier for
    its preempted threads (8 cameras on 2 cores dropped fewer frames on one thread than on two)."""
    return max(1, (os.cpu_count() or 2) // 2)


class Service(AlertMedia):
    """Runs ``settings.cameras`` (or the ones named in ``only``) against ``db``.

    ``models``: a loader ``path or None -> model`` (default :func:`xvad.load_model`), called once per
    distinct model file (a configured model or an adopted version). ``notify``: called as
    ``notify(event, payload)`` for alert starts and ends and camera state changes (the outbox); it
    must not block.
    """

    def __init__(self, settings: Any, db: Any, *, only: Sequence[str] | None = None, models: Any = None,
                 notify: Any = None, batch: int = 16) -> None:
        from ..checkpoint import load_model

        self.settings = settings
        self.db = db
        self.notify = notify or (lambda event, payload: None)
        self.batch = int(batch)
        self.threads = int(settings.inference_threads or inference_threads())
        self.media_root = os.path.join(str(settings.data), "media")
        engine = getattr(settings, "engine", "auto")

        def load(path: str | None) -> Any:       # each model file, run by the configured engine
            model = (models or load_model)(path)
            return model.set_engine(engine) if hasattr(model, "set_engine") else model

        chosen = [c for c in settings.cameras if only is None or c.name in only]
        unknown = set(only or []) - {c.name for c in settings.cameras}
        if unknown:
            from ..errors import ConfigError
            raise ConfigError(f"--cameras: no camera named {', '.join(sorted(unknown))} in the configuration")
        self.shelf = ModelShelf(load)                       # each model file once, each backbone once
        self.scorers = self.shelf.heads                     # model file -> its scorer (the console's model card)
        self.cameras: dict[str, CameraRun] = {}
        self._version: dict[str, int] = {}                  # the version each camera runs (0: its configured model)
        self._asked: dict[str, int] = {}                    # the version last asked for (loaded, loading or failed)
        self._backbone: dict[str, str] = {}                 # the backbone key of each camera's model
        active = active_versions(db, [c.name for c in chosen])
        for c in chosen:
            model, version = self._first_model(c, active.get(c.name))
            self.cameras[c.name] = CameraRun(c, model, version_name(version))
            self._version[c.name], self._asked[c.name] = version, active.get(c.name, {}).get("version", 0)
            self._backbone[c.name] = self.shelf.key(model)
        self.open: dict[str, OpenAlert] = {}
        self.finishing: list[tuple[CameraRun, OpenAlert]] = []     # clips still in their post-roll
        self.reports = ReportWorker(self._report_done)
        self.finisher = ClipFinisher(self._finish_clip)
        self.media_paused = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._retry: dict[str, tuple[float, float]] = {}             # camera -> (next attempt, delay)
        self._wanted: dict[str, bool] = {c.name: bool(c.enabled) for c in chosen}
        self._seen: dict[str, bool] = {}                               # the enabled flags last read
        self._thread: threading.Thread | None = None
        self.host, self.pid = socket.gethostname(), os.getpid()

    # -- models --------------------------------------------------------------------------------------
    def _path(self, settings: Any, row: dict | None) -> str | None:
        """The file of a camera's version ``row`` (in the data folder), or of its configured model."""
        if row is not None:
            return os.path.join(str(self.settings.data), row["path"])
        return None if settings.model is None else str(settings.model)

    def _first_model(self, settings: Any, row: dict | None) -> tuple[Any, int]:
        """The model a camera starts with: its active version, else (or when that will not load) its
        configured model; and the version number (0: configured)."""
        if row is not None:
            try:
                return self.shelf.model(self._path(settings, row)), int(row["version"])
            except Exception as exc:   # noqa: BLE001 - a version file gone or damaged: the camera still runs
                log.warning("%s: model v%d not loaded, running the configured model: %s", settings.name,
                            row["version"], exc)
        return self.shelf.model(self._path(settings, None)), 0

    def _follow_models(self) -> None:
        """A camera whose active version changed in the database (adopted or rolled back, maybe by another
        process) gets its model loaded in a thread of its own, then swapped in (:meth:`_swap`)."""
        try:
            active = active_versions(self.db, list(self.cameras))
        except Exception as exc:
            log.warning("cannot read the cameras' model versions: %s", exc)
            return
        for name in list(self.cameras):
            row = active.get(name)
            version = int(row["version"]) if row is not None else 0
            if version != self._asked[name]:
                self._asked[name] = version
                threading.Thread(target=self._load, args=(name, version, row), name=f"xvad-model-{name}",
                                 daemon=True).start()

    def _load(self, name: str, version: int, row: dict | None) -> None:
        try:
            model = self.shelf.model(self._path(self.cameras[name].settings, row))
        except Exception as exc:   # noqa: BLE001 - the camera keeps the model it runs
            log.warning("%s: model %s not loaded, the camera keeps %s: %s", name, version_name(version) or
                        "configured", version_name(self._version[name]) or "its configured model", exc)
            return
        with self._lock:
            if self._asked.get(name) == version:          # not overtaken by a newer change meanwhile
                self._swap(name, model, version)

    def _swap(self, name: str, model: Any, version: int) -> None:
        """Under the lock: camera ``name`` runs ``model`` from its next window on. On the same backbone
        (an adapted head) the reader, the buffered features and an open alert go on; a model that
        needs other frames or features gets a run of its own (its open alert ends, "model changed")."""
        cam = self.cameras[name]
        log.info("%s: model %s -> %s (checkpoint %s)", name, cam.model_version or "configured",
                 version_name(version) or "configured", getattr(model, "checkpoint_id", None))
        self._version[name] = version
        key = self.shelf.key(model)
        if key == self._backbone[name]:
            cam.use_model(model, version_name(version))
            return
        self._backbone[name] = key
        self._close_alert(cam, "model changed")
        for item in [x for x in self.finishing if x[0] is cam]:
            self.finishing.remove(item)
            self._finish_later(cam, item[1])
        fresh = self.cameras[name] = CameraRun(cam.settings, model, version_name(version))
        threading.Thread(target=cam.stop, name=f"xvad-stop-{name}", daemon=True).start()
        if self._wanted.get(name):     # also when it was offline at the swap: the new run must come up
            self._retry.pop(name, None)
            self._open_camera(fresh)

    # -- life ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Close what a crash left open, register the cameras, open them and start inference."""
        cv2.setNumThreads(1)     # OpenCV's own pool (flow, resizes) off: the cameras are the parallelism
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
        self._warm_up()
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

    def _warm_up(self) -> None:
        """Each backbone at every batch shape, before any camera opens (:meth:`ModelShelf.warm_up`)."""
        self.shelf.warm_up(self.batch, self.threads)

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
            self._finish_later(cam, alert)
        self.finishing.clear()
        self.finisher.close(timeout)
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
                self._finish_later(cam, item[1])
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
        cam = self.cameras[name] = CameraRun(old.settings, old.model, old.model_version)
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
        torch.set_num_threads(self.threads)
        next_sweep = next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_sweep:           # retention, once an hour
                next_sweep = now + SWEEP_EVERY
                self._sweep()
            if now >= next_poll:            # stop, start and models asked through the database (another process)
                next_poll = now + POLL_EVERY
                self._follow_database()
                self._follow_models()
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
        taken, markers = self._gather()
        for key, items in taken.items():
            feats = self.shelf.features(key, [f.tensor for _, f in items])   # every camera's frames, one call
            due: dict[int, list[tuple[CameraRun, list[FrameFeature]]]] = {}    # by model: one head call each
            for (cam, f), feat in zip(items, feats):
                window = cam.push(f, feat)
                if window is not None:
                    due.setdefault(id(cam.model), []).append((cam, window))
            done = time.perf_counter()
            for windows in due.values():
                for (cam, window), s in zip(windows, self.shelf.score(windows[0][0].model, [w for _, w in windows])):
                    self._decide(cam, window, s, done)
            for cam, f in items:       # after the decisions, so an alert started in this batch gets them
                self._record(cam, f)
        for cam, m in markers:         # after the frames that came before them (a source's end, a loss, a gap)
            self._marker(cam, m)
        return bool(taken or markers)

    def _gather(self) -> tuple[dict[str, list[tuple[CameraRun, Any]]], list[tuple[CameraRun, Any]]]:
        """The frames that have arrived (:func:`~.camera.take_in_turn`, up to ``batch``) by backbone
        key, and the markers met, to be handled after the frames that came before them."""
        live = [c for c in self.cameras.values() if c.state in ("running", "reconnecting")]
        frames, markers = take_in_turn(live, self.batch)
        taken: dict[str, list[tuple[CameraRun, Any]]] = {}
        for cam, f in frames:
            taken.setdefault(self._backbone[cam.name], []).append((cam, f))
        return taken, markers

    def _decide(self, cam: CameraRun, window: list[FrameFeature], s: Any, done: float) -> None:
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

    # -- figures ---------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        return [cam.snapshot() for cam in self.cameras.values()]
