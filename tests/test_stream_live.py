"""Live sources on loopback and killed runs.

An MPEG-TS "camera" is served over HTTP from 127.0.0.1 (a small socketserver thread that paces the
bytes like a live stream); the test kills it mid-stream, brings it back on the same port and checks
that detection resumes, the gap is logged and the events file stays intact. A CLI run in a
subprocess is stopped with SIGTERM (clean stop) and SIGKILL (nothing decided is lost).
Every wait is bounded.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from xvad.checkpoint import save_model
from xvad.models import CRNN
from xvad.stream import Detector, StreamError
from xvad.synthetic import make_clip, write_video

FPS = 8



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model() -> CRNN:
    torch.manual_seed(0)
    return CRNN("tiny", size=32, frames=8, fps=FPS, hidden=32).eval().set_precision("fp32")


def mpegts_bytes(frames: np.ndarray, fps: int = FPS) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size = fps
        s.options = {"preset": "veryfast", "tune": "zerolatency"}
        for i, image in enumerate(frames):
            f = av.VideoFrame.from_ndarray(image, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            out.mux(s.encode(f))
        out.mux(s.encode())
    return buf.getvalue()


class LiveCamera:
    """Serves ``data`` (MPEG-TS) over HTTP on 127.0.0.1 at ``speed`` times its real rate, from the
    start for each client, with no length (like a live stream). ``kill()`` cuts every connection and
    closes the port; ``start()`` opens it again on the same port."""

    def __init__(self, data: bytes, seconds: float, speed: float = 2.0) -> None:
        self.data, self.seconds, self.speed = data, seconds, speed
        self.port = 0
        self.server = None
        self.clients = 0
        self._conns: set = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        camera = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.connection.settimeout(5)
                while self.rfile.readline().strip():      # request line and headers
                    pass
                with camera._lock:
                    camera._conns.add(self.connection)
                    camera.clients += 1
                try:
                    self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
                    chunks = max(1, int(camera.seconds * 20))
                    size = len(camera.data) // chunks + 1
                    pause = camera.seconds / chunks / camera.speed
                    for i in range(chunks):
                        if self.server.killed:
                            return
                        self.wfile.write(camera.data[i * size:(i + 1) * size])
                        time.sleep(pause)
                except OSError:
                    pass
                finally:
                    with camera._lock:
                        camera._conns.discard(self.connection)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            killed = False

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.ts"

    def kill(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.killed = True
        server.shutdown()
        server.server_close()
        with self._lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def stream_bytes():
    clip = make_clip(3, frames=40 * FPS, size=32)
    return mpegts_bytes(clip.frames), 40.0


def read_events(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return [json.loads(line) for line in lines]   # every line complete and valid


def test_http_stream_reconnects_after_the_server_dies(stream_bytes, tmp_path):
    data, seconds = stream_bytes
    camera = LiveCamera(data, seconds, speed=2.0)
    camera.start()
    events = tmp_path / "events.jsonl"
    det = Detector(tiny_model(), stride=2, events=events, reconnect=(0.2, 0.8), give_up_after=20, timeout=5)
    assert det.live is None
    watchdog = threading.Timer(50, det.stop)        # never hang the suite
    watchdog.start()
    before, after = [], []
    killed = restarted = None
    try:
        for r in det.run(camera.url):
            if killed is None:
                before.append(r)
                if len(before) >= 6:
                    camera.kill()
                    killed = time.monotonic()

                    def restart():
                        nonlocal restarted
                        camera.start()
                        restarted = time.monotonic()

                    threading.Timer(1.0, restart).start()
            elif restarted is not None and r.frame_index > before[-1].frame_index:
                after.append(r)
                if len(after) >= 5:
                    det.stop()
    finally:
        watchdog.cancel()
        camera.kill()
    assert len(before) >= 6 and len(after) >= 5, (len(before), len(after))
    assert camera.clients >= 2
    # windows after the gap use frames after it only, and time runs on across the gap
    assert after[0].start_frame > before[-1].frame_index
    assert after[0].time > before[-1].time + 0.5
    ev = read_events(events)
    types = [e["type"] for e in ev]
    assert types[0] == "start" and types[-1] == "stop" and ev[-1]["reason"] == "stopped"
    assert "disconnect" in types and "gap" in types and types.index("disconnect") < types.index("gap")
    gap = ev[types.index("gap")]
    assert gap["reconnected"] is True and gap["seconds"] >= 0.5 and gap["attempts"] >= 1
    assert gap["began"] <= after[0].start_time
    s = det.summary()
    assert s["gaps"] == 1 and s["reconnects"] >= 1 and s["windows"] >= len(before) + len(after)
    assert s["end"] == "stopped"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def push_rtsp(url: str, frames: np.ndarray, fps: int = FPS) -> None:
    """Publish ``frames`` to an RTSP server at ``url`` (RTP over TCP), paced at ``fps``, then hang up."""
    with av.open(url, "w", format="rtsp", options={"rtsp_transport": "tcp"}) as out:
        s = out.add_stream("libx264", rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size = fps
        s.options = {"preset": "veryfast", "tune": "zerolatency"}
        t0 = time.monotonic()
        for i, image in enumerate(frames):
            f = av.VideoFrame.from_ndarray(image, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            out.mux(s.encode(f))
            time.sleep(max(0.0, t0 + (i + 1) / fps - time.monotonic()))
        out.mux(s.encode())


def test_rtsp_publisher_hangs_up_and_comes_back(tmp_path):
    """The detector listens as an RTSP server (``--source-option rtsp_flags=listen``); an encoder
    publishes to it over RTSP on loopback, hangs up, and publishes again: detection resumes."""
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    frames = make_clip(4, frames=3 * FPS, size=32).frames
    events = tmp_path / "events.jsonl"
    det = Detector(tiny_model(), stride=2, events=events, reconnect=(0.1, 0.2), timeout=3,
                   source_options={"rtsp_flags": "listen"})
    errors = []

    def publish_twice():
        try:
            time.sleep(0.5)
            push_rtsp(url, frames)
            time.sleep(1.0)
            push_rtsp(url, frames)
            time.sleep(1.0)
        except Exception as exc:   # reported by the assertions below
            errors.append(exc)
        finally:
            det.stop()

    publisher = threading.Thread(target=publish_twice, daemon=True)
    watchdog = threading.Timer(40, det.stop)
    watchdog.start()
    try:
        publisher.start()
        results = list(det.run(url))
    finally:
        watchdog.cancel()
    publisher.join(10)
    assert not errors, errors
    ev = read_events(events)
    types = [e["type"] for e in ev]
    assert types[0] == "start" and types[-1] == "stop"
    assert "disconnect" in types and "gap" in types
    gap = ev[types.index("gap")]
    assert gap["reconnected"] is True
    frames_after = [r for r in results if r.start_time > gap["began"]]
    # each publication is 24 frames; most of both arrive (the first keyframe may be missed)
    assert det.summary()["frames"] >= 2 * (len(frames) - FPS), det.summary()
    assert len(frames_after) >= 3 and len(results) > len(frames_after)


def test_live_source_gone_for_good_gives_up(stream_bytes, tmp_path):
    data, seconds = stream_bytes
    camera = LiveCamera(data, seconds, speed=2.0)
    camera.start()
    events = tmp_path / "events.jsonl"
    det = Detector(tiny_model(), stride=2, events=events, reconnect=(0.2, 0.4), give_up_after=1.5, timeout=3)
    n = 0
    t = None
    with pytest.raises(StreamError) as info:
        for _ in det.run(camera.url):
            n += 1
            if n == 3:
                camera.kill()
                t = time.monotonic()
    assert t is not None and time.monotonic() - t < 15
    assert "\n" not in str(info.value) and "not back" in str(info.value)
    ev = read_events(events)
    gap = [e for e in ev if e["type"] == "gap"]
    assert len(gap) == 1 and gap[0]["reconnected"] is False
    assert ev[-1]["type"] == "stop" and ev[-1]["reason"] == "gave_up"


def test_live_stream_with_reconnect_off_just_ends(stream_bytes, tmp_path):
    data, _ = stream_bytes
    camera = LiveCamera(data, 2.0, speed=4.0)        # serves the first 2 s worth of bytes, then hangs up
    camera.data = data[: len(data) * 2 // 40]
    camera.start()
    try:
        det = Detector(tiny_model(), stride=2, reconnect=None, timeout=5)
        results = list(det.run(camera.url))
    finally:
        camera.kill()
    s = det.summary()
    assert s["end"] == "end" and s["gaps"] == 0 and s["frames"] > 0
    assert s["frames"] + s["dropped"] >= 12 and len(results) <= s["frames"]


def test_udp_stream_pause_is_a_gap(stream_bytes, tmp_path):
    """MPEG-TS over UDP to 127.0.0.1: a sender that goes quiet for 2 s is a disconnection (read
    timeout), and detection picks up again when packets come back."""
    data, seconds = stream_bytes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    quiet, done = threading.Event(), threading.Event()

    def sender():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            size = 7 * 188
            n = len(data) // size + 1
            i = 0
            while not done.is_set() and i < 4 * n:
                if quiet.is_set():
                    time.sleep(0.01)
                    continue
                sock.sendto(data[(i % n) * size:(i % n + 1) * size], ("127.0.0.1", port))
                i += 1
                time.sleep(seconds / n / 2)               # twice the real rate

    threading.Thread(target=sender, daemon=True).start()
    events = tmp_path / "udp.jsonl"
    det = Detector(tiny_model(), stride=2, events=events, reconnect=(0.2, 0.5), give_up_after=20, timeout=1.0)
    watchdog = threading.Timer(40, det.stop)
    watchdog.start()
    before, after = [], []
    try:
        for r in det.run(f"udp://127.0.0.1:{port}"):
            if not quiet.is_set() and not after and len(before) < 5:
                before.append(r)
                if len(before) == 5:
                    quiet.set()
                    threading.Timer(2.0, quiet.clear).start()
            elif det.summary()["gaps"]:
                after.append(r)
                if len(after) >= 5:
                    det.stop()
    finally:
        watchdog.cancel()
        done.set()
    assert len(before) == 5 and len(after) >= 5
    assert after[0].start_frame > before[-1].frame_index and after[0].time > before[-1].time + 1.0
    types = [e["type"] for e in read_events(events)]
    assert types[0] == "start" and types[-1] == "stop"
    assert types.count("disconnect") == 1 and types.count("gap") == 1


# -- killed runs ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("killed")
    video = str(root / "long.mp4")
    write_video(video, make_clip(4, frames=60 * FPS, size=32).frames, fps=FPS)
    ckpt = str(root / "tiny.pt")
    save_model(tiny_model(), ckpt)
    return root, video, ckpt


def start_cli(root, video, ckpt, name):
    events, out = root / f"{name}.jsonl", root / f"{name}.mp4"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "xvad.stream.cli", video, "--checkpoint", ckpt, "--events", str(events),
         "--out", str(out), "--realtime", "--live", "no", "--threshold", "0", "--alert", "1/1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return proc, events, out


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def has_event(path, kind, count=1):
    try:
        with open(path) as f:
            return sum(f'"type":"{kind}"' in line for line in f) >= count
    except OSError:
        return False


def test_sigterm_stops_cleanly_and_sigkill_loses_nothing_decided(long_run):
    """Two CLI runs side by side: one gets SIGTERM (a clean stop: the alert is closed, the video
    finished and renamed), the other SIGKILL (every line written is whole, and the fragmented MP4
    written so far plays)."""
    root, video, ckpt = long_run
    term, term_events, term_out = start_cli(root, video, ckpt, "term")
    kill, kill_events, kill_out = start_cli(root, video, ckpt, "kill")
    try:
        for proc, events in ((term, term_events), (kill, kill_events)):
            assert wait_for(lambda events=events: has_event(events, "alert_start"), 60), \
                proc.stderr.read().decode() if proc.poll() is not None else "no alert within 60 s"
        time.sleep(3.0)                                # a couple of video fragments
        term.send_signal(signal.SIGTERM)
        kill.kill()
        rc = term.wait(30)
        kill.wait(30)
    finally:
        for proc in (term, kill):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    assert rc == 128 + signal.SIGTERM, term.stderr.read().decode()
    ev = read_events(term_events)
    assert [e["type"] for e in ev] == ["start", "alert_start", "alert_end", "stop"]
    assert ev[2]["reason"] == "SIGTERM" and ev[3]["reason"] == "SIGTERM"
    assert not os.path.exists(str(term_out) + ".part")
    with av.open(str(term_out)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == ev[3]["frames"] and n >= 8

    ev = read_events(kill_events)                     # every line written is whole
    assert [e["type"] for e in ev] == ["start", "alert_start"]
    part = str(kill_out) + ".part"
    assert os.path.exists(part)
    with av.open(part) as c:                          # fragmented MP4: what was written plays
        n = sum(1 for _ in c.decode(video=0))
    assert n >= 8
