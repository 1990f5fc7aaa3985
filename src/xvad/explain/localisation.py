"""Does an explanation point at the right place? Metrics against known boxes.

``maps`` are ``[T, H, W]`` (one clip) or ``[N, T, H, W]`` (several clips) arrays; ``boxes`` hold one
``(x0, y0, x1, y1)`` box (pixels, exclusive ends) or None per frame, nested per clip for several
clips, as :mod:`xvad.synthetic` records them. Frames without a box are skipped.

``min_peak`` restricts a metric to the frames the explanation itself marks as relevant: frames
whose map peak is below ``min_peak`` times the clip's peak are skipped. A recurrent model often
decides from a few frames, and per-frame Grad-CAM on a frame that barely counted is a faint map
whose maximum is noise; ``min_peak=0.1`` asks "where does it point, where it points at all?".
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]


def _is_box(b: Any) -> bool:
    return b is None or (len(b) == 4 and all(isinstance(v, (int, float, np.integer, np.floating)) for v in b))


def _pairs(maps: Any, boxes: Sequence[Any], min_peak: float = 0.0) -> Iterator[tuple[np.ndarray, Box]]:
    """(frame map, box) for every frame that has a box (and a peak of at least ``min_peak`` x the clip's)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 3:
        maps, boxes = maps[None], [boxes]
    if maps.ndim != 4:
        raise ValueError(f"maps must be [T, H, W] or [N, T, H, W], got {list(maps.shape)}")
    if len(boxes) != maps.shape[0]:
        raise ValueError(f"{len(boxes)} box lists for {maps.shape[0]} clips")
    for clip_maps, clip_boxes in zip(maps, boxes):
        if len(clip_boxes) != clip_maps.shape[0]:
            raise ValueError(f"{len(clip_boxes)} boxes for {clip_maps.shape[0]} frames")
        floor = min_peak * clip_maps.max() if min_peak > 0 else -np.inf
        for frame, box in zip(clip_maps, clip_boxes):
            if box is not None and frame.max() >= floor:
                x0, y0, x1, y1 = (int(v) for v in box)
                yield frame, (x0, y0, x1, y1)


def pointing_game(maps: Any, boxes: Sequence[Any], tolerance: int = 0, min_peak: float = 0.0) -> float:
    """Share of boxed frames whose map maximum lies inside the box (grown by ``tolerance`` pixels).

    A constant map points nowhere and counts as a miss. NaN when no frame has a box.
    """
    hits: list[bool] = []
    for frame, (x0, y0, x1, y1) in _pairs(maps, boxes, min_peak):
        if frame.max() <= frame.min():
            hits.append(False)
            continue
        y, x = np.unravel_index(int(np.argmax(frame)), frame.shape)
        hits.append(bool(x0 - tolerance <= x < x1 + tolerance and y0 - tolerance <= y < y1 + tolerance))
    return float(np.mean(hits)) if hits else float("nan")


def energy_in_box(maps: Any, boxes: Sequence[Any], min_peak: float = 0.0) -> float:
    """Mean over boxed frames of the share of the map's (positive) mass that falls inside the box.

    Compare with :func:`box_area_share`: a map that ignores the box scores about the box's area share.
    """
    shares = []
    for frame, (x0, y0, x1, y1) in _pairs(maps, boxes, min_peak):
        frame = np.clip(frame, 0, None)
        total = frame.sum()
        shares.append(frame[y0:y1, x0:x1].sum() / total if total > 0 else 0.0)
    return float(np.mean(shares)) if shares else float("nan")


def box_area_share(boxes: Sequence[Any], shape: tuple[int, int]) -> float:
    """Mean share of the frame area ``shape = (H, W)`` covered by the boxes (frames with a box only)."""
    h, w = shape
    flat = boxes if all(_is_box(b) for b in boxes) else [b for clip in boxes for b in clip]
    areas = [(min(x1, w) - max(x0, 0)) * (min(y1, h) - max(y0, 0)) / (h * w)
             for box in flat if box is not None for x0, y0, x1, y1 in [box]]
    return float(np.mean(areas)) if areas else float("nan")


def localisation(maps: Any, boxes: Sequence[Any], tolerance: int = 0, min_peak: float = 0.0) -> dict[str, float]:
    """Pointing game, energy in box, the boxes' area share (the energy a blind map would get) and
    the number of frames scored."""
    arr = np.asarray(maps)
    return {"pointing_game": pointing_game(arr, boxes, tolerance, min_peak),
            "energy_in_box": energy_in_box(arr, boxes, min_peak),
            "box_area_share": box_area_share(boxes, arr.shape[-2:]),
            "frames": sum(1 for _ in _pairs(arr, boxes, min_peak))}
