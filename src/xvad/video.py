"""Video input: probe files and streams, decode and sample frames with PyAV, and turn them into model tensors.

Frames are decoded in order and only the ones a caller asked for are kept, so long files never sit in
memory. Damaged files give back what decodes (with a `VideoWarning`); unreadable ones raise `VideoError`.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count, takewhile
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CROPS", "INPUTS", "VideoError", "VideoInfo", "VideoWarning", "flip_images", "flow_images",
           "input_streams", "iter_frames", "model_images", "motion_images", "preprocess", "probe", "read_clip",
           "read_frame_pairs", "read_frames", "read_input"]

CROPS = ("center", "full", "pad")
INPUTS = ("rgb", "motion", "flow")                      # what a model's backbone looks at, see model_images
MOTION_GAIN = 4                                         # frame differences are small: scale them into view
MOTION_RULE = f"|next-this|x{MOTION_GAIN}"              # recorded in feature caches: change it, recompute them
FLOW_WIDTH = 320                                        # optical flow is computed on grey frames this wide
FLOW_GAIN = 8                                           # grey levels per pixel of displacement
FLOW_RULE = f"DIS-medium@{FLOW_WIDTH}px,x{FLOW_GAIN}"    # recorded in feature caches, like MOTION_RULE
_EPS = 1e-6                                             # seconds; absorbs float noise in timestamps
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})  # FFmpeg opens .txt files as "ANSI art" video
_NET_TIMEOUT = 30.0                                     # seconds, for rtsp/http sources


class VideoError(Exception):
    """A video cannot be read: missing, not a video, no video stream, unsupported codec or no decodable frames."""


class VideoWarning(UserWarning):
    """A video was only partly readable (truncated or damaged); the frames that did decode are returned."""


@dataclass
class VideoInfo:
    """What `probe` finds out about a video; width and height are those of the upright frames."""

    path: str
    width: int
    height: int
    fps: float                # average frame rate, 0.0 when the container does not say
    frames: int | None        # frame count, from the header or estimated as duration * fps
    duration: float | None    # seconds
    rotation: int             # counter-clockwise degrees (0/90/180/270) that turn stored frames upright,
                              # as in FFmpeg's display matrix (a phone's old rotate=90 tag reads as 270)


@dataclass
class _Decoded:
    """Bookkeeping of one decode run, used to tell a complete read from a truncated or damaged one."""

    frames: int = 0
    errors: int = 0             # packets that failed to decode and were skipped
    ended: bool = False         # the stream was read to its end (or to a read error)
    broken: bool = False        # demuxing stopped on a read error
    last: float | None = None   # timestamp of the last decoded frame

    def reset(self) -> None:
        self.frames, self.errors, self.ended, self.broken, self.last = 0, 0, False, False, None


# -- public API ------------------------------------------------------------------------------------

def probe(path: str) -> VideoInfo:
    """Size, frame rate, frame count, duration and rotation of a video; decodes only the first frame."""
    path = os.fspath(path)
    with _errors(path), _open(path) as container:
        stream = _video_stream(container, path)
        fps, duration, frames = _estimates(container, stream)
        first = next(_decode(container, stream, _Decoded(), _origin(stream)), None)
        if first is None:
            raise VideoError(f"{path}: no decodable video frames")
        rotation = _rotation(first[0], stream)
        width, height = first[0].width, first[0].height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(path, width, height, fps, frames, duration, rotation)


def read_frames(path: str, frames: int | None = None, fps: float | None = None, start: float = 0.0,
                duration: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode frames as upright RGB uint8 [T, H, W, 3] plus their timestamps in seconds [T].

    ``frames=N`` samples N frames uniformly over the clip (or over ``[start, start + duration)``),
    repeating the nearest frames when fewer exist; ``fps=F`` takes the frame nearest each 1/F tick from
    the real timestamps (variable frame rate is fine); both give N frames at rate F from ``start``;
    neither gives every frame.
    """
    images, _, times = _read(path, frames, fps, start, duration, pairs=False)
    return images, times


def read_frame_pairs(path: str, frames: int | None = None, fps: float | None = None, start: float = 0.0,
                     duration: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_frames` plus, for each frame, its partner for motion input: the frame decoded just
    after it in the video (the one before it for the last frame): ``(frames, partners, times)``."""
    return _read(path, frames, fps, start, duration, pairs=True)


def input_streams(input: str) -> list[str]:
    """The image streams of a model's ``input``: one of `INPUTS`, or several joined by "+"
    ("motion+flow" -> ["motion", "flow"]). Each stream goes through the backbone on its own."""
    streams = str(input).split("+")
    if any(s not in INPUTS for s in streams) or len(set(streams)) != len(streams):
        raise ValueError(f"input must be one of {', '.join(INPUTS)}, or several joined by '+' "
                         f"(e.g. motion+flow), not {input!r}")
    return streams


def needs_partner(config: dict) -> bool:
    """Whether a model with ``config`` needs each frame's partner (for motion or flow images)."""
    return any(s != "rgb" for s in input_streams(config.get("input", "rgb")))


def read_input(path: str, config: dict, frames: int | None = None, fps: float | None = None,
               start: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames a model with ``config`` is given: ``(rgb frames, backbone images, times)``.

    The two image arrays are the same for an RGB model; other models see :func:`model_images`
    (uint8 ``[T, H, W, 3 * streams]``), while a person is shown the RGB frames.
    """
    if needs_partner(config):
        rgb, partners, times = read_frame_pairs(path, frames, fps, start, duration)
        return rgb, model_images(rgb, partners, config), times
    rgb, times = read_frames(path, frames, fps, start, duration)
    return rgb, rgb, times


def motion_images(frames: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """``clip(4 * |I(t+1) - I(t)|, 0, 255)`` per pixel and channel, uint8 [T, H, W, 3], where I(t+1) is
    each frame's partner (see :func:`read_frame_pairs`).

    The difference of two consecutive decoded frames keeps what moved (fists, falling bodies) and
    drops the static scene, which a frozen ImageNet backbone otherwise describes first.
    """
    diff = np.abs(frames.astype(np.int16) - partners.astype(np.int16)) * MOTION_GAIN
    return np.minimum(diff, 255).astype(np.uint8)


def flow_images(frames: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """The optical flow from each frame to its partner drawn as an image, uint8 [T, H, W, 3]:
    R = 128 + 8·dx, G = 128 + 8·dy, B = 16·|d| (clipped), with d in pixels of a 320 px wide copy.

    Unlike a frame difference, flow says where things went and how fast, whatever their texture.
    Dense DIS flow (OpenCV) on grey frames, then scaled back to the frame size.
    """
    import cv2   # imported here: only flow models need it

    frames, partners = np.asarray(frames), np.asarray(partners)
    lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
    size = (FLOW_WIDTH, max(8, round(h * FLOW_WIDTH / w)))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def grey(image: np.ndarray) -> np.ndarray:
        return cv2.resize(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), size,
                          interpolation=cv2.INTER_AREA)

    out = np.empty(frames.shape, np.uint8)
    flat_in, flat_partner, flat_out = (a.reshape(-1, h, w, 3) for a in (frames, partners, out))
    for i in range(len(flat_in)):
        d = dis.calc(grey(flat_in[i]), grey(flat_partner[i]), None)
        image = np.dstack([128 + FLOW_GAIN * d[..., 0], 128 + FLOW_GAIN * d[..., 1],
                           2 * FLOW_GAIN * np.hypot(d[..., 0], d[..., 1])])
        image = np.clip(image, 0, 255).astype(np.uint8)
        flat_out[i] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(*lead, h, w, 3)


def model_images(frame: np.ndarray, partner: np.ndarray | None, config: dict) -> np.ndarray:
    """The image(s) a model with ``config`` feeds its backbone for ``frame`` (any leading shape), given
    its partner frame (``None``, or a frame of another size: no motion). Several streams are stacked on
    the channel axis, 3 channels each, in the order ``config["input"]`` names them."""
    streams = input_streams(config.get("input", "rgb"))
    if streams == ["rgb"]:
        return frame
    if partner is None or partner.shape != frame.shape:   # none, or the stream changed size: no motion
        partner = frame
    make = {"rgb": lambda: frame, "motion": lambda: motion_images(frame, partner),
            "flow": lambda: flow_images(frame, partner)}
    parts = [make[s]() for s in streams]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def flip_images(images: np.ndarray, config: dict) -> np.ndarray:
    """Mirror model images ``[..., H, W, 3 * streams]`` left to right, as the mirrored video would give
    them: a flow stream's horizontal component also changes sign."""
    out = np.ascontiguousarray(images[..., ::-1, :])
    for k, stream in enumerate(input_streams(config.get("input", "rgb"))):
        if stream == "flow":
            out[..., 3 * k] = np.minimum(256 - out[..., 3 * k].astype(np.int16), 255).astype(np.uint8)
    return out


def _read(path: str, frames: int | None, fps: float | None, start: float, duration: float | None,
          pairs: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The body of `read_frames` and `read_frame_pairs`."""
    path = os.fspath(path)
    _check_window(frames, fps, start, duration)
    end = math.inf if duration is None else start + duration
    with _errors(path):
        targets: Iterable[float] | None = None
        if frames is not None and fps is None:
            targets = _uniform_targets(path, frames, start, end)   # a fast demux-only first pass
        elif fps is not None:
            ticks = (start + k / fps for k in (range(frames) if frames is not None else count()))
            targets = takewhile(lambda t: t < end - _EPS, ticks)
        with _open(path) as container:
            stream = _video_stream(container, path)
            est = _estimates(container, stream)
            stats = _Decoded()
            decoded = _decode_from(container, stream, stats, start)
            rgb: Any = _RGB(stream)
            if pairs:
                decoded, rgb = with_partners(decoded), _PairRGB(rgb)
            if targets is None:
                picked = _window(decoded, rgb, start, end)
            else:
                picked = _nearest(decoded, targets, rgb, pad_end=frames is not None)
            out = list(picked)
            whole = start <= 0 and duration is None
            if whole and frames is not None and fps is None:
                for _ in decoded:   # the last target is the last frame: finish reading to spot a short file
                    pass
            if stats.frames == 0:
                raise VideoError(f"{path}: no decodable video frames")
            step = 1.0 / est[0] if est[0] else 0.0
            if not out or (stats.last is not None and start > stats.last + step + _EPS):
                raise VideoError(f"{path}: no frames in the requested range from {start:g}s "
                                 f"(the video ends at {stats.last:.3f}s)")
            _warn_damage(path, stream, est, stats, whole)
    images, times = zip(*out)
    times_a = np.array(times, dtype=np.float64)
    if pairs:
        return np.stack([a for a, _ in images]), np.stack([b for _, b in images]), times_a
    return np.stack(images), None, times_a


def iter_frames(path: str, fps: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Stream (upright RGB uint8 frame, timestamp in seconds) from a file or URL (rtsp/http), optionally
    resampled to ``fps`` by taking the frame nearest each tick; opening errors are raised right away."""
    path = os.fspath(path)
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    with _errors(path):
        container = _open(path)
        try:
            stream = _video_stream(container, path)
        except BaseException:
            container.close()
            raise
    return _stream(path, container, stream, fps)


def preprocess(frames: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
               crop: str = "center") -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> normalised float32 [T, 3, size, size] for the model (images of
    several streams, [T, H, W, 3k], give [T, 3k, size, size]).

    ``crop``: "center" resizes the shorter side to ``size`` and centre-crops; "full" squeezes the whole
    frame to size x size; "pad" fits the longer side and letterboxes with the mean colour (0 after
    normalisation). Resizing is antialiased bilinear.
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, not {crop!r}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, not {size!r}")
    size = int(size)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] % 3 or frames.shape[-1] == 0 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T, H, W, 3] (or 3 per stream), "
                         f"got {frames.dtype} {list(frames.shape)}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need one value per RGB channel")
    c = frames.shape[-1]   # several streams: 3 channels each, normalised alike
    mean_t = torch.tensor([float(m) for m in mean] * (c // 3), dtype=torch.float32).view(1, c, 1, 1)
    std_t = torch.tensor([float(s) for s in std] * (c // 3), dtype=torch.float32).view(1, c, 1, 1)
    out = torch.empty(len(frames), c, size, size, dtype=torch.float32)
    for i, frame in enumerate(frames):   # one frame at a time: full-size float copies stay small
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0).float()
        out[i] = _fit(x, size, crop, mean_t, std_t)[0]
    return out


def read_clip(path: str, model: Any, start: float = 0.0) -> torch.Tensor:
    """The [T, 3 * streams, size, size] input ``model`` expects for the clip at ``path`` (from ``start`` seconds),
    with frame count, rate, input kind, size, crop and normalisation all taken from ``model.config``."""
    cfg = model.config
    _, images, _ = read_input(path, cfg, frames=int(cfg["frames"]), fps=cfg.get("fps"), start=start)
    return preprocess_as(images, cfg)


def preprocess_as(frames: np.ndarray, config: dict) -> torch.Tensor:
    """:func:`preprocess` with the size, normalisation and crop a model's ``config`` records."""
    return preprocess(frames, int(config["size"]), config["mean"], config["std"], crop=config.get("crop", "center"))


def _fit(x: torch.Tensor, size: int, crop: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One float [1, 3, H, W] frame (0..255) -> normalised [1, 3, size, size] by the ``crop`` rule."""
    h, w = x.shape[-2:]
    if crop == "full":
        return (_resize(x, size, size) / 255 - mean) / std
    if crop == "center":
        scale = size / min(h, w)
        nh, nw = (size, max(size, round(w * scale))) if h <= w else (max(size, round(h * scale)), size)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = _resize(x, nh, nw)[..., top: top + size, left: left + size]
        return (x / 255 - mean) / std
    scale = size / max(h, w)   # "pad": fit inside, then letterbox with zeros (= the mean colour)
    nh, nw = (max(1, round(h * scale)), size) if h <= w else (size, max(1, round(w * scale)))
    x = (_resize(x, nh, nw) / 255 - mean) / std
    top, left = (size - nh) // 2, (size - nw) // 2
    return F.pad(x, (left, size - nw - left, top, size - nh - top))


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


# -- opening and error handling -------------------------------------------------------------------

@contextmanager
def _errors(path: str) -> Iterator[None]:
    """Turn PyAV and OS errors into a one-line VideoError naming the file."""
    try:
        yield
    except av.FFmpegError as e:
        raise VideoError(f"{path}: {_reason(e)}") from None
    except OSError as e:
        raise VideoError(f"{path}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """A short, single-line description of an open/read error."""
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not a video file"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, av.InvalidDataError):
        return "not a video file, or too damaged to read (invalid data)"
    if isinstance(e, EOFError):
        return "empty or truncated file (no media found)"
    if isinstance(e, av.DecoderNotFoundError):
        return "unsupported codec (no decoder available)"
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return "cannot read: " + " ".join(str(text).split())


def _is_url(path: str) -> bool:
    return "://" in path


def _open(path: str) -> Any:
    """Open ``path`` for reading (call inside `_errors`)."""
    if not _is_url(path) and not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    timeout = _NET_TIMEOUT if _is_url(path) else None
    return av.open(path, "r", metadata_errors="replace", timeout=timeout)


def _video_stream(container: Any, path: str) -> Any:
    """The first real video stream (cover art does not count), set up for threaded decoding."""
    streams = [s for s in container.streams.video
               if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise VideoError(f"{path}: no video stream")
    stream = streams[0]
    if stream.codec_context is None:
        raise VideoError(f"{path}: unsupported video codec (no decoder available)")
    if stream.codec_context.name in _TEXT_CODECS:
        raise VideoError(f"{path}: not a video file (text)")
    stream.thread_type = "AUTO"
    return stream


# -- container facts --------------------------------------------------------------------------------

def _estimates(container: Any, stream: Any) -> tuple[float, float | None, int | None]:
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


def _origin(stream: Any) -> float | None:
    """Start time of the stream in seconds; timestamps we return count from here."""
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def _rotation(frame: Any, stream: Any) -> int:
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


class _RGB:
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
            self.rotation = _rotation(frame, self.stream)
        image = frame.to_ndarray(format="rgb24")
        if self.rotation:
            image = np.ascontiguousarray(np.rot90(image, self.rotation // 90))
        self._last = [*self._last[-1:], (frame, image)]
        return image


class _PairRGB:
    """`_RGB` for the (frame, partner) pairs of `with_partners`."""

    def __init__(self, rgb: _RGB) -> None:
        self.rgb = rgb

    def __call__(self, pair: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
        return self.rgb(pair[0]), self.rgb(pair[1])


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


# -- decoding ---------------------------------------------------------------------------------------

def _decode(container: Any, stream: Any, stats: _Decoded,
            origin: float | None) -> Iterator[tuple[Any, float]]:
    """Decode ``stream`` in order, yielding (frame, seconds since ``origin``); packets that fail to
    decode are skipped and counted, and a read error ends the stream after flushing the decoder."""
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
        except (av.FFmpegError, OSError):
            stats.ended = stats.broken = True
            packet = None   # flush what the decoder still holds
        try:
            frames = stream.decode(packet)
        except av.FFmpegError:
            stats.errors += 1
            frames = []
        for frame in frames:
            t = frame.time
            if t is None:   # no timestamp: assume the nominal frame rate
                t = previous + step if previous is not None else 0.0
            previous = t
            if origin is None:
                origin = t
            stats.frames += 1
            stats.last = t - origin
            yield frame, t - origin
        if packet is None:
            return


def _decode_from(container: Any, stream: Any, stats: _Decoded,
                 start: float) -> Iterator[tuple[Any, float]]:
    """Like `_decode`, but first seek to the keyframe before ``start`` if the file has a seek index
    (mp4, mkv, avi); unindexed streams such as MPEG-TS seek by guesswork, so those decode from the top."""
    origin = _origin(stream)
    if start > 0 and origin is not None and _indexed(stream) and _seek(container, stream, origin + start):
        decoded = _decode(container, stream, stats, origin)
        first = next(decoded, None)
        if first is not None and first[1] <= start + _EPS:
            yield first
            yield from decoded
            return
        decoded.close()   # the index sent us past ``start``: decode from the beginning instead
        _seek(container, stream, origin)
        stats.reset()
    yield from _decode(container, stream, stats, origin)


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


def _window(decoded: Iterator[tuple[Any, float]], rgb: Callable[[Any], Any], start: float,
            end: float) -> Iterator[tuple[np.ndarray, float]]:
    """Every frame with start <= t < end."""
    for frame, t in decoded:
        if t >= end - _EPS:
            return
        if t >= start - _EPS:
            yield rgb(frame), t


def _nearest(decoded: Iterator[tuple[Any, float]], targets: Iterable[float], rgb: Callable[[Any], Any],
             pad_end: bool) -> Iterator[tuple[np.ndarray, float]]:
    """For each target time (ascending) the decoded frame nearest to it, with its timestamp.

    Needs one frame of look-ahead only. Targets after the last frame get the last frame when
    ``pad_end`` is set and are dropped otherwise; ties go to the earlier frame.
    """
    targets = iter(targets)
    target = next(targets, None)
    if target is None:
        return
    previous: tuple[Any, float] | None = None
    for frame, t in decoded:
        while target is not None and target <= t + _EPS:
            if previous is not None and target - previous[1] <= t - target:
                yield rgb(previous[0]), previous[1]
            else:
                yield rgb(frame), t
            target = next(targets, None)
        if target is None:
            return
        previous = (frame, t)
    while pad_end and previous is not None and target is not None:
        yield rgb(previous[0]), previous[1]
        target = next(targets, None)


def _frame_times(path: str) -> list[float]:
    """Timestamps of every frame (seconds from the stream start) from a demux-only pass, which is much
    faster than decoding; decodes instead when the packets carry no timestamps."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        origin = _origin(stream)
        times = _packet_times(container, stream)
    if times is None:
        with _open(path) as container:
            stream = _video_stream(container, path)
            return [t for _, t in _decode(container, stream, _Decoded(), origin)]
    times.sort()
    if origin is None:
        origin = times[0] if times else 0.0
    return [t - origin for t in times]


def _packet_times(container: Any, stream: Any) -> list[float] | None:
    """Presentation times of the stream's packets in seconds, or None if some packet has none."""
    times: list[float] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:   # end-of-stream markers, edit-list leftovers
                continue
            if packet.pts is None:
                return None
            times.append(float(packet.pts * packet.time_base))
    except (av.FFmpegError, OSError):   # a damaged tail: the decoding pass reports it
        pass
    return times


def _uniform_targets(path: str, frames: int, start: float, end: float) -> list[float]:
    """Timestamps of ``frames`` frames spread evenly (first to last, nearest index) over [start, end)."""
    everything = _frame_times(path)
    times = [t for t in everything if start - _EPS <= t < end - _EPS]
    if not everything:
        raise VideoError(f"{path}: no decodable video frames")
    if not times:
        raise VideoError(f"{path}: no frames between {start:g}s and {end:g}s "
                         f"(the video ends at {everything[-1]:.3f}s)")
    index = np.floor(np.linspace(0, len(times) - 1, frames) + 0.5).astype(int)
    return [times[i] for i in index]


def _stream(path: str, container: Any, stream: Any, fps: float | None) -> Iterator[tuple[np.ndarray, float]]:
    """The generator behind `iter_frames`; closes the container when done or abandoned."""
    stats = _Decoded()
    try:
        with _errors(path):
            est = _estimates(container, stream)
            decoded = _decode(container, stream, stats, _origin(stream))
            rgb = _RGB(stream)
            if fps is None:
                yield from ((rgb(frame), t) for frame, t in decoded)
            else:
                yield from _nearest(decoded, (k / fps for k in count()), rgb, pad_end=False)
    finally:
        container.close()
    if stats.frames == 0:
        raise VideoError(f"{path}: no decodable video frames")
    _warn_damage(path, stream, est, stats, whole=True)


def _check_window(frames: int | None, fps: float | None, start: float, duration: float | None) -> None:
    """Reject argument combinations that cannot mean anything."""
    if frames is not None and (int(frames) != frames or frames < 1):
        raise ValueError(f"frames must be a positive integer, not {frames!r}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, not {fps!r}")
    if not start >= 0:
        raise ValueError(f"start must be >= 0, not {start!r}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be positive, not {duration!r}")
    if frames is not None and fps is not None and duration is not None:
        raise ValueError("frames and fps together fix the duration; do not pass duration as well")


def _warn_damage(path: str, stream: Any, est: tuple[float, float | None, int | None], stats: _Decoded,
                 whole: bool) -> None:
    """Warn (VideoWarning) when a read came up short of the container's estimate or skipped packets."""
    fps, duration, expected = est
    lost = 0
    if whole and stats.ended and expected:
        if stream.frames:                       # an exact count from the header
            lost = expected - stats.frames
        elif duration and fps and stats.last is not None:
            lost = round((duration - stats.last - 1.0 / fps) * fps)
        if lost <= max(2, 0.02 * expected):    # estimates are a frame or two off on healthy files
            lost = 0
    problems = []
    if lost:
        problems.append(f"decoded {stats.frames} of ~{expected} expected frames ({lost} lost)")
    if stats.errors:
        problems.append(f"skipped {stats.errors} packet(s) that failed to decode")
    if stats.broken and not lost:
        problems.append("reading stopped on an error")
    if problems:
        warnings.warn(f"{path}: {'; '.join(problems)}: truncated or damaged file",
                      VideoWarning, stacklevel=3)
