"""Explaining alerts in the background: one worker thread, a bounded queue, its own model copy.

Detection never waits for an explanation: when the queue is full the alert is logged as not
explained (``"skipped": "busy"``). The worker explains the alert's window with Grad-CAM (or
another method) on a private copy of the model, since explanation methods put hooks on the model
that must not see the detector's own forward passes, then writes the overlay video, contact sheet
and JSON into the alert's folder and logs an ``explanation`` event naming the files.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .events import EventLog
from .worker import Worker


@dataclass
class Job:
    alert: int
    frames: np.ndarray             # uint8 [T, H, W, 3]
    clip: torch.Tensor             # preprocessed [T, 3, S, S]
    times: list[float]
    indices: list[int]
    target: int
    score: float
    class_name: str | None
    regions: list[Any] | None = None    # each frame's square (motion crop); None: the model's fixed crop


class ExplainWorker(Worker):
    """Explains alerts' windows in the background and logs an ``explanation`` event for each."""

    name = "xvad-explain"

    def __init__(self, model: Any, out_dir: str | os.PathLike, events: EventLog, fps: float,
                 source: str, method: str = "gradcam", maxsize: int = 2) -> None:
        self.model = copy.deepcopy(model).eval()
        self.out_dir = os.fspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self.events = events
        self.fps = float(fps)
        self.source = source
        self.method = method
        self.done = 0
        self.failed = 0
        self.skipped = 0
        self.seconds: list[float] = []
        super().__init__(maxsize)

    def submit(self, job: Job) -> bool:
        """Queue ``job`` without waiting; False (and a logged skip) when the worker is busy."""
        if super().submit(job):
            return True
        self.skipped += 1
        self.events.write("explanation", alert=job.alert, skipped="busy: the explanation worker "
                          "is still on earlier alerts", frames=[job.indices[0], job.indices[-1]])
        return False

    def _folder(self, alert: int) -> str:
        base = os.path.join(self.out_dir, f"alert_{alert:04d}")
        path, k = base, 2
        while os.path.exists(path):
            path, k = f"{base}_{k}", k + 1
        return path

    def handle(self, job: Job) -> None:
        started = time.perf_counter()
        folder = self._folder(job.alert)
        try:
            from ..explain import explain  # imported late: the detector works without it
            from ..render import write_explanation_outputs
            from ..render.place import Placement

            expl = explain(self.model, job.clip, method=self.method, target=job.target)
            h, w = job.frames.shape[1:3]      # whole frames: each map goes where the model looked in its frame
            places = [Placement.of(self.model.config, h, w, r) for r in (job.regions or [None] * len(job.frames))]
            files = write_explanation_outputs(
                folder, job.frames, {self.method: expl}, fps=self.fps, timestamps=job.times, places=places,
                source={"source": self.source, "alert": job.alert, "frames": [job.indices[0], job.indices[-1]],
                        "times": [job.times[0], job.times[-1]]})
        except Exception as exc:   # an explanation failing must not stop detection
            self.failed += 1
            msg = " ".join(str(exc).split())[:300] or type(exc).__name__
            self.events.write("explanation", alert=job.alert, error=f"{type(exc).__name__}: {msg}")
            return
        seconds = time.perf_counter() - started
        self.seconds.append(seconds)
        self.done += 1
        self.events.write("explanation", alert=job.alert, dir=os.path.abspath(folder),
                          files={k: os.path.abspath(v) for k, v in files.items()},
                          method=self.method, score=float(getattr(expl, "score", job.score)),
                          **{"class": job.class_name}, frames=[job.indices[0], job.indices[-1]],
                          times=[job.times[0], job.times[-1]], seconds=round(seconds, 3))
