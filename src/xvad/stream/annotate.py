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

import numpy as np

from ..render import VideoWriter, draw_text, resize_images, text_size

RED = (220, 30, 30)
YELLOW = (255, 210, 0)
GREY = (150, 150, 150)
DARK = (24, 24, 24)
MIN_SIDE, MAX_SIDE = 240, 960


def _fit(text: str, size: int, width: int) -> str:
    """``text``, shortened with an ellipsis to fit ``width`` pixels."""
    if text_size(text, size)[0] + 6 <= width:
        return text
    while len(text) > 1 and text_size(text + "...", size)[0] + 6 > width:
        text = text[:-1]
    return text + "..."


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
        self.threshold = float(threshold)
        self.scores: deque[tuple[float, bool]] = deque(maxlen=history)
        self._video = VideoWriter(self.path, fps, crf, live=True)
        self._size: tuple[int, int] | None = None
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self._video.frames

    def add_score(self, score: float, alert_on: bool) -> None:
        """A new window score for the timeline strip."""
        self.scores.append((float(score), bool(alert_on)))

    def _layout(self, height: int, width: int) -> None:
        """Picture size, font and bar heights, fixed by the first frame."""
        self._size = output_size(height, width)
        h, w = self._size
        self.font = max(11, int(round(min(h, w) / 20)))
        self.head_h = text_size("Ag", self.font)[1] + 6
        self.head_h += self.head_h % 2
        self.strip_h = max(40, h // 6)
        self.strip_h += self.strip_h % 2
        self.bar_w = 3 if w >= 3 * (self.scores.maxlen or 1) else 2

    def compose(self, image: np.ndarray, info: FrameInfo) -> np.ndarray:
        """The output frame: header bar, picture (red border during an alert), score timeline."""
        if self._size is None:
            self._layout(*image.shape[:2])
        assert self._size is not None   # set by _layout
        h, w = self._size
        if image.shape[:2] != (h, w):
            image = resize_images(image, (h, w))
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
        draw_text(head, right, (w, 0), colour=(230, 230, 230), size=f, background=None, anchor="tr")
        rw = text_size(right, f)[0] + 6
        draw_text(head, _fit(left, f, w - rw - 4), (0, 0), size=f, background=None)
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
        draw_text(strip, f"alerts {alerts}" if alerts else "scores", (0, 0), colour=(200, 200, 200),
                  size=small, background=DARK, background_alpha=0.5, padding=2)

    def write(self, image: np.ndarray, info: FrameInfo) -> None:
        """Compose and encode one frame at its source time."""
        self._video.write(self.compose(image, info), time=info.time)

    def close(self) -> str | None:
        """Flush the encoder, close the file and move it into place; returns the path (None if no
        frame was ever written)."""
        return self._video.close()
