"""The one H.264 writer for every video the package writes (overlay clips, synthetic clips, the
annotated stream): MP4, yuv420p, written to ``<path>.part`` and moved to ``<path>`` when closed."""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class VideoWriter:
    """Frames in, an H.264 MP4 out: ``write(frame)`` per uint8 RGB ``[H, W, 3]`` frame, then
    ``close()``; or use it as a context manager (closed on success, the part file removed on error).

    The size is fixed by the first frame; odd widths or heights are padded by one edge pixel
    (yuv420p needs even sizes). ``time`` (seconds) gives a frame's presentation time, default
    ``frames / fps``. ``live=True`` writes fragmented MP4 flushed as it goes (a killed run still
    leaves a playable ``.part``), with a fast, low-latency encoder and a keyframe every 2 s.
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18, live: bool = False,
                 preset: str | None = None, threads: int | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"{os.fspath(path)}: frame rate must be positive, got {fps}")
        self.path = os.fspath(path)
        self.part = self.path + ".part"
        self.fps = float(fps)
        self.crf = int(crf)
        self.live = live
        self.preset = preset or ("veryfast" if live else None)    # None: x264's own (medium)
        self.threads = threads                                      # None: x264's own (about 1.5 per core)
        self.frames = 0
        self.size: tuple[int, int] | None = None       # (height, width) of the frames given
        self._container: Any = None
        self._stream: Any = None
        self._last_pts = -1
        rate = Fraction(self.fps).limit_denominator(1001)
        self._rate = rate
        self._time_base = Fraction(1, 1000) if live else 1 / rate

    def open(self, height: int, width: int) -> None:
        """Start the file for frames of ``height`` x ``width`` (called by the first ``write``)."""
        import av

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"} if self.live else {}
        self._container = av.open(self.part, mode="w", format="mp4", options=options)
        stream = self._container.add_stream("libx264", rate=self._rate)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = self._time_base
        opts = {"crf": str(self.crf)}
        if self.preset:
            opts["preset"] = self.preset
        if self.threads:
            opts["threads"] = str(self.threads)
        if self.live:
            stream.codec_context.gop_size = max(1, int(round(2 * self.fps)))
            opts["tune"] = "zerolatency"
        stream.options = opts
        self._stream = stream
        self.size = (height, width)

    def write(self, frame: np.ndarray, time: float | None = None) -> None:
        """Encode one uint8 RGB frame ``[H, W, 3]``."""
        import av

        f = np.asarray(frame)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"{self.path}: frames must be uint8 RGB [H, W, 3], got {f.dtype} {f.shape}")
        if self._container is None:
            self.open(*f.shape[:2])
        assert self.size is not None   # set by open() with the container
        if f.shape[:2] != self.size:
            raise ValueError(f"{self.path}: frame of {f.shape[1]}x{f.shape[0]} in a video of "
                             f"{self.size[1]}x{self.size[0]}")
        h, w = f.shape[:2]
        if h % 2 or w % 2:
            f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        t = self.frames / self.fps if time is None else float(time)
        pts = max(self._last_pts + 1, int(round(t / self._time_base)))
        self._last_pts = pts
        picture.pts, picture.time_base = pts, self._time_base
        for packet in self._stream.encode(picture):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> str | None:
        """Flush the encoder, close the file and move it into place; returns the path (None if no
        frame was ever written)."""
        if self._container is None:
            return None
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        os.replace(self.part, self.path)
        log.debug("wrote %s (%d frames)", self.path, self.frames)
        return self.path

    def discard(self) -> None:
        """Stop and remove the part file (after an error)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:                      # the file is removed either way
                pass
            self._container = None
        if os.path.exists(self.part):
            os.remove(self.part)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
