"""Synthetic clips with a planted anomaly whose place and time are known.

Normal clips: a textured background with a few muted shapes drifting smoothly. Anomalous clips:
the same, plus, from an onset frame on, a high-contrast checkered object that jumps around
erratically inside a small region. Each clip records the object's box in every frame and the
onset, so explanations can be checked against ground truth (pointing game, frame importance).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), in pixels


@dataclass
class SyntheticClip:
    frames: np.ndarray              # uint8 [T, H, W, 3]
    label: int                      # 1 = anomaly, 0 = normal
    boxes: list[Box | None] = field(default_factory=list)  # anomalous object's box per frame
    onset: int | None = None        # first anomalous frame

    @property
    def anomalous_frames(self) -> list[int]:
        return [t for t, b in enumerate(self.boxes) if b is not None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour gradient with low-contrast noise texture (a different scene each call)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1, c2 = rng.uniform(40, 170, (3, 3))
    img = c0 + np.multiply.outer(xx, c1 - c0) * 0.6 + np.multiply.outer(yy, c2 - c0) * 0.4
    coarse = rng.normal(0, 12, (size // 8 + 1, size // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:size, :size]
    return np.clip(img + coarse + rng.normal(0, 4, img.shape), 0, 255)


def _draw_disc(img: np.ndarray, cx: float, cy: float, r: float, colour: np.ndarray) -> None:
    size = img.shape[0]
    yy, xx = np.ogrid[0:size, 0:size]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour


def _checker(side: int, phase: int) -> np.ndarray:
    """A side x side black/white checkerboard, inverted on odd phases (so it flickers)."""
    cells = (np.add.outer(np.arange(side) // 2, np.arange(side) // 2) + phase) % 2
    return np.where(cells[..., None] == 1, 245.0, 10.0)


def make_clip(rng: np.random.Generator | int, frames: int = 16, size: int = 64, anomaly: bool = True,
              shapes: int = 3) -> SyntheticClip:
    """One clip; with ``anomaly`` the object appears at a random onset in the first half."""
    rng = np.random.default_rng(rng)
    background = _background(rng, size)
    pos = rng.uniform(0.15 * size, 0.85 * size, (shapes, 2))
    vel = rng.uniform(-1.5, 1.5, (shapes, 2)) * size / 64
    radius = rng.uniform(0.06, 0.12, shapes) * size
    colours = rng.uniform(60, 200, (shapes, 3))
    side = max(4, int(round(size * 0.16)))
    onset = int(rng.integers(1, max(2, frames // 2))) if anomaly else None
    centre = rng.uniform(side + 2, size - 2 * side - 2, 2)  # the region where it jitters
    out = np.empty((frames, size, size, 3), np.uint8)
    boxes: list[Box | None] = []
    for t in range(frames):
        img = background.copy()
        for k in range(shapes):
            p = pos[k] + vel[k] * t
            p = np.abs((p + size) % (2 * size) - size)  # bounce off the edges
            _draw_disc(img, p[0], p[1], radius[k], colours[k])
        box = None
        if onset is not None and t >= onset:
            jump = rng.integers(-side, side + 1, 2)
            x0, y0 = np.clip(centre + jump, 0, size - side).astype(int)
            img[y0:y0 + side, x0:x0 + side] = _checker(side, t)
            box = (int(x0), int(y0), int(x0 + side), int(y0 + side))
        boxes.append(box)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return SyntheticClip(out, int(anomaly), boxes, onset)


def write_video(path: str, frames: np.ndarray, fps: float = 8.0) -> str:
    """Write uint8 RGB frames to an MP4 (H.264, near-lossless), atomically."""
    from .render.outputs import write_video as encode

    return encode(path, frames, fps=fps, crf=12)


def make_dataset(root: str, per_class: int = 40, frames: int = 16, size: int = 64, seed: int = 0,
                 fps: float = 8.0) -> str:
    """Write ``root/normal/*.mp4`` and ``root/alert/*.mp4`` plus ``annotations.json`` and ``groups.csv``.

    Each clip is its own group (clips never share a scene), so group-wise splits are plain splits.
    """
    rng = np.random.default_rng(seed)
    notes: dict[str, dict] = {}
    rows = []
    for label, name in ((0, "normal"), (1, "alert")):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            clip = make_clip(rng, frames, size, anomaly=bool(label))
            rel = f"{name}/{name}_{i:03d}.mp4"
            write_video(os.path.join(root, rel), clip.frames, fps)
            notes[rel] = {"label": name, "onset": clip.onset, "boxes": clip.boxes}
            rows.append((os.path.basename(rel), name, f"{name}_{i:03d}"))
    with open(os.path.join(root, "annotations.json"), "w") as f:
        json.dump({"fps": fps, "frames": frames, "size": size, "clips": notes}, f)
    with open(os.path.join(root, "groups.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip", "label", "group"])
        w.writerows(rows)
    return root
