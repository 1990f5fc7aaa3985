"""Explanation files: ``maps.npz`` (the arrays) and ``explanation.json`` (scores, frame importance,
contours), written atomically (to ``name.part``, then moved into place)."""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..jsonio import json_safe
from .contours import Region


def safe_name(name: str) -> str:
    """A method name usable in file and array names (runs of other characters become '_')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "method"


def _named(explanations: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    from .sheet import as_named
    return as_named(explanations)


def save_maps(path: str | os.PathLike, explanations: Mapping[str, Any] | Sequence[Any]) -> str:
    """Write every method's arrays to one compressed ``.npz``: ``<method>_maps``, ``<method>_raw``
    and ``<method>_frame_importance`` (missing fields are skipped), atomically. Returns the path."""
    arrays: dict[str, np.ndarray] = {}
    for name, e in _named(explanations).items():
        key = safe_name(name)
        for field in ("maps", "raw", "frame_importance"):
            value = getattr(e, field, None)
            if value is not None:
                arrays[f"{key}_{field}"] = np.asarray(value)
    with atomic_path(path) as part:
        with open(part, "wb") as f:                # a file object: numpy adds no ".npz" suffix
            # the stub lets **arrays fill ``allow_pickle`` (the keys never take that name)
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    return os.fspath(path)


def explanation_record(expl: Any, regions: Sequence[Sequence[Region]] | None = None, *,
                       contour: Mapping[str, Any] | None = None, decimals: int = 1) -> dict:
    """A JSON-safe summary of one explanation: method, score, target, class name, options,
    frame importance, the maps' size and, with ``regions``, the contours of every frame
    (polygons rounded to ``decimals``, boxes, areas, peaks, masses). ``contour`` records how the
    regions were found (mode, q, level)."""
    maps = getattr(expl, "maps", None)
    imp = getattr(expl, "frame_importance", None)
    score = getattr(expl, "score", None)
    rec: dict[str, Any] = {
        "method": getattr(expl, "method", None),
        "score": None if score is None else float(score),
        "target": None if getattr(expl, "target", None) is None else int(expl.target),
        "class_name": getattr(expl, "class_name", None),
        "options": json_safe(dict(getattr(expl, "options", None) or {})),
        "frame_importance": None if imp is None else
        [round(float(v), 6) if math.isfinite(float(v)) else None for v in np.asarray(imp).ravel()],
        "map_size": None if maps is None else [int(v) for v in np.shape(maps)[-2:]],
    }
    if contour is not None:
        rec["contour"] = json_safe(dict(contour))
    if regions is not None:
        rec["contours"] = [[(r if isinstance(r, Region) else Region.from_dict(r)).to_dict(decimals)
                            for r in frame] for frame in regions]
    return rec
