"""What the reader puts in the queue (frames and the markers of disconnections, gaps and the end), and
the bounded queue itself, which can drop frames but never markers."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One sampled frame: its number in the run (gaps are dropped frames), source time in seconds,
    the preprocessed tensor, the uint8 RGB picture (when asked for), when it arrived, and the part of
    the picture the model's input shows (a :class:`~xvad.video.crop.Region`; None: the model's fixed crop)."""

    index: int
    time: float
    tensor: Any
    image: np.ndarray | None
    arrival: float                 # time.perf_counter() when it was decoded (or due, when paced)
    region: Any = None


@dataclass
class Disconnect:
    """The live source stopped or failed; the reader is reconnecting."""

    time: float | None             # source time of the last frame before it
    reason: str
    unix: float


@dataclass
class Gap:
    """A disconnection is over: frames flow again (``reconnected``) or the reader gave up."""

    began: float | None            # source time of the last frame before the gap
    ended: float | None            # source time given to the first frame after it
    seconds: float                 # wall-clock length of the gap
    attempts: int                  # how many times the source was reopened
    reconnected: bool
    reason: str


@dataclass
class End:
    """No more frames: ``reason`` is "end" (file or stream ended), "stopped", "gave_up" or "error"."""

    reason: str
    error: BaseException | None = None


class FrameQueue:
    """Holds at most ``maxsize`` frames (markers do not count and are never dropped)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, int(maxsize))
        self._items: deque = deque()
        self._frames = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: Any, drop: bool, stop: threading.Event) -> int:
        """Add ``item``; when full, drop the oldest frame (``drop``) or wait for room (until
        ``stop`` is set). Returns the number of frames dropped."""
        dropped = 0
        with self._cond:
            if isinstance(item, Frame):
                while self._frames >= self.maxsize:
                    if drop:
                        for i, old in enumerate(self._items):
                            if isinstance(old, Frame):
                                del self._items[i]
                                self._frames -= 1
                                dropped += 1
                                break
                    else:
                        if stop.is_set():
                            return 0
                        self._cond.wait(0.05)
                self._frames += 1
            self._items.append(item)
            self._cond.notify_all()
        return dropped

    def full(self) -> bool:
        """Whether a frame put now would push another out (or wait for room)."""
        with self._cond:
            return self._frames >= self.maxsize

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item, waiting up to ``timeout`` seconds (None if nothing came)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._pop()

    def get_nowait(self) -> Any:
        with self._cond:
            return self._pop() if self._items else None

    def peek_is_frame(self) -> bool:
        with self._cond:
            return bool(self._items) and isinstance(self._items[0], Frame)

    def _pop(self) -> Any:
        item = self._items.popleft()
        if isinstance(item, Frame):
            self._frames -= 1
        self._cond.notify_all()
        return item

    def take(self, batch: int, live: bool, stop: threading.Event) -> tuple[list[Frame], Any]:
        """Up to ``batch`` frames (live: those that have arrived, after waiting for the first; a file:
        full batches, which the backbone runs most efficiently), and the marker that ended the batch."""
        first = None
        while first is None:
            if stop.is_set():
                return [], None
            first = self.get(timeout=0.1)
        if not isinstance(first, Frame):
            return [], first
        frames = [first]
        while len(frames) < batch:
            item = self.get_nowait() if live else self.get(timeout=0.1)
            if item is None:
                if live or stop.is_set():
                    break
                continue
            if not isinstance(item, Frame):
                return frames, item
            frames.append(item)
        return frames, None
