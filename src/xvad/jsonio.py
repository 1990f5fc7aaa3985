"""JSON for every file the package writes: one cleaner (numpy, tensors, paths, non-finite floats),
one readable layout, one atomic writer."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from .atomic import atomic_path


def json_safe(obj: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars and arrays (and tensors) become numbers and lists,
    tuples and sets lists, mapping keys strings, non-finite floats ``None``, paths strings, objects
    with ``to_dict()`` that dict, anything else its ``str``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (os.PathLike, PurePath)):
        return os.fspath(obj)
    if callable(getattr(obj, "to_dict", None)):
        return json_safe(obj.to_dict())
    if callable(getattr(obj, "tolist", None)):     # numpy arrays, tensors
        try:
            return json_safe(obj.tolist())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(obj)


def _is_flat(v: Any) -> bool:
    """A list of scalars or of lists of scalars (points): printed on one line."""
    scalar = (int, float, str, bool, type(None))
    return isinstance(v, list) and all(
        isinstance(x, scalar) or (isinstance(x, list) and all(isinstance(y, scalar) for y in x)) for x in v)


def dumps(obj: Any, indent: int = 2, _level: int = 0) -> str:
    """JSON text of a JSON-safe value, indented for reading, with lists of numbers (and of points)
    kept on one line."""
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not _is_flat(obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent, _level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "), allow_nan=False)


def dumps_line(obj: Any) -> str:
    """Compact one-line JSON of any value (made JSON-safe), for JSON-lines files."""
    return json.dumps(json_safe(obj), allow_nan=False, separators=(",", ":"))


def write_json(path: str | os.PathLike, payload: Any) -> str:
    """Write ``payload`` (made JSON-safe) as readable JSON, atomically. Returns the path."""
    text = dumps(json_safe(payload)) + "\n"
    with atomic_path(path) as part:
        with open(part, "w", encoding="utf-8") as f:
            f.write(text)
    return os.fspath(path)
