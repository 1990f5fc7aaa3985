"""Inference on streams, with no reader and no outputs: one backbone call over frames of any number of
cameras, each camera's ring buffer of frame features, and window scores from the GRU or pooled head.

Each sampled frame goes through the backbone once; its feature waits in a :class:`WindowBuffer` of the
last ``window`` frames, and every ``stride`` frames the buffered features go through the head
(``model.classify``), which is cheap: the naive alternative re-runs the backbone over each overlapping
window, ``window / stride`` times the work. A service that watches many cameras keeps one buffer per
camera and one :class:`Scorer` for all of them.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import StreamError
from ..models.crnn import images_per_call
from ..video import frame_tensor
from ..video.crop import MotionCrop, Region
from ..video.images import is_still, still_image_exact


@dataclass
class FrameFeature:
    """One sampled frame in a camera's buffer: its number and time, its backbone feature, when it
    arrived, and (when outputs need them) its picture, its model input and the part of the picture that
    input shows (the motion crop's square; None: the model's fixed crop)."""

    index: int
    time: float
    feature: torch.Tensor
    arrival: float
    image: np.ndarray | None = None
    tensor: torch.Tensor | None = None
    region: Region | None = None


@dataclass
class WindowScore:
    """The head's verdict on one window: the alert score, the class it is for and that class's name."""

    score: float
    class_index: int
    class_name: str


def window_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, C]`` logits -> (score ``[B]``, class index ``[B]``): p(class 1) for two classes, else the
    most likely class other than 0 (normal) and its probability."""
    p = logits.float().softmax(-1)
    if p.shape[-1] == 2:
        return p[:, 1], torch.ones(p.shape[0], dtype=torch.long)
    score, idx = p[:, 1:].max(-1)
    return score, idx + 1


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


class WindowBuffer:
    """One camera's last ``window`` frame features; :meth:`push` returns the window's frames each time
    one is due (``window`` frames in, then every ``stride`` frames)."""

    def __init__(self, window: int, stride: int) -> None:
        for name, value in (("window", window), ("stride", stride)):
            if value < 1:
                raise StreamError(f"{name} must be at least 1, not {value}")
        self.window, self.stride = int(window), int(stride)
        self._ring: deque[FrameFeature] = deque(maxlen=self.window)
        self._since = 0                   # frames since the buffer was last cleared

    def push(self, frame: FrameFeature) -> list[FrameFeature] | None:
        self._ring.append(frame)
        self._since += 1
        if self._since >= self.window and (self._since - self.window) % self.stride == 0:
            return list(self._ring)
        return None

    def clear(self) -> None:
        """Forget the buffered frames (after a gap: a window never spans one)."""
        self._ring.clear()
        self._since = 0


class FrameInput:
    """A frame (and its motion partner) -> the model input tensor, in the reader's thread; one per
    stream, since a motion-crop model chooses each frame's square from the stream's last frames
    (:class:`~xvad.video.crop.MotionCrop`, as a file's frames are from its first). With ``skip_still``
    (motion and flow models only), a frame in which nothing moves gives None: its backbone feature is
    that of an empty image, which :class:`Scorer` computes once."""

    def __init__(self, config: dict, skip_still: bool = False) -> None:
        self.config = config
        self.skip_still = skip_still and still_image_exact(config)
        self.crop = MotionCrop(int(config["size"])) if config.get("crop") == "motion" else None
        self.region: Region | None = None        # the last frame's square (motion crop)

    def reset(self) -> None:
        """A new segment of the stream (after a gap, a reconnection, a file played again): its squares
        are chosen from its own frames, as a clip's are from its first."""
        if self.crop is not None:
            self.crop.reset()

    def __call__(self, image: np.ndarray, partner: np.ndarray | None) -> torch.Tensor | None:
        if self.crop is not None:
            self.region = self.crop.push(image, partner)
        if self.skip_still and is_still(image, partner):
            return None
        return frame_tensor(image, partner, self.config, self.region)


class Scorer:
    """The shared model: backbone features for a batch of frame tensors, and scores for windows."""

    def __init__(self, model: Any, classes: Sequence[str] | None = None) -> None:
        self.model = model.eval()
        cfg = getattr(model, "config", {}) or {}
        self.classes = list(classes or getattr(model, "classes", None) or cfg.get("classes") or ["normal", "alert"])
        self.device = next(model.parameters()).device
        self._still: torch.Tensor | None = None
        self.skipped = 0                     # still frames that did not go through the backbone

    def still_feature(self) -> torch.Tensor:
        """The backbone feature of a frame in which nothing moves (an empty motion / flow image)."""
        if self._still is None:
            empty = np.full((64, 64, 3), 128, np.uint8)
            whole = Region(0, 0, 64, 64) if self.model.config.get("crop") == "motion" else None
            with torch.inference_mode():
                x = frame_tensor(empty, empty, self.model.config, whole)[None].to(self.device)
                self._still = self.model.frame_features(x)[0]
        return self._still

    def warm_up(self, batch: int) -> None:
        """Backbone features of blank frames at every call shape that batches of 1 to ``batch`` frames
        make (:func:`xvad.models.crnn.images_per_call`): the first call at a shape is slow."""
        streams, size = self.model.streams, int(self.model.config["size"])
        per_call = images_per_call(size, size)
        blank = torch.zeros(3 * streams, size, size, device=self.device)
        with torch.inference_mode():
            for n in range(1, min(batch, -(-per_call // streams)) + 1):
                self.model.frame_features(blank.expand(n, -1, -1, -1).contiguous())

    def features(self, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """``[B, D]`` backbone features of B frame tensors (from one camera or many) in one call;
        a None (a still frame, see :class:`FrameInput`) gets :meth:`still_feature`."""
        moving = [i for i, t in enumerate(tensors) if t is not None]
        batch = [t for t in tensors if t is not None]
        if len(batch) == len(tensors):
            with torch.inference_mode():
                return self.model.frame_features(torch.stack(batch).to(self.device))
        out = self.still_feature().expand(len(tensors), -1).clone()
        if batch:
            with torch.inference_mode():
                out[moving] = self.model.frame_features(torch.stack(batch).to(self.device)).to(out.dtype)
        self.skipped += len(tensors) - len(batch)
        return out

    def score(self, windows: Sequence[Sequence[FrameFeature]]) -> list[WindowScore]:
        """One score per window of buffered features, all windows in one head call."""
        if not windows:
            return []
        with torch.inference_mode():
            logits = self.model.classify(torch.stack([torch.stack([f.feature for f in w]) for w in windows]))
        scores, classes = window_scores(logits)
        return [WindowScore(float(s), int(c), self.name(int(c))) for s, c in zip(scores.tolist(), classes.tolist())]

    def name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else f"class_{index}"
