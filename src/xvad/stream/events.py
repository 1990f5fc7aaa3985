"""The events file: one JSON object per line, appended and flushed line by line.

Lines that record a decision (alert start and end, gaps, explanations, the run's start and stop)
are also ``fsync``-ed, so a crash or a kill loses nothing already decided; per-window lines are
only flushed. Every line carries its ``type``, the wall-clock time (``wall``, ISO 8601 UTC, and
``unix``) and the checkpoint id.
"""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

from ..jsonio import dumps_line

SYNCED = frozenset({"start", "stop", "alert_start", "alert_end", "gap", "disconnect", "explanation"})


def wall_clock(unix: float | None = None) -> str:
    unix = time.time() if unix is None else unix
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventLog:
    """Appends events to ``path`` (or only counts them when ``path`` is None); thread-safe."""

    def __init__(self, path: str | os.PathLike | None, checkpoint: str | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.checkpoint = checkpoint
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def write(self, type_: str, **fields: Any) -> dict:
        now = time.time()
        record = {"type": type_, **fields, "checkpoint": self.checkpoint, "wall": wall_clock(now),
                  "unix": round(now, 3)}
        line = dumps_line(record)
        with self._lock:
            self.counts[type_] = self.counts.get(type_, 0) + 1
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
                if type_ in SYNCED:
                    try:
                        os.fsync(self._file.fileno())
                    except OSError:   # pipes and some special files cannot be synced
                        pass
        return record

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
