"""Explanation files: ``maps.npz`` (the arrays) and ``explanation.json`` (scores, frame importance,
contours), written atomically (to ``name.part``, then moved into place)."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import PurePath
from typing import Any, Mapping, Sequence

import numpy as np

from ..atomic import atomic_path
from .contours import Region


def safe_name(name: str) -> str:
    """A method name usable in file and array names (runs of other characters become '_')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "method"


def json_safe(obj: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars and arrays become numbers and lists, tuples and sets
    lists, mapping keys strings, non-finite floats ``None``, paths strings, anything else its
    ``repr``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Region):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (os.PathLike, PurePath)):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):   # e.g. tensors
        try:
            return json_safe(obj.tolist())
        except Exception:
            pass
    return repr(obj)


def _is_flat(v: Any) -> bool:
    """A list of scalars or of lists of scalars (points): printed on one line."""
    scalar = (int, float, str, bool, type(None))
    return isinstance(v, list) and all(
        isinstance(x, scalar) or (isinstance(x, list) and all(isinstance(y, scalar) for y in x)) for x in v)


def dumps(obj: Any, indent: int = 2, _level: int = 0) -> str:
    """JSON text indented for reading, with lists of numbers (and of points) kept on one line."""
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not _is_flat(obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent, _level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "), allow_nan=False)


def save_json(path: str | os.PathLike, payload: Any) -> str:
    """Write ``payload`` (made JSON-safe) as JSON, atomically. Returns the path."""
    text = dumps(json_safe(payload)) + "\n"
    with atomic_path(path) as part:
        with open(part, "w", encoding="utf-8") as f:
            f.write(text)
    return os.fspath(path)


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
            np.savez_compressed(f, **arrays)
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
