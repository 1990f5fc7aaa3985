"""The loopback camera of the tests and benchmarks sends each frame at its own time, as a camera does
(before, it spread the bytes evenly over the clip's length: small frames came in bursts, ahead
of their time)."""
from __future__ import annotations

import io
import socket
import time

import av
import numpy as np

from cameras import LiveCamera, mpegts_bytes, ts_frames

FPS = 8


def _clip() -> np.ndarray:
    """A still scene for three seconds (tiny frames), then a busy second (noise: big frames)."""
    rng = np.random.default_rng(0)
    busy = rng.integers(0, 255, (FPS, 96, 128, 3), dtype=np.uint8)
    return np.concatenate([np.repeat(busy[:1], 3 * FPS, axis=0), busy])


def test_ts_frames_cuts_one_piece_per_frame_at_its_time():
    frames = _clip()
    data = mpegts_bytes(frames, FPS)
    pieces = ts_frames(data)
    assert b"".join(p for _, p in pieces) == data
    assert len(pieces) == len(frames)
    assert np.allclose([t for t, _ in pieces], np.arange(len(frames)) / FPS)
    for k in (1, 5, 20):       # the first k pieces hold exactly the first k frames
        with av.open(io.BytesIO(b"".join(p for _, p in pieces[:k])), format="mpegts") as c:
            assert sum(1 for _ in c.decode(video=0)) == k


def test_live_camera_never_sends_a_frame_before_its_time():
    frames = _clip()
    data = mpegts_bytes(frames, FPS)
    sizes = np.cumsum([len(p) for _, p in ts_frames(data)])
    cam = LiveCamera(data, len(frames) / FPS, speed=1.0)
    cam.start()
    try:
        with socket.create_connection(("127.0.0.1", cam.port), timeout=5) as s:
            s.sendall(b"GET /live.ts HTTP/1.0\r\n\r\n")
            got, head, t0 = 0, b"", None
            while t0 is None:                       # the header comes with the first frame
                head += s.recv(65536)
                if b"\r\n\r\n" in head:
                    t0 = time.monotonic()
                    got = len(head.split(b"\r\n\r\n", 1)[1])
            checks = 0
            while got < len(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
                due = int((time.monotonic() - t0) * FPS) + 2     # frames due by now, and one of slack
                assert got <= sizes[min(due, len(sizes)) - 1]
                checks += 1
        assert got == len(data) and checks > 10
        assert time.monotonic() - t0 >= (len(frames) - 2) / FPS
    finally:
        cam.kill()


def test_laps_run_on_one_clock():
    """A clip played three times over is one stream: frame times go on across the laps (a stream
    whose clock restarted would make the reader start a new segment at each lap)."""
    frames = _clip()[:FPS]
    pieces = ts_frames(mpegts_bytes(frames, FPS, laps=3))
    assert len(pieces) == 3 * len(frames)
    assert np.allclose([t for t, _ in pieces], np.arange(3 * len(frames)) / FPS)
