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


def mpegts_bytes(frames: np.ndarray, fps: int = FPS) -> bytes:
    """``frames`` (uint8 RGB) as an H.264 MPEG-TS stream with a keyframe every second."""
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
    start for each client, with no length (like a live stream); ``loop`` plays it again and again, as
    a camera never ends. ``kill()`` cuts every connection and closes the port; ``start()`` opens it
    again on the same port."""

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
                    chunks = max(1, int(camera.seconds * 20))
                    size = len(camera.data) // chunks + 1
                    pause = camera.seconds / chunks / camera.speed
                    while True:
                        for i in range(chunks):
                            if self.server.killed:
                                return
                            self.wfile.write(camera.data[i * size:(i + 1) * size])
                            time.sleep(pause)
                        if not camera.loop:
                            return
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


