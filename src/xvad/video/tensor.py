"""Frames to model tensors: resize and crop (centre, full or letterbox) and normalise, one rule for
training, files and streams."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CROPS = ("center", "full", "pad", "motion")   # motion: each frame's own square (:mod:`.crop`), cut before


def preprocess(frames: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
               crop: str = "center") -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> normalised float32 [T, 3, size, size] for the model (images of
    several streams, [T, H, W, 3k], give [T, 3k, size, size]).

    ``crop``: "center" resizes the shorter side to ``size`` and centre-crops; "full" squeezes the whole
    frame to size x size; "pad" fits the longer side and letterboxes with the mean colour (0 after
    normalisation); "motion" takes images already cut to their squares (:mod:`.crop`) and, like "full",
    resizes them to size x size. Resizing is antialiased bilinear.
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, not {crop!r}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, not {size!r}")
    size = int(size)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] % 3 or frames.shape[-1] == 0 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T, H, W, 3] (or 3 per stream), "
                         f"got {frames.dtype} {list(frames.shape)}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need one value per RGB channel")
    c = frames.shape[-1]   # several streams: 3 channels each, normalised alike
    mean_t = torch.tensor([float(m) for m in mean] * (c // 3), dtype=torch.float32).view(1, c, 1, 1)
    std_t = torch.tensor([float(s) for s in std] * (c // 3), dtype=torch.float32).view(1, c, 1, 1)
    out = torch.empty(len(frames), c, size, size, dtype=torch.float32)
    for i, frame in enumerate(frames):   # one frame at a time: full-size float copies stay small
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0).float()
        out[i] = _fit(x, size, crop, mean_t, std_t)[0]
    return out



def preprocess_as(frames: np.ndarray, config: dict) -> torch.Tensor:
    """:func:`preprocess` with the size, normalisation and crop a model's ``config`` records."""
    return preprocess(frames, int(config["size"]), config["mean"], config["std"], crop=config.get("crop", "center"))


def fit(height: int, width: int, size: int, crop: str = "center") -> tuple[int, int, int, int]:
    """Where the model's ``size`` x ``size`` input lies in a ``height`` x ``width`` frame under ``crop``:
    ``(nh, nw, top, left)``, the frame resized to ``nh`` x ``nw`` and the input square's top-left corner
    at ``(top, left)`` of the resized frame (negative: the square reaches past the frame, padded)."""
    if crop in ("full", "motion"):      # motion: the image is its frame's square, cut before
        return size, size, 0, 0
    if crop == "center":
        scale = size / min(height, width)
        nh, nw = (size, max(size, round(width * scale))) if height <= width else \
            (max(size, round(height * scale)), size)
        return nh, nw, (nh - size) // 2, (nw - size) // 2
    scale = size / max(height, width)   # "pad": fit inside, then letterbox
    nh, nw = (max(1, round(height * scale)), size) if height <= width else (size, max(1, round(width * scale)))
    return nh, nw, -((size - nh) // 2), -((size - nw) // 2)


def _fit(x: torch.Tensor, size: int, crop: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One float [1, 3, H, W] frame (0..255) -> normalised [1, 3, size, size] by the ``crop`` rule."""
    nh, nw, top, left = fit(x.shape[-2], x.shape[-1], size, crop)
    if crop in ("full", "motion"):
        return (_resize(x, size, size) / 255 - mean) / std
    if crop == "center":
        x = _resize(x, nh, nw)[..., top: top + size, left: left + size]
        return (x / 255 - mean) / std
    x = (_resize(x, nh, nw) / 255 - mean) / std   # letterbox with zeros (= the mean colour)
    return F.pad(x, (-left, size - nw + left, -top, size - nh + top))


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
