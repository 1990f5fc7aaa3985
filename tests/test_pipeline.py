"""One pipeline: a file read as a clip (``xvad.video.load_clip``) and the same file read as a stream
(``xvad.stream``) give the same frames, the same model inputs and the same window scores."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

import xvad
from xvad.models import CRNN
from xvad.stream import Detector
from xvad.stream.frames import End, Frame, FrameQueue
from xvad.stream.inference import FrameInput
from xvad.stream.source import Reader
from xvad.synthetic import make_clip, write_video
from xvad.video import load_clip, parse_source, read_frame_pairs

from conftest import SURV_FIGHT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pipeline") / "clip.mp4")
    write_video(path, make_clip(3, frames=60, size=48).frames, fps=15)   # sampled at 8 fps: uneven ticks
    return path


def stream_frames(path: str, config: dict, fps: float) -> list[Frame]:
    """Every frame the stream reader delivers for ``path``, with its picture and model input (made as the
    detector and the service make them: one :class:`FrameInput` for the stream)."""
    reader = Reader(parse_source(path), fps, FrameInput(config), FrameQueue(1000), live=False, keep_images=True,
                    pairs=True)
    reader.start()
    frames = []
    while True:
        item = reader.queue.get(timeout=30)
        if isinstance(item, End):
            break
        if isinstance(item, Frame):
            frames.append(item)
    reader.stop()
    return frames


def real_clip() -> str:
    path = os.path.join(SURV_FIGHT, "fight", "fi001.mp4")
    if not os.path.isfile(path):
        pytest.skip("../shared/data/surv-fight (real footage) is absent")
    return path


@pytest.mark.parametrize("crop", ["center", "motion"])
@pytest.mark.parametrize("which", ["synthetic", "real"])
def test_file_and_stream_give_the_same_frames_and_inputs(clip_file, which, crop):
    """Also with the motion crop: the stream chooses each frame's square as the clip loader does, from
    the first frame on."""
    path = clip_file if which == "synthetic" else real_clip()
    config = dict(CRNN("tiny", input="motion+flow", size=32, frames=8, crop=crop).config)
    rgb, partners, times = read_frame_pairs(path, fps=8)
    got = stream_frames(path, config, fps=8)
    assert len(got) == len(rgb) > 8
    np.testing.assert_array_equal(np.stack([f.image for f in got]), rgb)
    np.testing.assert_allclose([f.time for f in got], times, atol=1e-9)
    clip = load_clip(path, config, fps=8, frames=len(rgb))
    np.testing.assert_array_equal(clip.rgb, rgb)
    torch.testing.assert_close(torch.stack([f.tensor for f in got]), clip.tensor(), atol=0, rtol=0)
    if crop == "motion":
        assert [f.region for f in got] == clip.regions
        assert len(set(clip.regions)) > 1                    # the squares follow the motion
    else:
        assert all(f.region is None for f in got) and len(set(clip.regions)) == 1


def test_stream_window_scores_equal_clip_scores(clip_file):
    """Each window the detector scores equals the model run on the clip loaded from the window's start."""
    torch.manual_seed(0)
    model = CRNN("tiny", input="motion", temporal="pool", pooling="max", size=32, frames=8, fps=8.0).eval()
    with torch.no_grad():
        for p in (p for m in model.temporal_modules() for p in m.parameters()):
            p.mul_(8.0)
    results = list(Detector(model.set_precision("fp32"), stride=2, batch=3).run(clip_file))
    assert len(results) >= 5
    want = []
    with torch.no_grad():
        for r in results:
            start = (r.frame_index - 7) / 8.0          # the tick of the window's first frame
            x = load_clip(clip_file, model.config, start=start).tensor()
            want.append(float(model(x[None]).softmax(-1)[0, 1]))
    got = np.array([r.score for r in results])
    assert np.std(want) > 0.005                          # the comparison means something: scores vary
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_shipped_model_scores_a_real_stream_like_the_clip_reader():
    path = real_clip()
    model = xvad.load_model().set_precision("fp32")
    results = list(Detector(model, stride=4).run(path))
    fps, n = model.config["fps"], model.config["frames"]
    assert results
    for r in results[:3]:
        # the clip read from the start up to the window's last frame (the motion crop's squares are chosen
        # from the first frame on, as the stream's were), its last window
        x = load_clip(path, model.config, frames=r.frame_index + 1, fps=fps).tensor()[-n:]
        with torch.no_grad():
            want = float(model.predict_proba(x[None])[0, 1])
        assert abs(r.score - want) < 1e-4, (r.frame_index, r.score, want)


@pytest.mark.parametrize("crop", ["center", "motion"])
def test_still_frames_skip_the_backbone_without_changing_scores(tmp_path, crop):
    """Frames in which nothing moves give a motion+flow model an empty image whatever the scene (and
    whatever square the motion crop chose), so skipping the backbone on them (the feature of an empty
    image) changes no window score."""
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 255, (1, 40, 40, 3), dtype=np.uint8), 24, axis=0)   # one frame, held
    moving = make_clip(5, frames=24, size=40).frames
    path = str(tmp_path / "still_then_moving.mp4")
    write_video(path, np.concatenate([still, moving, still]), fps=8)
    torch.manual_seed(0)
    model = CRNN("tiny", input="motion+flow", temporal="pool", pooling="max", size=32, frames=8, fps=8.0,
                 crop=crop).eval()
    with torch.no_grad():
        for p in (p for m in model.temporal_modules() for p in m.parameters()):
            p.mul_(8.0)
    model.set_precision("fp32")
    plain = list(Detector(model, stride=1).run(path))
    det = Detector(model, stride=1, skip_still=True)
    skipped = list(det.run(path))
    assert [r.frame_index for r in skipped] == [r.frame_index for r in plain]
    np.testing.assert_allclose([r.score for r in skipped], [r.score for r in plain], atol=1e-5)
    scores = np.array([r.score for r in plain])
    assert scores.std() > 0.005
    # the held frames (each paired with its identical successor) never reached the backbone
    assert det.summary()["still_skipped"] >= 40 and Detector(model).process(path)["still_skipped"] == 0


def test_a_reader_that_is_behind_drops_frames_before_preparing_them(clip_file):
    """A live reader whose consumer takes nothing keeps its queue full and prepares only the frames
    that enter it: every other sampled frame is dropped before its model input is made (a service
    that falls behind does not spend its cores on frames it would throw away)."""
    prepared = []

    def transform(image, partner):
        prepared.append(1)
        return image

    queue = FrameQueue(3)
    reader = Reader(parse_source(clip_file), 8.0, transform, queue, live=True, pairs=True)
    reader.start()
    end = time.monotonic() + 30
    while reader.alive and time.monotonic() < end:
        time.sleep(0.05)
    items = []
    while (item := queue.get_nowait()) is not None:
        items.append(item)
    reader.stop()
    frames = [f for f in items if isinstance(f, Frame)]
    assert reader.stats.sampled > 10
    assert len(prepared) == len(frames) == 3
    assert reader.stats.dropped == reader.stats.sampled - 3
    assert [f.index for f in frames] == [0, 1, 2]     # the first ones, each prepared once


def test_each_segment_of_a_stream_chooses_its_squares_afresh(clip_file):
    """A file played again (as the demo's cameras do) starts a new segment: the motion crop's history
    starts over, so every lap gets the squares the clip loader gives the file from its start."""
    config = dict(CRNN("tiny", input="motion+flow", size=32, frames=8, crop="motion").config)
    first = load_clip(clip_file, config, fps=8, frames=len(read_frame_pairs(clip_file, fps=8)[0]))
    reader = Reader(parse_source(clip_file), 8, FrameInput(config), FrameQueue(1000), live=False, keep_images=True,
                    pairs=True, loop=True)
    reader.start()
    got: list = []
    while len(got) < 2 * len(first.regions):
        item = reader.queue.get(timeout=30)
        if isinstance(item, Frame):
            got.append(item.region)
    reader.stop()
    n = len(first.regions)
    assert got[:n] == first.regions and got[n:2 * n] == first.regions


def test_an_explained_window_is_the_window_the_stream_scored(clip_file):
    """The report and the console explain a window of a video read from its start (read_window): with the
    motion crop, its squares are chosen from the frames before it, as the stream chose them, so the model
    scores the explained input exactly as the detector scored the window."""
    from xvad.explain_video import read_window

    torch.manual_seed(0)
    model = CRNN("tiny", input="motion", temporal="pool", pooling="max", size=32, frames=8, fps=8.0,
                 crop="motion").eval().set_precision("fp32")
    with torch.no_grad():
        for p in (p for m in model.temporal_modules() for p in m.parameters()):
            p.mul_(8.0)
    results = list(Detector(model, stride=2).run(clip_file))
    later = [r for r in results if r.start_frame >= 8]
    assert len(later) >= 3
    ticks = [r.start_frame / 8.0 for r in later]          # the tick of each window's first frame
    with torch.no_grad():
        got = [float(model(read_window(model, clip_file, start=t).x[None]).softmax(-1)[0, 1]) for t in ticks]
        fresh = [float(model(load_clip(clip_file, model.config, start=t).tensor()[None]).softmax(-1)[0, 1])
                 for t in ticks]
    np.testing.assert_allclose(got, [r.score for r in later], atol=1e-5)
    assert max(abs(a - r.score) for a, r in zip(fresh, later)) > 1e-3    # without the frames before: other squares
