"""Which decoded frames a clip or a stream keeps: the frame nearest each target time, and the pairing of
each frame with the next one (for motion and optical-flow input). One rule for files and streams.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import count
from typing import Any

import numpy as np

from ..errors import VideoError
from .decode import EPS, packet_times


class Nearest:
    """Picks, for each target time (ascending), the pushed frame nearest to it; ties go to the earlier
    frame. Needs one frame of look-ahead: ``push`` returns the picks that frame settles."""

    def __init__(self, targets: Iterable[float]) -> None:
        self._targets = iter(targets)
        self._target: float | None = next(self._targets, None)
        self._previous: tuple[Any, float] | None = None

    @property
    def done(self) -> bool:
        """No target is left."""
        return self._target is None

    def push(self, item: Any, t: float) -> list[tuple[Any, float]]:
        out = []
        while self._target is not None and self._target <= t + EPS:
            if self._previous is not None and self._target - self._previous[1] <= t - self._target:
                out.append(self._previous)
            else:
                out.append((item, t))
            self._target = next(self._targets, None)
        self._previous = (item, t)
        return out

    def pad(self) -> list[tuple[Any, float]]:
        """The targets after the last frame, each given the last frame (a clip that must have N frames)."""
        out = []
        while self._previous is not None and self._target is not None:
            out.append(self._previous)
            self._target = next(self._targets, None)
        return out


def ticks(fps: float, start: float = 0.0, frames: int | None = None) -> Iterator[float]:
    """``start + k / fps`` for k = 0, 1, ... (``frames`` of them, or without end)."""
    return (start + k / fps for k in (range(frames) if frames is not None else count()))


def uniform_targets(path: str, frames: int, start: float, end: float) -> list[float]:
    """Timestamps of ``frames`` frames spread evenly (first to last, nearest index) over [start, end),
    from a demux-only pass over ``path``."""
    everything = packet_times(path)
    times = [t for t in everything if start - EPS <= t < end - EPS]
    if not everything:
        raise VideoError(f"{path}: no decodable video frames")
    if not times:
        raise VideoError(f"{path}: no frames between {start:g}s and {end:g}s "
                         f"(the video ends at {everything[-1]:.3f}s)")
    index = np.floor(np.linspace(0, len(times) - 1, frames) + 0.5).astype(int)
    return [times[i] for i in index]


class Partners:
    """Pairs each frame with its motion partner, one frame at a time: the next frame, or for the last
    one the frame before it (itself when it is alone). Items are ``(frame, *rest)``; a pair comes out
    as ``((frame, partner), *rest)``, one item late. Both the file and the stream readers use it."""

    def __init__(self) -> None:
        self.before: tuple | None = None
        self.current: tuple | None = None

    def push(self, item: tuple) -> tuple | None:
        """Take the next frame; return the pair it completes (None for the first frame)."""
        done = None
        if self.current is not None:
            done = ((self.current[0], item[0]), *self.current[1:])
            self.before = self.current
        self.current = item
        return done

    def end(self) -> tuple | None:
        """No frame follows: return the held frame paired with the one before it, and start over."""
        last, before = self.current, self.before
        self.current = self.before = None
        if last is None:
            return None
        return ((last[0], (before or last)[0]), *last[1:])


def with_partners(items: Iterable[tuple[Any, float]]) -> Iterator[tuple[tuple[Any, Any], float]]:
    """(frame, t) -> ((frame, partner), t) by the `Partners` rule; needs one frame of look-ahead."""
    partners = Partners()
    for item in items:
        done = partners.push(item)
        if done is not None:
            yield done
    last = partners.end()
    if last is not None:
        yield last
