"""Naming, opening and decoding any video source (file, URL, device) with PyAV: the one decode loop.

Files, network streams and webcams all go through :func:`parse_source`, :func:`open_source` and
:func:`decode`, so timestamps, rotation, damaged packets and error messages are handled the same way
whether a clip is read for training or a camera is watched live.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from ..errors import VideoError

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "hls")
NET_TIMEOUT = 30.0                                      # seconds, for rtsp/http sources read as files
EPS = 1e-6                                              # seconds; absorbs float noise in timestamps
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})  # FFmpeg opens .txt files as "ANSI art" video


# -- naming and opening sources ------------------------------------------------------------------

@dataclass
class SourceSpec:
    """How to open a source: ``url`` and ``format`` for ``av.open``, its ``kind`` and the name users gave."""

    name: str
    url: str
    kind: str                      # "file", "webcam" or "url"
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """A webcam or a network stream: frames come at the source's pace and may be dropped."""
        return self.kind != "file"


def parse_source(source: Any, options: dict[str, str] | None = None) -> SourceSpec:
    """A file path, a webcam (``0``, ``/dev/video0``) or a URL (rtsp, http(s), udp, ...)."""
    name = str(source) if isinstance(source, int) else os.fspath(source)
    name = str(name).strip()
    if not name:
        raise VideoError("empty source name")
    extra = {str(k): str(v) for k, v in (options or {}).items()}
    if name.isdigit() or name.startswith("/dev/video"):
        if sys.platform == "darwin":
            return SourceSpec(name, name if name.isdigit() else name[len("/dev/video"):], "webcam",
                              "avfoundation", extra)
        device = f"/dev/video{name}" if name.isdigit() else name
        return SourceSpec(name, device, "webcam", "v4l2", extra)
    if "://" in name:
        scheme = name.split("://", 1)[0].lower()
        if scheme == "file":
            return SourceSpec(name, name[len("file://"):], "file", None, extra)
        if scheme not in URL_SCHEMES:
            raise VideoError(f"{name}: unsupported URL scheme {scheme!r} (use one of {', '.join(URL_SCHEMES)})")
        opts: dict[str, str] = {"analyzeduration": "1000000"}   # start within a second, not five
        if scheme in ("rtsp", "rtsps"):
            opts["rtsp_transport"] = "tcp"
        return SourceSpec(name, name, "url", None, {**opts, **extra})
    return SourceSpec(name, name, "file", None, extra)


def open_source(spec: SourceSpec, timeout: float = 10.0) -> tuple[Any, Any]:
    """Open ``spec`` and return ``(container, video stream)``; a one-line `VideoError` if impossible."""
    if spec.kind == "file" and not os.path.exists(spec.url):
        raise VideoError(f"{spec.name}: no such file")
    if spec.kind == "file" and os.path.isdir(spec.url):
        raise VideoError(f"{spec.name}: is a directory, not a video file")
    if spec.kind == "webcam" and spec.format == "v4l2" and not os.path.exists(spec.url):
        raise VideoError(f"{spec.name}: no such camera ({spec.url} does not exist)")
    options = dict(spec.options)
    listening = options.get("rtsp_flags") == "listen" or options.get("listen", "0") != "0"
    if listening:
        # the source is a server a camera or encoder pushes to; FFmpeg waits for it itself (its
        # default of "forever" fails to open), and PyAV's own timeout would stall the wait
        options.setdefault("listen_timeout" if "rtsp_flags" in options else "timeout", str(int(timeout)))
    with errors(spec.name):
        container = av.open(spec.url, "r", format=spec.format, options=options or None,
                            timeout=(timeout, timeout) if spec.kind == "url" and not listening else None,
                            metadata_errors="replace")
        try:
            stream = video_stream(container, spec.name)
        except BaseException:
            container.close()
            raise
    return container, stream


def open_path(path: str) -> tuple[Any, Any]:
    """Open a file or URL for reading a clip: ``(container, video stream)``."""
    return open_source(parse_source(path), timeout=NET_TIMEOUT)


def video_stream(container: Any, name: str) -> Any:
    """The first real video stream (cover art does not count), set up for threaded decoding."""
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise VideoError(f"{name}: no video stream")
    stream = streams[0]
    if stream.codec_context is None:
        raise VideoError(f"{name}: unsupported video codec (no decoder available)")
    if stream.codec_context.name in _TEXT_CODECS:
        raise VideoError(f"{name}: not a video file (text)")
    stream.thread_type = "AUTO"
    return stream


@contextmanager
def errors(name: str) -> Iterator[None]:
    """Turn PyAV and OS errors into a one-line VideoError naming the source."""
    try:
        yield
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{name}: {reason(e)}") from None


def reason(e: BaseException) -> str:
    """A short, single-line description of an open or read error."""
    known = [(FileNotFoundError, "no such file"), (IsADirectoryError, "is a directory, not a video file"),
             (PermissionError, "permission denied"),
             (av.InvalidDataError, "not a video file, or too damaged to read (invalid data)"),
             (EOFError, "empty or truncated file (no media found)"),
             (av.DecoderNotFoundError, "unsupported codec (no decoder available)")]
    for kind, text in known:
        if isinstance(e, kind):
            return text
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return "cannot read: " + " ".join(str(text).split())


# -- container facts --------------------------------------------------------------------------------

def estimates(container: Any, stream: Any) -> tuple[float, float | None, int | None]:
    """(fps, duration in seconds, frame count) as the container states or implies them."""
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    frames = stream.frames or None
    if frames is None and duration and fps:
        frames = round(duration * fps)
    return fps, duration, frames


def origin(stream: Any) -> float | None:
    """Start time of the stream in seconds; the timestamps xvad reports count from here."""
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def rotation(frame: Any, stream: Any) -> int:
    """Counter-clockwise degrees (0/90/180/270) from the display matrix, else the legacy "rotate" tag."""
    try:
        degrees = float(frame.rotation)
    except (TypeError, ValueError, AttributeError):
        degrees = 0.0
    if not math.isfinite(degrees):
        degrees = 0.0
    if degrees == 0.0:
        try:  # the old tag counts clockwise
            degrees = -float(stream.metadata.get("rotate", 0))
        except ValueError:
            degrees = 0.0
    return int(round(degrees / 90.0)) % 4 * 90


class RGB:
    """Converts decoded frames to upright RGB arrays, reusing the last result when a frame repeats."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.rotation: int | None = None   # fixed by the first frame so every frame has the same shape
        self._last: list[tuple[Any, np.ndarray]] = []   # the last two conversions (pairs share frames)

    def __call__(self, frame: Any) -> np.ndarray:
        for seen, image in self._last:
            if frame is seen:
                return image
        if self.rotation is None:
            self.rotation = rotation(frame, self.stream)
        image = frame.to_ndarray(format="rgb24")
        if self.rotation:
            image = np.ascontiguousarray(np.rot90(image, self.rotation // 90))
        self._last = [*self._last[-1:], (frame, image)]
        return image


# -- decoding ---------------------------------------------------------------------------------------

@dataclass
class DecodeStats:
    """Bookkeeping of one decode run: it tells a complete read from a truncated or damaged one."""

    frames: int = 0
    errors: int = 0             # packets that failed to decode and were skipped
    ended: bool = False         # the stream was read to its end (or to a read error)
    broken: bool = False        # demuxing stopped on a read error
    error: str | None = None    # what that read error said
    last: float | None = None   # timestamp of the last decoded frame (from the origin)

    def reset(self) -> None:
        self.frames, self.errors, self.ended, self.broken, self.error, self.last = 0, 0, False, False, None, None


def decode(container: Any, stream: Any, stats: DecodeStats,
           start: float | None) -> Generator[tuple[Any, float], None, None]:
    """Decode ``stream`` in order, yielding (frame, seconds since ``start``, the first frame's time
    when ``None``). A frame without a timestamp gets the previous one plus the nominal frame period;
    packets that fail to decode are skipped and counted; a read error ends the stream after flushing
    the decoder."""
    rate = stream.average_rate or stream.guessed_rate
    step = 1.0 / float(rate) if rate else 0.04
    packets = container.demux(stream)
    previous: float | None = None
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            stats.ended = True
            return
        except (av.FFmpegError, OSError) as exc:
            stats.ended = stats.broken = True
            stats.error = " ".join((getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).split())[:160]
            packet = None   # flush what the decoder still holds
        try:
            frames = stream.decode(packet)
        except (av.FFmpegError, ValueError):
            stats.errors += 1
            frames = []
        for frame in frames:
            t = frame.time
            if t is None:
                t = previous + step if previous is not None else 0.0
            previous = t
            if start is None:
                start = t
            stats.frames += 1
            stats.last = t - start
            yield frame, t - start
        if packet is None:
            return


def decode_from(container: Any, stream: Any, stats: DecodeStats, start: float) -> Iterator[tuple[Any, float]]:
    """`decode` from the stream's origin, first seeking to the keyframe before ``start`` when the file
    has a seek index (mp4, mkv, avi); unindexed streams such as MPEG-TS decode from the top."""
    base = origin(stream)
    if start > 0 and base is not None and _indexed(stream) and _seek(container, stream, base + start):
        decoded = decode(container, stream, stats, base)
        first = next(decoded, None)
        if first is not None and first[1] <= start + EPS:
            yield first
            yield from decoded
            return
        decoded.close()   # the index sent us past ``start``: decode from the beginning instead
        _seek(container, stream, base)
        stats.reset()
    yield from decode(container, stream, stats, base)


def packet_times(path: str) -> list[float]:
    """Timestamps of every frame (seconds from the stream's origin) from a demux-only pass, much faster
    than decoding; decodes instead when the packets carry no timestamps."""
    container, stream = open_path(path)
    with container:
        base = origin(stream)
        times: list[float] = []
        timed = True
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:   # end-of-stream markers, edit-list leftovers
                    continue
                if packet.pts is None:
                    timed = False
                    break
                times.append(float(packet.pts * packet.time_base))
        except (av.FFmpegError, OSError):   # a damaged tail: the decoding pass reports it
            pass
    if not timed:
        container, stream = open_path(path)
        with container:
            return [t for _, t in decode(container, stream, DecodeStats(), base)]
    times.sort()
    if base is None:
        base = times[0] if times else 0.0
    return [t - base for t in times]


def _indexed(stream: Any) -> bool:
    try:
        return len(stream.index_entries) > 0
    except (AttributeError, TypeError):
        return False


def _seek(container: Any, stream: Any, seconds: float) -> bool:
    """Seek to the keyframe at or before ``seconds``; False when the input cannot seek."""
    try:
        container.seek(int(math.floor(seconds / stream.time_base)), stream=stream, backward=True)
        return True
    except (av.FFmpegError, OSError, ValueError, ZeroDivisionError):
        return False
