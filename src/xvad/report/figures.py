"""The report's pictures as base64 PNGs: the score over time with the alerts shaded, the frame-importance
chart, and per key frame what the model saw, its Grad-CAM overlay with contours, its saliency overlay,
and the whole frame with the Grad-CAM where the model looked (its square outlined)."""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..render import blend, clip_contours, draw_polygons, resize_maps
from ..render.place import whole_frame
from ..render.threshold import MODES

if TYPE_CHECKING:
    from .select import AlertView

ALERT_RED = "#d62728"
WHOLE_SHORT = 256          # pixels: the short side of the whole frame shown beside the model's view


@dataclass(frozen=True)
class Contours:
    """The rule that outlines the Grad-CAM maps (:func:`xvad.render.clip_contours`'s ``mode`` and ``q``);
    the page's words about the contours are written from this same rule."""
    mode: str = "top"
    q: float = 10.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"contour mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not 0.0 < self.q <= 100.0:
            raise ValueError(f"contour q must be in (0, 100], not {self.q}")

    def regions(self, maps: Any) -> list:
        """The regions of each frame of a clip of maps, one threshold for the whole clip."""
        return clip_contours(maps, mode=self.mode, q=self.q)


def figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def image_png(rgb: np.ndarray) -> str:
    """uint8 RGB image -> base64 PNG."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode an image of shape {rgb.shape} as PNG")
    return base64.b64encode(data.tobytes()).decode()


def timeline_plot(times: Sequence[float], scores: Sequence[float], threshold: float,
                  spans: Sequence[tuple[float, float]]) -> tuple[str, list[tuple[float, float]]]:
    """Score over time with the threshold and the alert intervals shaded: (base64 PNG, the intervals
    the figure shades, read back from its artists)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.8))
    ax = fig.subplots()
    shaded = [ax.axvspan(a, b, color=ALERT_RED, alpha=0.18, lw=0) for a, b in spans]
    few = len(times) < 20                 # a line through a handful of windows hides them: mark each one
    ax.plot(times, scores, color="#1f3b73", lw=1.6, label="window score", marker="o" if few else None, ms=4)
    ax.axhline(threshold, color=ALERT_RED, ls="--", lw=1, label=f"threshold {threshold:.2f}")
    end = max([*times, *(b for _, b in spans)], default=1.0)
    ax.set(xlabel="time in the video (s)", ylabel="alert score", ylim=(-0.02, 1.02),
           xlim=(0.0, end * 1.02 if end > 0 else 1.0))    # the whole video from its start
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    drawn = []
    for patch in shaded:
        xs = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
        drawn.append((float(xs.min()), float(xs.max())))
    return figure_png(fig), drawn


def importance_plot(importance: np.ndarray, times: np.ndarray, key: list[int]) -> str:
    """Bar chart of each frame's importance, key frames in red; base64 PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.2))
    ax = fig.subplots()
    colours = [ALERT_RED if t in key else "#8aa1c9" for t in range(len(importance))]
    ax.bar(np.arange(len(importance)), importance, color=colours)
    ax.set_xticks(np.arange(len(importance)), [f"{t:.1f}" for t in times], fontsize=7, rotation=90)
    ax.set(xlabel="frame time (s)", ylabel="importance", title="How much each frame counted (red: key frames)")
    ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


def frame_panels(view: AlertView, key: list[int], contours: Contours) -> list[dict]:
    """Per key frame: the frame, its Grad-CAM overlay with ``contours``, its saliency overlay (PNGs)."""
    gc, sal = view.explanations["gradcam"], view.explanations["saliency"]
    scale = max(1, 256 // min(view.frames.shape[1:3]))  # small model inputs are enlarged for the eye
    frames = view.frames.repeat(scale, axis=1).repeat(scale, axis=2)
    raw = contours.regions(gc)
    regions = [[r.scaled(scale, scale) for r in frame] for frame in raw]
    panels = []
    for t in key:
        big = frames.shape[1:3]
        cam = blend(frames[t], resize_maps(gc.maps[t:t + 1], big)[0], alpha=0.45)
        draw_polygons(cam, regions[t])
        sal_map = resize_maps(sal.maps[t:t + 1], big)[0]
        panel = {"time": float(view.window_times[t]), "index": t, "importance": float(gc.frame_importance[t]),
                 "frame": image_png(frames[t]), "gradcam": image_png(cam),
                 "saliency": image_png(blend(frames[t], sal_map, alpha=0.55, cmap="inferno")),
                 "regions": len(regions[t]), "whole": None}
        if view.window is not None:     # the whole frame: the map where the model looked, its square outlined
            whole = shrunk(view.window.rgb[t], WHOLE_SHORT)
            panel["whole"] = image_png(whole_frame(whole, gc.maps[t], raw[t], view.window.places[t], box=True))
        panels.append(panel)
    return panels


def shrunk(frame: np.ndarray, short: int) -> np.ndarray:
    """A frame resized (area averaging) so that its short side is at most ``short`` pixels."""
    h, w = frame.shape[:2]
    k = short / min(h, w)
    if k >= 1:
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
