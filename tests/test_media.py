"""An alert's clip recorder: frames are encoded in a thread of the clip's own, so detection never
waits for the encoder, and a failing encoder gives the clip up without stopping anything."""
from __future__ import annotations

import os
import threading
from unittest import mock

import numpy as np

from xvad.service.media import ENCODE_QUEUE, ClipRecorder
from xvad.video import read_frames


def frames(n: int) -> list[tuple[float, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(i / 8, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for i in range(n)]


def test_clip_holds_its_pre_roll_and_every_frame_added(tmp_path):
    """A pre-roll longer than the encoder's queue does not block the caller; the finished file holds
    every frame given, in order (read back with the clip reader)."""
    pre, live = frames(ENCODE_QUEUE + 20), frames(2 * ENCODE_QUEUE + 30)[ENCODE_QUEUE + 20:]
    rec = ClipRecorder(str(tmp_path), 8.0, pre, post_roll=1.0)
    for t, image in live:
        assert rec.add(t, image) is False
    path = rec.close()
    assert path == os.path.join(str(tmp_path), "clip.mp4") and rec.written == len(pre) + len(live)
    got, times = read_frames(path)
    assert len(got) == len(pre) + len(live) and got.shape[1:] == (48, 64, 3)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]


def test_a_failing_encoder_gives_the_clip_up_without_blocking(tmp_path):
    rec = ClipRecorder(str(tmp_path), 8.0, [], post_roll=1.0)
    with mock.patch.object(rec._writer, "write", side_effect=RuntimeError("encoder broke")):
        done = threading.Event()

        def feed() -> None:
            for t, image in frames(4 * ENCODE_QUEUE):
                rec.add(t, image)
            done.set()
        threading.Thread(target=feed, daemon=True).start()
        assert done.wait(20), "adding frames blocked on a dead encoder"
        assert rec.error == "encoder broke"
        assert rec.close() is None
    assert not [f for f in os.listdir(tmp_path) if f.endswith((".part", ".mp4"))]
    assert rec.add(99.0, frames(1)[0][1]) is True       # after the end: ignored, never queued


def test_clips_are_encoded_fast_on_one_thread_each(tmp_path):
    """Many cameras in alert encode many clips at once: each on one x264 thread at the "ultrafast"
    preset, as the encoder's own settings record in the file (x264's SEI options: ultrafast is
    subme=0, no CABAC); a plain VideoWriter keeps x264's defaults (medium: subme=7, a thread pool)."""
    import re

    from xvad.render import VideoWriter

    rng = np.random.default_rng(0)
    big = [(i / 8, rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)) for i in range(3)]

    def options(path: str) -> dict[str, str]:
        with open(path, "rb") as f:
            found = re.search(rb"x264 - core .*? options: ([^\x00]+)", f.read())
        assert found is not None, f"{path}: no x264 options in the file"
        return dict(x.split("=", 1) for x in found.group(1).decode().split() if "=" in x)

    rec = ClipRecorder(str(tmp_path / "clip"), 8.0, big, post_roll=0.0)
    clip = options(rec.close())
    assert (clip["subme"], clip["cabac"], clip["threads"]) == ("0", "0", "1")
    plain = VideoWriter(str(tmp_path / "plain.mp4"), 8.0)
    for _, image in big:
        plain.write(image)
    plain.close()
    default = options(str(tmp_path / "plain.mp4"))
    assert default["subme"] == "7"
    assert int(default["threads"]) > 1 or os.cpu_count() == 1


def test_clips_are_finished_in_order_off_the_callers_thread():
    """The inference thread hands a finished alert's clip over without waiting for it: the finisher
    runs the jobs in its own thread, in order, goes on after one fails, and close() waits for them."""
    from xvad.service.media import ClipFinisher

    gate, done, threads = threading.Event(), [], set()

    def finish(name: str) -> None:
        threads.add(threading.get_ident())
        if name == "first":
            gate.wait(10)
        if name == "broken":
            raise RuntimeError("encoder broke")
        done.append(name)

    finisher = ClipFinisher(finish)
    for name in ("first", "broken", "second", "third"):
        finisher.submit(name)              # returns at once although "first" is still waiting
    assert done == [] and finisher.pending >= 2
    gate.set()
    finisher.close(10)
    assert done == ["first", "second", "third"]
    assert threads and threading.get_ident() not in threads
