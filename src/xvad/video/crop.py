"""Where in each frame a model looks: the region of the frame its square input shows, for the fixed
crops (centre, full, pad) and the motion-guided crop.

A wide or large frame shrunk whole to a 192 px input makes a far fight a few pixels of the backbone's
7x7 feature map, and a centre crop drops the sides of a 16:9 frame. The motion-guided crop
(``crop="motion"``) gives each frame the smallest square, from the model's input size (nothing is ever
enlarged) up to the frame's short side, whose best placement holds two thirds of what moved in the
frame's last ``MOTION_HISTORY`` sampled frames, itself included; a frame with no motion in that history
gets the centre crop. The rule only looks back, so a stream chooses each frame's square once, when the
frame arrives, and a file chooses the same squares from its first frame on.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from .tensor import fit

MOTION_LEVEL = 8        # grey levels: a pixel moved when it changes by more than this to its partner
MOTION_SHARE = 2 / 3    # the square holds this share of the recent motion ...
MOTION_HISTORY = 16     # ... of this many sampled frames (a window of the shipped model)
LADDER = 6              # square sides tried, geometric from the input size to the short side
GRID = 240              # motion is counted on cells of about max(height, width) / GRID pixels
# recorded in feature caches and checkpoints' fingerprints: change the rule, change this
MOTION_CROP_RULE = f"grey>{MOTION_LEVEL},{MOTION_SHARE:.3f} of {MOTION_HISTORY} frames,{LADDER} sides,grid {GRID},v2"


@dataclass(frozen=True)
class Region:
    """The part of a frame that a model's square input shows: ``height`` x ``width`` frame pixels from
    ``(top, left)`` (negative, or past the frame's edge: the letterbox of the "pad" crop)."""

    top: int
    left: int
    height: int
    width: int

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The region of ``image`` ``[H, W, C]`` (it must lie inside the frame)."""
        return image[self.top:self.top + self.height, self.left:self.left + self.width]


def fixed_region(height: int, width: int, size: int, crop: str) -> Region:
    """The region a fixed crop ("center", "full", "pad") shows of a ``height`` x ``width`` frame."""
    nh, nw, top, left = fit(height, width, size, crop)
    sy, sx = height / nh, width / nw
    return Region(round(top * sy), round(left * sx), round(size * sy), round(size * sx))


def moving_cells(frame: np.ndarray, partner: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """How many of each cell's pixels change their grey level by more than ``MOTION_LEVEL`` from
    ``frame`` to ``partner`` (uint8 RGB ``[H, W, 3]``), as 0..255 of the cell: uint8 ``shape`` (rows,
    columns), each cell ``H / rows`` x ``W / columns`` pixels (OpenCV's area averaging)."""
    a = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(np.ascontiguousarray(partner), cv2.COLOR_RGB2GRAY)
    _, moved = cv2.threshold(cv2.absdiff(a, b), MOTION_LEVEL, 255, cv2.THRESH_BINARY)
    return cv2.resize(moved, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """The cells motion is counted on in a ``height`` x ``width`` frame: about ``max(height, width) /
    GRID`` pixels each way (rows, columns)."""
    step = max(1, -(-max(height, width) // GRID))
    return max(1, height // step), max(1, width // step)


def best_square(energy: np.ndarray, rows: int, cols: int | None = None,
                integral: np.ndarray | None = None) -> tuple[int, int, float]:
    """The ``rows`` x ``cols`` (default: square) block of ``energy`` holding the most of it: ``(top, left,
    sum)``; ``integral``: ``energy``'s integral image, if already made."""
    cols = rows if cols is None else cols
    ii = cv2.integral(energy, sdepth=cv2.CV_64F) if integral is None else integral
    sums = ii[rows:, cols:] - ii[:-rows, cols:] - ii[rows:, :-cols] + ii[:-rows, :-cols]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left), float(sums[top, left])


def _centred(energy: np.ndarray, top: int, left: int, rows: int, cols: int) -> tuple[float, float]:
    """The centre of what moved inside the block at ``(top, left)``, in cells (pixel-centre convention:
    cell ``i`` spans ``[i, i + 1)``)."""
    inside = energy[top:top + rows, left:left + cols]
    total = float(inside.sum())
    if total <= 0:
        return top + rows / 2, left + cols / 2
    r, c = inside.sum(1), inside.sum(0)
    return (top + float(r @ (np.arange(len(r)) + 0.5)) / total,
            left + float(c @ (np.arange(len(c)) + 0.5)) / total)


def square_sides(height: int, width: int, size: int) -> list[int]:
    """The sides tried, smallest first: ``LADDER`` steps from ``size`` (or the short side, if smaller)
    up to the short side."""
    short = min(height, width)
    low = min(int(size), short)
    return sorted({int(round(low * (short / low) ** (k / (LADDER - 1)))) for k in range(LADDER)})


def motion_square(energy: np.ndarray, height: int, width: int, size: int,
                  share: float = MOTION_SHARE) -> Region:
    """The smallest square (:func:`square_sides`) whose best placement holds ``share`` of ``energy`` (how
    much moved in each cell of a grid over the ``height`` x ``width`` frame), centred on what moved
    inside it, in pixels of the frame; no motion: the centre square of the short side."""
    short = min(height, width)
    total = float(energy.sum())
    if total <= 0:
        return Region((height - short) // 2, (width - short) // 2, short, short)
    gh, gw = energy.shape
    cy, cx = height / gh, width / gw                  # pixels a cell
    ii = cv2.integral(energy, sdepth=cv2.CV_64F)
    sides = square_sides(height, width, size)
    for side in sides:
        rows, cols = max(1, min(gh, round(side / cy))), max(1, min(gw, round(side / cx)))
        top, left, held = best_square(energy, rows, cols, ii)
        if held >= share * total or side == sides[-1]:
            mid_y, mid_x = _centred(energy, top, left, rows, cols)
            y = min(max(int(round(mid_y * cy - side / 2)), 0), height - side)
            x = min(max(int(round(mid_x * cx - side / 2)), 0), width - side)
            return Region(y, x, side, side)
    raise AssertionError("unreachable: the last side always returns")


class MotionCrop:
    """Each frame's square (:class:`Region`) from the motion of its last ``history`` frames, fed in
    order with :meth:`push`; the state of one stream or one clip (a new frame size starts it over, and
    :meth:`reset` does, after a gap in a stream)."""

    def __init__(self, size: int, history: int = MOTION_HISTORY, share: float = MOTION_SHARE) -> None:
        self.size, self.history, self.share = int(size), int(history), float(share)
        self._cells: deque[np.ndarray] = deque()
        self._energy: np.ndarray | None = None        # int32: the sum of the cells in the history, exact
        self._shape: tuple[int, int] | None = None

    def reset(self) -> None:
        self._cells.clear()
        self._energy, self._shape = None, None

    def push(self, frame: np.ndarray, partner: np.ndarray | None) -> Region:
        """The square for ``frame`` given its partner (None, or another size: no motion counted)."""
        h, w = frame.shape[:2]
        if self._shape != (h, w):
            self.reset()
            self._shape = (h, w)
        shape = grid_shape(h, w)
        if self._energy is None:
            self._energy = np.zeros(shape, np.int32)
        if partner is None or partner.shape != frame.shape:
            cells = np.zeros(shape, np.uint8)
        else:
            cells = moving_cells(frame, partner, shape)
        self._cells.append(cells)
        self._energy += cells
        if len(self._cells) > self.history:
            self._energy -= self._cells.popleft()
        return motion_square(self._energy.astype(np.float32), h, w, self.size, self.share)


def input_regions(frames: np.ndarray, partners: np.ndarray | None, config: dict) -> list[Region]:
    """The region each of a clip's frames ``[T, H, W, 3]`` shows to a model with ``config``: its own
    square for the motion crop (:func:`motion_regions`), else the fixed crop's, the same for every frame
    (none without a ``size``)."""
    if config.get("size") is None:        # no model input size given: no crop to place
        return []
    size, crop = int(config["size"]), config.get("crop", "center")
    if crop == "motion":
        return motion_regions(frames, partners, size)
    h, w = np.asarray(frames).shape[-3:-1]
    return [fixed_region(h, w, size, crop)] * len(frames)


def mirrored(region: Region, width: int) -> Region:
    """``region`` of a frame ``width`` pixels wide, in the frame mirrored left to right."""
    return Region(region.top, width - region.left - region.width, region.height, region.width)


def motion_regions(frames: np.ndarray, partners: np.ndarray | None, size: int) -> list[Region]:
    """The motion-guided squares of a clip's frames ``[T, H, W, 3]`` in order, from its first frame (what
    a stream starting there would choose)."""
    crop = MotionCrop(size)
    return [crop.push(f, None if partners is None else p)
            for f, p in zip(frames, partners if partners is not None else [None] * len(frames))]
