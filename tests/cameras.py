"""Cameras on loopback for the tests and benchmarks: MPEG-TS served over HTTP from 127.0.0.1 like a
live stream (paced at its real rate, or faster), which a test can kill and bring back."""
from __future__ import annotations

import io
import socket
import socketserver
import threading
import time
from fractions import Fraction

import av
import numpy as np

FPS = 8


def mpegts_bytes(frames: np.ndarray, fps: int = FPS, laps: int = 1) -> bytes:
    """``frames`` (uint8 RGB) as an H.264 MPEG-TS stream with a keyframe every second; ``laps`` times
    over, on one clock (a camera watching the same scene again, not a stream that restarts)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size = fps
        s.options = {"preset": "veryfast", "tune": "zerolatency"}
        for i in range(laps * len(frames)):
            f = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            out.mux(s.encode(f))
        out.mux(s.encode())
    return buf.getvalue()


TS_PACKET = 188
PES_CLOCK = 90_000     # MPEG-TS timestamps count 90 kHz ticks


def _pes_time(payload: bytes) -> int | None:
    """The DTS (else PTS) of a PES header at the start of ``payload``, in 90 kHz ticks; None if the
    payload does not start a video PES packet or carries no timestamp."""
    if len(payload) < 14 or payload[:3] != b"\x00\x00\x01" or not 0xE0 <= payload[3] <= 0xEF:
        return None
    flags = payload[7] >> 6
    if flags == 0:
        return None
    at = 14 if flags == 3 else 9        # DTS after PTS when both are present
    b = payload[at: at + 5]
    if len(b) < 5:
        return None
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def ts_frames(data: bytes) -> list[tuple[float, bytes]]:
    """MPEG-TS ``data`` cut into one piece per video frame, each with its decode time in seconds from
    the first frame: a piece runs from a video PES start to the next (tables and padding ride along),
    so serving each piece at its time sends the frames as a camera does, one at a time as they are made.
    Data with no timestamped video PES is one piece at time 0."""
    starts: list[tuple[int, int]] = []
    for at in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
        pkt = data[at: at + TS_PACKET]
        if pkt[0] != 0x47 or not pkt[1] & 0x40:         # sync byte; payload unit start indicator
            continue
        control = (pkt[3] >> 4) & 3
        if not control & 1:                             # no payload
            continue
        offset = 4 + (1 + pkt[4] if control & 2 else 0)   # past the adaptation field
        ticks = _pes_time(pkt[offset:])
        if ticks is not None:
            starts.append((at, ticks))
    if not starts:
        return [(0.0, data)]
    first = starts[0][1]
    cuts = [0] + [at for at, _ in starts[1:]] + [len(data)]
    times = [(t - first) / PES_CLOCK for _, t in starts]
    return [(times[i], data[cuts[i]: cuts[i + 1]]) for i in range(len(starts))]


class LiveCamera:
    """Serves ``data`` (MPEG-TS, ``seconds`` long) over HTTP on 127.0.0.1 at ``speed`` times its real
    rate, each frame at its own time (:func:`ts_frames`), from the start for each client, with no
    length (like a live stream); ``loop`` plays it again and again, as a camera never ends.
    ``kill()`` cuts every connection and closes the port; ``start()`` opens it again on the same port."""

    def __init__(self, data: bytes, seconds: float, speed: float = 2.0, loop: bool = False) -> None:
        self.data, self.seconds, self.speed, self.loop = data, seconds, speed, loop
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
                    pieces = ts_frames(camera.data)
                    start, lap = time.monotonic(), 0
                    while True:
                        for t, piece in pieces:   # each frame when its time comes, as a camera sends it
                            if self.server.killed:
                                return
                            due = start + (lap * camera.seconds + t) / camera.speed
                            time.sleep(max(0.0, due - time.monotonic()))
                            self.wfile.write(piece)
                        if not camera.loop:
                            return
                        lap += 1
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


