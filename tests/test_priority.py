"""Inside the service the shared inference thread comes first: camera readers and clip encoders run
at a lower priority, reports and explanations at the lowest. Checked with the kernel's own record of
each thread's nice value (/proc/self/task/TID/stat)."""
from __future__ import annotations

import glob
import os
import threading
import time

import numpy as np
import pytest

import xvad
from xvad.errors import ConfigError
from xvad.service.camera import CameraRun
from xvad.service.media import ClipRecorder, ReportWorker
from xvad.service.settings import CameraSettings, load_settings
from xvad.stream import priority

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
SAMPLES = os.path.join(os.path.dirname(xvad.__file__), "samples", "demo-footage")


def nice_of(tid: int) -> int:
    """Field 19 of /proc/self/task/TID/stat: the thread's nice value."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def wait_nice(thread: threading.Thread, want: int, seconds: float = 10.0) -> int:
    end = time.monotonic() + seconds
    while True:
        got = nice_of(thread.native_id)
        if got == want or time.monotonic() > end:
            return got
        time.sleep(0.01)


def test_lowering_one_thread_leaves_the_others():
    seen: dict[str, int] = {}
    go = threading.Event()

    def work() -> None:
        assert priority.lower_this_thread(12)
        assert priority.lower_this_thread(5)        # never raised back
        seen["nice"] = nice_of(threading.get_native_id())
        go.wait(10)

    mine = nice_of(threading.get_native_id())
    t = threading.Thread(target=work)
    t.start()
    try:
        while "nice" not in seen:
            time.sleep(0.01)
        assert seen["nice"] == max(12, mine)
        assert nice_of(threading.get_native_id()) == mine
    finally:
        go.set()
        t.join()


def test_readers_encoders_and_reports_run_behind_inference(tmp_path):
    mine = nice_of(threading.get_native_id())
    clip = sorted(glob.glob(os.path.join(SAMPLES, "*", "*.mp4")))[0]
    cam = CameraRun(CameraSettings(name="door", source=clip, realtime=False), xvad.load_model(None), live=False)
    cam.start()
    try:
        assert wait_nice(cam.reader._thread, priority.READER) == priority.READER
    finally:
        cam.stop()
    frames = [(i / 8, np.zeros((32, 48, 3), np.uint8)) for i in range(4)]
    rec = ClipRecorder(str(tmp_path / "clip"), 8.0, frames, post_roll=0.0)
    try:
        assert wait_nice(rec._thread, priority.READER) == priority.READER
    finally:
        rec.close()
    reports = ReportWorker(lambda *a: None)
    try:
        assert wait_nice(reports._thread, priority.BACKGROUND) == priority.BACKGROUND
    finally:
        reports.close(5)
    assert nice_of(threading.get_native_id()) == mine     # the caller (here: the test) is untouched


def test_inference_threads_must_be_positive(tmp_path):
    cfg = tmp_path / "xvad.yaml"
    cfg.write_text("data: d\ninference_threads: 0\ncameras: []\n")
    with pytest.raises(ConfigError) as info:
        load_settings(str(cfg))
    assert "inference_threads" in str(info.value) and "\n" not in str(info.value)
