"""An alert's media: its clip (pre-roll to post-roll, from the decoded frames) and, in a background
worker, its explanation: the decision report (what ``xvad report`` shows, on that clip) and the
console's overlay files (:mod:`.overlay`).

Files go to ``DATA/media/<camera>/<alert uid>/`` and are each written atomically; the database
record says whether they are complete, missing (the process died while writing, or a write failed:
no space left) or skipped (the disk was nearly full, or the worker was busy).
"""
from __future__ import annotations

import copy
import logging
import os
import queue
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..render import VideoWriter
from ..stream import priority
from ..stream.priority import lower_this_thread
from ..stream.worker import Worker

log = logging.getLogger(__name__)

CLIP = "clip.mp4"
MAX_CLIP = 120.0           # seconds: a clip ends here even if its alert goes on
ENCODE_QUEUE = 32          # frames waiting for a clip's encoder (beyond its pre-roll) before detection waits
# x264 at "ultrafast" on one thread per clip. With 8 cameras all in alert on 2 cores, x264's defaults
# ("medium", a thread pool per clip) left detection 30-odd of the 64 frames/s due, "veryfast" on one
# thread about 50 and "ultrafast" 62 to 64 (side-by-side runs of bench/bench_serve.py's service
# runner on its 8 busy cameras, the preset switched by hand); its files are about twice as big as
# veryfast's at the same quality (crf 18)
CLIP_PRESET = "ultrafast"
REPORT = "report.html"


def free_mb(folder: str) -> float:
    """Free space on the file system that holds ``folder``, in MiB (0 if the folder cannot be made)."""
    try:
        os.makedirs(folder, exist_ok=True)
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return 0.0


class ClipRecorder:
    """Writes one alert's clip: the pre-roll frames, every frame while the alert is on, then
    ``post_roll`` seconds more. :meth:`add` returns True once the clip is finished.

    Frames are encoded in a thread of the clip's own, so that detection (which calls :meth:`add`)
    does not wait for the encoder; :meth:`close` waits for the frames still queued."""

    def __init__(self, folder: str, fps: float, pre: Iterable[tuple[float, np.ndarray]], post_roll: float,
                 longest: float = MAX_CLIP) -> None:
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.path = os.path.join(folder, CLIP)
        self.post_roll = float(post_roll)
        self.longest = float(longest)
        self.until: float | None = None        # source time at which the clip ends (set when the alert ends)
        self.first: float | None = None
        self.last: float | None = None
        self.frames = 0                        # frames given to the encoder
        self.written = 0                       # frames it wrote
        self.error: str | None = None          # why the clip was given up (a write failed: the disk is full)
        self._writer = VideoWriter(self.path, fps, preset=CLIP_PRESET, threads=1)
        pre = list(pre)                        # held by the camera's recent frames already: no copy
        self._queue: queue.Queue = queue.Queue(len(pre) + ENCODE_QUEUE)
        self._closed = False
        self._thread = threading.Thread(target=self._encode, name="xvad-clip", daemon=True)
        self._thread.start()
        for t, image in pre:
            self._write(t, image)

    def _write(self, t: float, image: np.ndarray) -> None:
        if self._closed or self.error is not None or (self.last is not None and t <= self.last):
            return
        if not self._put((t, image)):          # waits only when the encoder is far behind
            return
        self.first = t if self.first is None else self.first
        self.last = t
        self.frames += 1

    def _put(self, item: tuple[float, np.ndarray] | None) -> bool:
        """Queue ``item`` for the encoder, waiting while it is busy; False if the encoder is gone."""
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _encode(self) -> None:
        """The encoder thread: writes queued frames until the end marker (None)."""
        lower_this_thread(priority.READER)     # like the readers: behind the shared inference thread
        while (item := self._queue.get()) is not None:
            t, image = item
            if self.error is not None:
                continue
            try:
                self._writer.write(image)
            except ValueError as exc:          # the camera changed its frame size: keep the clip as it is
                log.debug("%s: frame at %.2f s not written: %s", self.path, t, exc)
                continue
            except Exception as exc:           # no space left, a failing disk or encoder: no clip, no part file
                log.warning("%s: clip given up: %s", self.path, exc)
                self.error = str(exc) or type(exc).__name__
                self._writer.discard()
                continue
            self.written += 1

    def _drain(self) -> None:
        self._closed = True
        self._put(None)
        self._thread.join()

    def add(self, t: float, image: np.ndarray) -> bool:
        if self.error is not None:
            return True
        if self.until is not None and t > self.until:
            return True
        if self.first is not None and t - self.first >= self.longest:   # a long alert: its clip ends here
            return True
        self._write(t, image)
        return self.until is not None and t >= self.until

    def alert_ended(self, end_time: float) -> None:
        self.until = end_time + self.post_roll

    def close(self) -> str | None:
        """Finish the file (renamed into place) once the queued frames are written; None if it has no
        frame or was given up."""
        self._drain()
        if self.written == 0 or self.error is not None:
            self._writer.discard()
            return None
        return self._writer.close()

    def discard(self) -> None:
        self._drain()
        self._writer.discard()


@dataclass
class ReportJob:
    uid: str
    camera: str
    clip: str
    folder: str
    model: Any
    threshold: float
    alert: str
    stride: int
    fps: float


class ClipFinisher(Worker):
    """Finishes alert clips in a thread of its own, in order, never refusing one (its queue has no
    bound): waiting for a clip's encoder, closing its file and recording it took the inference thread
    up to 50 ms a clip, and cameras whose alerts end together finish their clips together (8 of them
    dropped frames)."""

    name = "xvad-clip-finish"

    def __init__(self, finish: Any) -> None:
        self._finish = finish
        super().__init__(maxsize=0)

    def submit(self, *job: Any) -> bool:
        """``finish(*job)`` in the finisher's thread, after the jobs before it."""
        return super().submit(job)

    def handle(self, job: tuple) -> None:
        try:
            self._finish(*job)
        except Exception:                      # one clip failing must not stop the others
            log.exception("finishing an alert clip failed")


class ReportWorker(Worker):
    """Explains finished clips in the background (Grad-CAM in fp32, key frames, frame importance,
    each stream's vote): writes the decision report and, beside it, the console's overlay files
    (:mod:`.overlay`); a full queue refuses the job, and the caller records the explanation as skipped.
    When the overlay fails after the report was written, the explanation is failed and the report kept."""

    name = "xvad-report"

    def __init__(self, on_done: Any, maxsize: int = 4) -> None:
        self.on_done = on_done            # on_done(uid, state, files, error)
        self._models: dict[int, Any] = {}
        super().__init__(maxsize)

    def _model(self, model: Any) -> Any:
        """A private copy per model: explanation hooks must not see the detector's forward passes."""
        key = id(model)
        if key not in self._models:
            self._models[key] = copy.deepcopy(model).eval()
        return self._models[key]

    def handle(self, job: ReportJob) -> None:
        files: dict[str, str] = {}
        try:
            from ..report import write_report
            from .overlay import write_overlay

            model = self._model(job.model)
            out = os.path.join(job.folder, REPORT)
            summary = write_report(model, job.clip, out, threshold=job.threshold, alert=job.alert,
                                   stride=job.stride, fps=job.fps, map_precision="fp32")
            files["report"] = REPORT
            files |= write_overlay(model, job.clip, job.folder, summary["results"], job.threshold,
                                   views=summary["views"], fps=job.fps)
            self.on_done(job.uid, "complete", files, None)
        except Exception as exc:   # an explanation failing must never stop the service
            log.warning("%s: alert %s: explanation failed: %s", job.camera, job.uid, exc)
            self.on_done(job.uid, "failed", files, " ".join(str(exc).split())[:300] or type(exc).__name__)


def media_path(media_root: str, alert: dict, key: str) -> str | None:
    """The file recorded under ``key`` in ``alert``'s files, if it is inside the media folder and exists."""
    rel = (alert.get("files") or {}).get(key)
    if not rel or not alert.get("media_dir"):
        return None
    path = os.path.realpath(os.path.join(media_root, alert["media_dir"], rel))
    return path if path.startswith(media_root + os.sep) and os.path.isfile(path) else None
