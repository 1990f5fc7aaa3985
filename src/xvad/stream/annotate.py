"""The annotated output video, written as frames come (a streaming H.264 encoder).

Each sampled frame is shown with a header (frame number, source time, the current window score
and class), a red banner and border while an alert is on, and a timeline strip underneath with the
recent window scores as bars and the threshold as a yellow line. The file is written to
``<out>.part`` as fragmented MP4 (so even a killed run leaves a playable file) and renamed to
``<out>`` when closed.
"""
from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from ..render import text_mask

RED = (220, 30, 30)
YELLOW = (255, 210, 0)
GREY = (150, 150, 150)
DARK = (24, 24, 24)
MIN_SIDE, MAX_SIDE = 240, 960


@lru_cache(maxsize=512)
def _glyph(ch: str, size: int) -> np.ndarray:
    """One character's coverage mask, at the common line height (text is composed glyph by glyph,
    so that changing numbers do not need a new matplotlib rendering per frame)."""
    height = text_mask("Ag", size).shape[0]
    if ch == " ":
        return np.zeros((height, max(2, size // 3)), np.float32)
    m = text_mask(ch, size)
    if m.shape[0] != height:
        out = np.zeros((height, m.shape[1]), np.float32)
        k = min(height, m.shape[0])
        out[-k:] = m[-k:]
        m = out
    return m


def text_line(text: str, size: int) -> np.ndarray:
    """Coverage mask of one line of text, glyphs set side by side (overlapping by a pixel)."""
    glyphs = [_glyph(c, size) for c in text]
    if not glyphs:
        return np.zeros((text_mask("Ag", size).shape[0], 1), np.float32)
    width = sum(g.shape[1] for g in glyphs) - (len(glyphs) - 1)
    out = np.zeros((glyphs[0].shape[0], width), np.float32)
    x = 0
    for g in glyphs:
        np.maximum(out[:, x:x + g.shape[1]], g, out=out[:, x:x + g.shape[1]])
        x += g.shape[1] - 1
    return out


def put_text(img: np.ndarray, text: str, x: int, y: int, size: int, colour=(255, 255, 255),
             background=(0, 0, 0), alpha: float = 0.6, pad: int = 3, right: bool = False) -> int:
    """Draw ``text`` with its box's top-left (or top-right, ``right``) corner at (x, y); returns the
    box width."""
    m = text_line(text, size)
    h, w = img.shape[:2]
    bh, bw = m.shape[0] + 2 * pad, m.shape[1] + 2 * pad
    if right:
        x = x - bw
    x0, y0 = max(0, min(x, w - 1)), max(0, min(y, h - 1))
    x1, y1 = min(w, x0 + bw), min(h, y0 + bh)
    region = img[y0:y1, x0:x1].astype(np.float32)
    if background is not None and alpha > 0:
        region = region * (1 - alpha) + np.asarray(background, np.float32) * alpha
    mm = m[: max(0, y1 - y0 - pad), : max(0, x1 - x0 - pad)][..., None]
    sub = region[pad: pad + mm.shape[0], pad: pad + mm.shape[1]]
    region[pad: pad + mm.shape[0], pad: pad + mm.shape[1]] = sub * (1 - mm) + np.asarray(colour, np.float32) * mm
    img[y0:y1, x0:x1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return bw


def _fit(text: str, size: int, width: int) -> str:
    """``text``, shortened with an ellipsis to fit ``width`` pixels."""
    while len(text) > 1 and text_line(text, size).shape[1] + 6 > width:
        text = text[:-2] + "…"
    return text


@dataclass
class FrameInfo:
    index: int
    time: float
    score: float | None            # latest window score (None before the first window)
    class_name: str | None
    alert_on: bool
    alerts: int                    # alerts so far


def output_size(height: int, width: int) -> tuple[int, int]:
    """Picture size in the output: small frames enlarged so text stays legible, big ones reduced; even."""
    scale = 1.0
    if min(height, width) < MIN_SIDE:
        scale = math.ceil(MIN_SIDE / min(height, width))
    elif max(height, width) > MAX_SIDE:
        scale = MAX_SIDE / max(height, width)
    h, w = int(round(height * scale)), int(round(width * scale))
    return h + h % 2, w + w % 2


class AnnotatedVideo:
    """``write(image, info)`` per frame, then ``close()`` (always: it finishes and renames the file)."""

    def __init__(self, path: str | os.PathLike, fps: float, threshold: float, history: int = 320,
                 crf: int = 23) -> None:
        self.path = os.fspath(path)
        self.part = self.path + ".part"
        self.fps = float(fps)
        self.threshold = float(threshold)
        self.crf = crf
        self.scores: deque[tuple[float, bool]] = deque(maxlen=history)
        self.frames = 0
        self._container: Any = None
        self._stream: Any = None
        self._last_pts = -1
        self._size: tuple[int, int] | None = None
        self._last_score_index: int | None = None
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)

    def add_score(self, score: float, alert_on: bool) -> None:
        """A new window score for the timeline strip."""
        self.scores.append((float(score), bool(alert_on)))

    def _open(self, height: int, width: int) -> None:
        import av

        self._size = output_size(height, width)
        h, w = self._size
        self.font = max(11, int(round(min(h, w) / 20)))
        self.head_h = text_line("Ag", self.font).shape[0] + 6
        self.head_h += self.head_h % 2
        self.strip_h = max(40, h // 6)
        self.strip_h += self.strip_h % 2
        self.bar_w = 3 if w >= 3 * (self.scores.maxlen or 1) else 2
        self._container = av.open(self.part, "w", format="mp4",
                                  options={"movflags": "frag_keyframe+empty_moov+default_base_moof",
                                           "flush_packets": "1"})
        s = self._container.add_stream("libx264", rate=max(1, int(round(self.fps))))
        s.width, s.height, s.pix_fmt = w, self.head_h + h + self.strip_h, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        s.codec_context.gop_size = max(1, int(round(2 * self.fps)))
        s.options = {"crf": str(self.crf), "preset": "veryfast", "tune": "zerolatency"}
        self._stream = s

    def compose(self, image: np.ndarray, info: FrameInfo) -> np.ndarray:
        """The output frame: header bar, picture (red border during an alert), score timeline."""
        import av

        if self._size is None:
            self._open(*image.shape[:2])
        h, w = self._size
        if image.shape[:2] != (h, w):
            pic = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            image = pic.reformat(width=w, height=h, format="rgb24").to_ndarray()
        hh, f = self.head_h, self.font
        out = np.empty((hh + h + self.strip_h, w, 3), np.uint8)
        head, pic = out[:hh], out[hh:hh + h]
        pic[:] = image
        right = f"#{info.index}  {info.time:.2f} s"
        if info.alert_on:
            head[:] = RED
            b = max(2, min(h, w) // 80)
            pic[:b], pic[-b:], pic[:, :b], pic[:, -b:] = RED, RED, RED, RED
            left = "ALERT" + (f" {info.class_name}" if info.class_name else "") + \
                (f" {info.score:.2f}" if info.score is not None else "")
        else:
            head[:] = DARK
            if info.score is None:
                left = "warming up"
            else:
                left = f"score {info.score:.2f}" + (f" {info.class_name}" if info.class_name else "")
        rw = put_text(head, right, w, 0, f, colour=(230, 230, 230), background=None, right=True)
        put_text(head, _fit(left, f, w - rw - 4), 0, 0, f, background=None)
        self._strip(out[hh + h:], info.alerts)
        return out

    def _strip(self, strip: np.ndarray, alerts: int) -> None:
        """Recent window scores as bars (red while an alert was on), the threshold as a line."""
        strip[:] = DARK
        sh, w = strip.shape[:2]
        top, bottom = 3, sh - 3
        usable = bottom - top
        bar = self.bar_w
        scores = list(self.scores)[-(w // bar):]
        x = w - bar * len(scores)
        for score, on in scores:
            hgt = max(1, int(round(min(max(score, 0.0), 1.0) * usable)))
            strip[bottom - hgt: bottom, x: x + bar - 1] = RED if on else GREY
            x += bar
        y = bottom - int(round(min(max(self.threshold, 0.0), 1.0) * usable))
        strip[max(top, y - 1): y + 1, :] = YELLOW
        small = max(9, self.font * 3 // 4)
        put_text(strip, f"alerts {alerts}" if alerts else "scores", 0, 0, small, colour=(200, 200, 200),
                 background=DARK, alpha=0.5, pad=2)

    def write(self, image: np.ndarray, info: FrameInfo) -> None:
        import av

        out = self.compose(image, info)
        frame = av.VideoFrame.from_ndarray(out, format="rgb24")
        pts = max(self._last_pts + 1, int(round(info.time * 1000)))
        self._last_pts = pts
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        for packet in self._stream.encode(frame):
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
        return self.path
