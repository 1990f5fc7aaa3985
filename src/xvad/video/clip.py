"""Reading clips from files and URLs: probe, sample frames uniformly or at a rate, and the one clip
loader (:func:`load_clip`) that training, prediction, explanation and the report all use.

Frames are decoded in order and only the ones a caller asked for are kept, so long files never sit in
memory. Damaged files give back what decodes (with a `VideoWarning`); unreadable ones raise `VideoError`.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, VideoError, VideoWarning
from .crop import MOTION_HISTORY, Region, input_regions, mirrored
from .decode import EPS, RGB, DecodeStats, decode, decode_from, errors, estimates, open_path, origin, rotation
from .images import flip_images, model_images, needs_partner
from .sample import Nearest, ticks, uniform_targets, with_partners
from .tensor import preprocess_as


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


@dataclass(frozen=True)
class View:
    """One view of a clip: the plain clip, or an augmented copy (mirror, temporal jitter)."""

    flip: bool = False
    jitter: int = 0  # 0: sample the whole clip; k > 0: a random sub-window drawn with seed k

    @property
    def name(self) -> str:
        return ("flip" if self.flip else "") + (f"jitter{self.jitter}" if self.jitter else "") or "plain"


@dataclass
class Clip:
    """Sampled frames of a video as a model with ``config`` takes them."""

    rgb: np.ndarray           # uint8 [T, H, W, 3]: what a person is shown
    images: np.ndarray        # uint8 [T, H, W, 3 * streams]: what the backbone sees (rgb for RGB models)
    times: np.ndarray         # seconds from the video's start [T]
    config: dict
    regions: list[Region] = field(default_factory=list)   # the part of each frame the model's input shows

    def tensor(self) -> torch.Tensor:
        """The normalised ``[T, 3 * streams, size, size]`` model input."""
        return preprocess_as(self.images, self.config)


def probe(path: str) -> VideoInfo:
    """Size, frame rate, frame count, duration and rotation of a video; decodes only the first frame."""
    path = os.fspath(path)
    with errors(path):
        container, stream = open_path(path)
        with container:
            fps, duration, frames = estimates(container, stream)
            first = next(decode(container, stream, DecodeStats(), origin(stream)), None)
            if first is None:
                raise VideoError(f"{path}: no decodable video frames")
            turn = rotation(first[0], stream)
            width, height = first[0].width, first[0].height
    if turn in (90, 270):
        width, height = height, width
    return VideoInfo(path, width, height, fps, frames, duration, turn)


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
    images, partners, times = _read(path, frames, fps, start, duration, pairs=True)
    assert partners is not None
    return images, partners, times


def read_input(path: str, config: dict, frames: int | None = None, fps: float | None = None,
               start: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames a model with ``config`` is given: ``(rgb frames, backbone images, times)``.

    The backbone sees :func:`~xvad.video.images.model_images` (uint8 ``[T, H, W, 3 * streams]``; the
    RGB frames themselves for an RGB model whose frames are shrunk last), while a person is shown
    the RGB frames.
    """
    rgb, images, times, _ = _read_input(path, config, frames, fps, start, duration)
    return rgb, images, times


def _read_input(path: str, config: dict, frames: int | None, fps: float | None, start: float,
                duration: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Region]]:
    """:func:`read_input` and the region of each frame the model's input shows
    (:func:`~xvad.video.crop.input_regions`: with the motion crop, chosen from the first frame read on)."""
    partners = None
    if needs_partner(config):
        rgb, partners, times = read_frame_pairs(path, frames, fps, start, duration)
    else:
        rgb, times = read_frames(path, frames, fps, start, duration)
    regions = input_regions(rgb, partners, config)
    return rgb, model_images(rgb, partners, config, regions), times, regions


def load_clip(path: str, config: dict, *, start: float = 0.0, duration: float | None = None,
              frames: int | None = None, fps: float | None = None, view: View = View(),
              as_streamed: bool = False) -> Clip:
    """The clip a model with ``config`` sees in ``path``: ``frames`` (default: the model's) at ``fps``
    (default: the model's rate, else spread uniformly) from ``start``, for ``view`` of the clip
    (a jittered view samples a random sub-span, a flipped one is mirrored). With ``as_streamed`` and a
    rate, the motion crop's squares are those a stream of the file from its start chose: they are
    chosen from up to ``MOTION_HISTORY - 1`` frames before ``start`` on."""
    n = int(frames or config["frames"])
    fps = fps or config.get("fps")
    if as_streamed and fps and config.get("crop") == "motion" and not view.jitter:
        before = min(MOTION_HISTORY - 1, int(math.floor(start * float(fps) + EPS)))
        if before:
            c = load_clip(path, config, start=start - before / float(fps), frames=n + before, fps=fps, view=view)
            return Clip(c.rgb[before:], c.images[before:], c.times[before:], config, c.regions[before:])
    if view.jitter:
        info = probe(path)
        if info.duration:
            rng = np.random.default_rng(view.jitter)
            duration = info.duration * rng.uniform(0.75, 0.95)
            start = rng.uniform(0, info.duration - duration)
    rgb, images, times, regions = _read_input(path, config, frames=n, fps=fps, start=start, duration=duration)
    if view.flip:
        images = flip_images(images, config)
        rgb = images if rgb is images else np.ascontiguousarray(rgb[..., ::-1, :])
        regions = [mirrored(r, rgb.shape[2]) for r in regions]
    return Clip(rgb, images, times, config, regions)


def read_clip(path: str, model: Any, start: float = 0.0) -> torch.Tensor:
    """The [T, 3 * streams, size, size] input ``model`` expects for the clip at ``path`` (from ``start`` seconds),
    with frame count, rate, input kind, size, crop and normalisation all taken from ``model.config``."""
    return load_clip(path, model.config, start=start).tensor()


def frame_tensor(image: np.ndarray, partner: np.ndarray | None, config: dict,
                 region: Region | None = None) -> torch.Tensor:
    """One frame (and its motion partner) as the model input ``[3 * streams, size, size]``: what
    :meth:`Clip.tensor` gives for that frame, for readers that get frames one at a time; ``region``: the
    frame's square under the motion crop (a stream's :class:`~xvad.video.crop.MotionCrop` chooses it)."""
    regions = None if region is None else [region]
    return preprocess_as(model_images(image[None], None if partner is None else partner[None], config, regions),
                         config)[0]


def iter_frames(path: str, fps: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Stream (upright RGB uint8 frame, timestamp in seconds) from a file or URL (rtsp/http), optionally
    resampled to ``fps`` by taking the frame nearest each tick; opening errors are raised right away."""
    path = os.fspath(path)
    if fps is not None and not fps > 0:
        raise ConfigError(f"fps must be positive, not {fps}")
    container, stream = open_path(path)
    return _iterate(path, container, stream, fps)


def _iterate(path: str, container: Any, stream: Any, fps: float | None) -> Iterator[tuple[np.ndarray, float]]:
    """The generator behind `iter_frames`; closes the container when done or abandoned."""
    stats = DecodeStats()
    try:
        with errors(path):
            est = estimates(container, stream)
            rgb = RGB(stream)
            sampler = None if fps is None else Nearest(ticks(fps))
            for frame, t in decode(container, stream, stats, origin(stream)):
                for picked, pt in ([(frame, t)] if sampler is None else sampler.push(frame, t)):
                    yield rgb(picked), pt
    finally:
        container.close()
    if stats.frames == 0:
        raise VideoError(f"{path}: no decodable video frames")
    _warn_damage(path, stream, est, stats, whole=True)


def _read(path: str, frames: int | None, fps: float | None, start: float, duration: float | None,
          pairs: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The body of `read_frames` and `read_frame_pairs`."""
    path = os.fspath(path)
    _check_window(frames, fps, start, duration)
    end = math.inf if duration is None else start + duration
    with errors(path):
        sampler: Nearest | None = None
        if frames is not None and fps is None:
            sampler = Nearest(uniform_targets(path, frames, start, end))   # a fast demux-only first pass
        elif fps is not None:
            sampler = Nearest(takewhile(lambda t: t < end - EPS, ticks(fps, start, frames)))
        container, stream = open_path(path)
        with container:
            est = estimates(container, stream)
            stats = DecodeStats()
            decoded: Iterator[tuple[Any, float]] = decode_from(container, stream, stats, start)
            rgb = RGB(stream)
            convert = (lambda pair: (rgb(pair[0]), rgb(pair[1]))) if pairs else rgb
            if pairs:
                decoded = with_partners(decoded)
            out: list[tuple[Any, float]] = []
            for item, t in decoded:
                if sampler is None:                       # every frame of [start, end)
                    if t >= end - EPS:
                        break
                    if t >= start - EPS:
                        out.append((convert(item), t))
                    continue
                out.extend((convert(picked), pt) for picked, pt in sampler.push(item, t))
                if sampler.done:
                    break
            if sampler is not None and frames is not None:
                out.extend((convert(picked), pt) for picked, pt in sampler.pad())
            whole = start <= 0 and duration is None
            if whole and frames is not None and fps is None:
                for _ in decoded:   # the last target is the last frame: finish reading to spot a short file
                    pass
            if stats.frames == 0:
                raise VideoError(f"{path}: no decodable video frames")
            step = 1.0 / est[0] if est[0] else 0.0
            if not out or (stats.last is not None and start > stats.last + step + EPS):
                raise VideoError(f"{path}: no frames in the requested range from {start:g}s "
                                 f"(the video ends at {stats.last:.3f}s)")
            _warn_damage(path, stream, est, stats, whole)
    images, times = zip(*out)
    times_a = np.array(times, dtype=np.float64)
    if pairs:
        return np.stack([a for a, _ in images]), np.stack([b for _, b in images]), times_a
    return np.stack(images), None, times_a


def _check_window(frames: int | None, fps: float | None, start: float, duration: float | None) -> None:
    """Reject argument combinations that cannot mean anything."""
    if frames is not None and (int(frames) != frames or frames < 1):
        raise ConfigError(f"frames must be a positive integer, not {frames!r}")
    if fps is not None and not fps > 0:
        raise ConfigError(f"fps must be positive, not {fps!r}")
    if not start >= 0:
        raise ConfigError(f"start must be >= 0, not {start!r}")
    if duration is not None and not duration > 0:
        raise ConfigError(f"duration must be positive, not {duration!r}")
    if frames is not None and fps is not None and duration is not None:
        raise ConfigError("frames and fps together fix the duration; do not pass duration as well")


def _warn_damage(path: str, stream: Any, est: tuple[float, float | None, int | None], stats: DecodeStats,
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
        warnings.warn(f"{path}: {'; '.join(problems)}: truncated or damaged file", VideoWarning, stacklevel=3)
