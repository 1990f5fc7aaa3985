"""Stream input: name a source, open it with PyAV, and decode it in a producer thread.

The reader thread decodes packet by packet (a packet that fails to decode is skipped and counted),
samples frames at the requested rate (the frame nearest each ``k / fps`` tick, as
:func:`xvad.video.read_frames` does), preprocesses them and puts them in a bounded queue. From a
file it blocks when the queue is full, so every frame is used; from a live source (URL, webcam) it
drops the oldest queued frame instead, so latency cannot grow. A live source that ends or fails is
reopened with exponential backoff; the reader puts a :class:`Disconnect` marker in the queue at
once and a :class:`Gap` marker when frames flow again (or when it gives up).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import StreamError, VideoError
from ..video.decode import RGB, DecodeStats, SourceSpec, decode, open_source, origin
from ..video.sample import Nearest, Partners, ticks
from .frames import Disconnect, End, Frame, FrameQueue, Gap
from .priority import lower_this_thread

__all__ = ["Reader", "ReaderStats", "Reconnect", "Sampler", "one_thread"]

_JUMP_BACK = 1.0    # seconds: a timestamp this far behind the previous one starts a new segment
_JUMP_AHEAD = 5.0   # seconds: on a live source, so does one this far ahead


# -- sampling ---------------------------------------------------------------------------------------

class Sampler:
    """The frame nearest each tick ``k / fps`` (k = 0, 1, ...), by the rule clips are read with
    (:class:`xvad.video.sample.Nearest`); ``fps=None`` keeps every frame."""

    def __init__(self, fps: float | None) -> None:
        self.fps = fps
        self.reset()

    def reset(self) -> None:
        self._nearest = None if self.fps is None else Nearest(ticks(self.fps))

    def push(self, item: Any, t: float) -> list[tuple[Any, float]]:
        return [(item, t)] if self._nearest is None else self._nearest.push(item, t)


# -- the reader thread -------------------------------------------------------------------------------

@dataclass
class Reconnect:
    """Backoff for reopening a live source: wait ``initial`` s, doubling up to ``maximum`` s, and give
    up once the source has been gone ``give_up`` s (``inf``: never). ``enabled=False`` ends the run
    at the first disconnection."""

    initial: float = 0.5
    maximum: float = 10.0
    give_up: float = 300.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.maximum >= self.initial and self.give_up >= 0):
            raise StreamError(f"reconnect delays must satisfy 0 < initial <= max and give-up >= 0, "
                              f"not initial={self.initial}, max={self.maximum}, give-up={self.give_up}")


@dataclass
class ReaderStats:
    decoded: int = 0        # frames the decoder produced
    sampled: int = 0        # frames picked at the requested rate
    dropped: int = 0        # sampled frames dropped because processing fell behind (live only)
    corrupt: int = 0        # packets that failed to decode and were skipped
    reconnects: int = 0     # successful reopenings
    disconnects: int = 0


class Reader:
    """Decodes ``spec`` in a thread and fills ``queue`` with `Frame` / `Disconnect` / `Gap` / `End`.

    ``transform(rgb, partner) -> tensor`` preprocesses each sampled frame in the reader thread, given
    its motion partner when ``pairs`` is set (the next decoded frame, see
    :class:`xvad.video.Partners`; else ``None``); the frame's ``region`` is the transform's attribute of
    that name after the call, if it has one (:class:`~xvad.stream.inference.FrameInput`), and its
    ``reset()``, if it has one, is called as each segment starts (the stream's start, after a gap or a
    reconnection, a file played again); with
    ``keep_images`` the uint8 picture travels along too. ``live`` drops frames rather than wait;
    ``realtime`` paces a file at its own timestamps (to simulate a camera); ``loop`` plays a file again
    from the top each time it ends, its clock going on. ``decode_threads``: the live decoder's slice
    threads (0: FFmpeg's choice; a service with many cameras decodes each on one, its cameras being
    its parallelism). ``nice``: the reader thread's nice value (:mod:`xvad.stream.priority`).
    """

    def __init__(self, spec: SourceSpec, fps: float | None,
                 transform: Callable[[np.ndarray, np.ndarray | None], Any], queue: FrameQueue, live: bool,
                 keep_images: bool = False, realtime: bool = False, reconnect: Reconnect | None = None,
                 timeout: float = 10.0, pairs: bool = False, loop: bool = False, decode_threads: int = 0,
                 nice: int = 0) -> None:
        self.spec = spec
        self.decode_threads = int(decode_threads)
        self.nice = int(nice)
        self.fps = fps
        self.transform = transform
        self.pairs = pairs
        self.queue = queue
        self.live = live
        self.keep_images = keep_images
        self.realtime = realtime
        self.loop = loop and spec.kind == "file"   # a file played again from the top at its end (demo cameras)
        self.reconnect = reconnect or Reconnect()
        self.timeout = timeout
        self.stats = ReaderStats()
        self.log = logging.getLogger(__name__)   # the detector gives each camera its own
        self.stop_event = threading.Event()
        self.state = "idle"            # idle, reading, reconnecting, ended
        self.source_fps: float | None = None
        self.size: tuple[int, int] | None = None   # (height, width) of the first frame
        self._container: Any = None
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._index = 0
        self._last_time: float | None = None       # source time of the last sampled frame
        self._t0: float | None = None               # perf_counter at the first frame of the run
        self._pending_gap: tuple[float, int, str, float] | None = None   # gap to report with the next frame

    # -- control --------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the source in the caller's thread, so that a bad source fails right away."""
        self._container, self._stream = open_source(self.spec, self.timeout)
        if self.live:
            self._stream.thread_type = "SLICE"     # frame threads would hold frames back (latency)
            if self.decode_threads:
                self._stream.thread_count = self.decode_threads
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.source_fps = float(rate) if rate else None

    def start(self) -> None:
        if self._container is None:
            self.open()
        self._thread = threading.Thread(target=self._main, name="xvad-reader", daemon=True)
        self._thread.start()

    def stop(self, wait: float = 3.0) -> None:
        self.stop_event.set()
        with self.queue._cond:
            self.queue._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait)
        if self._thread is None or not self._thread.is_alive():
            self._close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- thread -----------------------------------------------------------------------------------
    def _main(self) -> None:
        one_thread()
        if self.nice:
            lower_this_thread(self.nice)
        try:
            end = self._run()
        except BaseException as exc:   # reported to the consumer, which raises it
            end = End("error", exc)
        self.state = "ended"
        self._close()
        self._put(end)

    def _put(self, item: Any) -> None:
        self.stats.dropped += self.queue.put(item, drop=self.live, stop=self.stop_event)

    def _close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:
                pass

    def _run(self) -> End:
        segment = 0
        while True:
            self.state = "reading"
            reason = self._read_segment(segment)
            self._close()
            if self.stop_event.is_set():
                return End("stopped")
            if self.loop and reason == "ended" and self._index > 0:
                self.open()                    # its clock goes on: the next segment starts after the last frame
                segment += 1
                continue
            if not (self.live and self.spec.kind != "file" and self.reconnect.enabled):
                return End("end")
            # a live source went away: tell the consumer now, then try to get it back. If it went
            # away again before a single frame came, it is the same gap, and the backoff goes on.
            if self._pending_gap is None:
                self.stats.disconnects += 1
                self._put(Disconnect(self._last_time, reason, time.time()))
                gap = (time.monotonic(), 0, reason, self.reconnect.initial)
            else:
                gap = self._pending_gap
                self._pending_gap = None
            end = self._reopen(*gap)
            if end is not None:
                return end
            segment += 1

    def _reopen(self, began: float, attempts: int, reason: str, delay: float) -> End | None:
        """Reopen with backoff; on success leaves ``self._pending_gap`` for the first frame."""
        self.state = "reconnecting"
        last_error = reason
        while not self.stop_event.is_set():
            waited = time.monotonic() - began
            if waited + delay > self.reconnect.give_up:
                if waited < self.reconnect.give_up:   # one last try at the deadline
                    delay = self.reconnect.give_up - waited
                else:
                    break
            if self.stop_event.wait(delay):
                break
            attempts += 1
            delay = min(delay * 2, self.reconnect.maximum)
            try:
                self.open()
            except VideoError as exc:
                last_error = str(exc)
                self.log.info("%s: reopening failed (attempt %d): %s", self.spec.name, attempts, exc)
                continue
            self.stats.reconnects += 1
            self.log.info("%s: reconnected after %d attempt(s)", self.spec.name, attempts)
            self._pending_gap = (began, attempts, reason, delay)
            return None
        seconds = time.monotonic() - began
        if self.stop_event.is_set():
            self._put(Gap(self._last_time, None, seconds, attempts, False, "stopped"))
            return End("stopped")
        self._put(Gap(self._last_time, None, seconds, attempts, False, last_error))
        return End("gave_up", StreamError(
            f"{self.spec.name}: source lost and not back after {seconds:.0f} s "
            f"({attempts} attempts; last: {last_error})"))

    def _read_segment(self, segment: int) -> str:
        """Decode the open container to its end (:func:`xvad.video.decode.decode`, as clips are read);
        returns why it ended."""
        container, stream = self._container, self._stream
        sampler = Sampler(self.fps)
        rgb = RGB(stream)
        # a file's times count from its start (as read_frames does); a live stream joined midway
        # counts from its first decoded frame, so no made-up frames fill the wait for a keyframe
        start = origin(stream) if self.spec.kind == "file" else None
        base: float | None = 0.0 if segment == 0 else None   # source time of this segment's origin
        previous: float | None = None
        pace_start: float | None = None
        # pairs: each frame is held until the next one (its motion partner) is decoded
        partners = Partners() if self.pairs else None
        stats, corrupt = DecodeStats(), self.stats.corrupt
        reset = getattr(self.transform, "reset", None)   # a transform with a history starts it over
        if reset is not None:
            reset()

        def deliver(item: tuple[Any, Any], pt: float, now: float) -> bool:
            """Sample and emit; False if stopped while pacing."""
            nonlocal pace_start
            assert base is not None   # the loop sets it before any frame is delivered
            for picked, spt in sampler.push(item, pt):
                time_s = base + spt
                if self.realtime:
                    if pace_start is None:
                        pace_start = now - spt
                    if self.stop_event.wait(max(0.0, pace_start + spt - time.perf_counter())):
                        return False
                self._emit(picked, time_s, rgb, now if not self.realtime else time.perf_counter())
            return True

        def flush() -> None:
            """The held frame has no next one: deliver it with the frame before it."""
            last = partners.end() if partners is not None else None
            if last is not None:
                deliver(*last)

        for frame, t in decode(container, stream, stats, 0.0):   # t: the stream's own seconds
            self.stats.corrupt = corrupt + stats.errors
            if self.stop_event.is_set():
                return "stopped"
            if start is None:
                start = t
            if previous is not None and (t < previous - _JUMP_BACK or
                                         (self.spec.kind != "file" and t > previous + _JUMP_AHEAD)):
                # timestamps jumped back (a restarted or wrapped stream) or, live, far ahead (a
                # clock reset: do not fill the jump with copies of one frame): a new segment
                flush()
                start, base, previous = t, None, None
                sampler.reset()
                if reset is not None:
                    reset()
            previous = t
            self.stats.decoded += 1
            now = time.perf_counter()
            if self._t0 is None:
                self._t0 = now
            if base is None:                # first frame after a gap: continue the clock
                after = self._last_time + 1.0 / (self.fps or self.source_fps or 25.0) \
                    if self._last_time is not None else 0.0
                base = max(after, now - self._t0)
            if partners is None:
                ok = deliver((frame, None), t - start, now)
            else:
                done = partners.push((frame, t - start, now))
                ok = done is None or deliver(*done)
            if not ok:
                return "stopped"
        self.stats.corrupt = corrupt + stats.errors
        if self.stop_event.is_set():
            return "stopped"
        flush()
        if not stats.broken:
            return "ended"
        if self.spec.kind == "file":
            return "read error"       # a truncated file: what decoded is all there is
        return f"read error: {stats.error}"

    def _emit(self, picked: tuple[Any, Any], time_s: float, rgb: RGB, arrival: float) -> None:
        """Queue one sampled frame (with its motion partner, if any)."""
        if self._pending_gap is not None:
            began, attempts, reason, _ = self._pending_gap
            self._pending_gap = None
            self._put(Gap(self._last_time, time_s, time.monotonic() - began, attempts, True, reason))
        frame, partner = picked
        if self.live and self.size is not None and self.queue.full():
            # the consumer is behind and the oldest queued frame would be dropped for this one: drop
            # this one instead, before it costs its RGB conversion and model input (a service that
            # falls behind would otherwise spend the cores it lacks on frames it then throws away).
            # The price: while behind, the queued frames are older (up to the queue's length at the
            # rate the consumer takes them, instead of at the rate frames arrive)
            self._index += 1
            self._last_time = time_s
            self.stats.sampled += 1
            self.stats.dropped += 1
            return
        image = rgb(frame)
        if self.size is None:
            self.size = image.shape[:2]
        tensor = self.transform(image, None if partner is None else rgb(partner))
        region = getattr(self.transform, "region", None)      # the motion crop's square for this frame
        item = Frame(self._index, time_s, tensor, image if self.keep_images else None, arrival, region)
        self._index += 1
        self._last_time = time_s
        self.stats.sampled += 1
        self._put(item)


def one_thread() -> None:
    """Let torch use one thread in the calling (helper) thread. With OpenMP the setting is per
    thread, so the detector's backbone keeps its threads; helper threads with their own thread
    pools would otherwise fight it for the cores (many times slower on a busy machine)."""
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:
        pass
