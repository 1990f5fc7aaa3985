"""Atomic file writes: write ``name.part``, then rename, so a reader never sees half a file."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields ``path + ".part"`` to write to; on success moves it to ``path``, on error removes it."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + ".part"
    try:
        yield part
        os.replace(part, path)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise

