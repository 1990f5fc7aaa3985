"""The one threshold of a clip's attribution maps: keep the top q % of its values, or Otsu's level.

The level always lies strictly between the values that are kept and those that are not, so
``mask = map > level`` is the kept set (see :mod:`.contours`).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

MODES = ("top", "otsu")


def _finite_values(maps: Any) -> np.ndarray:
    values = np.asarray(maps, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def threshold(maps: Any, mode: str = "top", q: float = 10.0, bins: int = 256) -> float:
    """One level for a whole clip of maps (``[T, H, W]``, or a single ``[H, W]`` map).

    ``mode="top"`` keeps (about) the top ``q`` percent of the clip's values; ties at the cut are
    kept or dropped together, whichever lands closer to ``q`` percent. ``mode="otsu"`` uses Otsu's
    threshold over a ``bins``-bin histogram of the clip's values. Kept pixels are ``map > level``.
    A constant clip keeps nothing (the level is its value).
    """
    if mode not in MODES:
        raise ValueError(f"unknown threshold mode {mode!r}; expected one of {MODES}")
    single = np.asarray(maps).dtype in (np.float16, np.float32)
    values = _finite_values(maps)
    if values.size == 0:
        return float("inf")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    if mode == "top":
        return _top_level(values, q, single)
    return otsu_level(values, bins=bins, single=single)


def _between(below: float, above: float, single: bool = False) -> float:
    """A level strictly between two values (below < above), near the middle. A float32 value is
    preferred, so that comparing float32 maps with the level (which numpy may do in float32) keeps
    the same pixels; ``single`` says the values are float32 (then, if no float32 lies strictly
    between them, ``below`` itself is returned: ``> below`` still keeps exactly the upper ones)."""
    mid32 = float(np.float32(below + (above - below) / 2.0))
    if below < mid32 < above:
        return mid32
    mid = below + (above - below) / 2.0
    if not single and below < mid < above:
        return float(mid)
    return float(below)


def _top_level(values: np.ndarray, q: float, single: bool = False) -> float:
    n = values.size
    if not 0.0 < q <= 100.0:
        raise ValueError(f"q must be in (0, 100], got {q}")
    desc = np.sort(values)[::-1]
    k = min(n, max(1, int(round(n * q / 100.0))))
    cut = desc[k - 1]
    n_ge = int(np.count_nonzero(values >= cut))    # keep the whole tie group at the cut ...
    n_gt = int(np.count_nonzero(values > cut))     # ... or drop it
    if n_gt > 0 and abs(n_gt - k) <= abs(n_ge - k):    # drop the tie group: keep values > cut
        return _between(float(cut), float(values[values > cut].min()), single)
    if n_ge >= n:                                       # the cut is the minimum: keep everything
        if single:
            return float(np.nextafter(np.float32(cut), np.float32(-np.inf)))
        return float(np.nextafter(float(cut), -np.inf))
    return _between(float(values[values < cut].max()), float(cut), single)   # keep values >= cut


def otsu_level(values: Any, bins: int = 256, single: bool | None = None) -> float:
    """Otsu's threshold of a set of values: the values are quantised into ``bins`` (at most 256)
    equal bins between their minimum and maximum (as :func:`numpy.histogram` bins them), OpenCV
    picks the cut between two bins that maximises the between-class variance, and the level is
    placed between the two classes' actual values."""
    if single is None:
        single = np.asarray(values).dtype in (np.float16, np.float32)
    if not 2 <= bins <= 256:
        raise ValueError(f"bins must be in [2, 256], got {bins}")
    v = _finite_values(values)
    if v.size == 0:
        return float("inf")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    edges = np.linspace(lo, hi, bins + 1)
    quantised = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1).astype(np.uint8)
    cut, _ = cv2.threshold(quantised.reshape(1, -1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    edge = float(edges[int(cut) + 1])                # class 0 is bins 0..cut
    below = v[v < edge]
    above = v[v >= edge]
    if below.size == 0 or above.size == 0:
        return edge
    return _between(float(below.max()), float(above.min()), single)
