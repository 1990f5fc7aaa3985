"""Explaining a video file end to end: read the window the model sees, run the methods, write files."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .models import CRNN
from .render.place import Placement
from .video import load_clip, preprocess_as, probe, shrink_images
from .video.crop import Region


def display_frames(clip: torch.Tensor, mean, std) -> np.ndarray:
    """Undo the normalisation: ``[T, 3, H, W]`` model input -> uint8 ``[T, H, W, 3]`` a person sees.

    The maps are computed on exactly these pixels, so overlays line up without any resizing.
    """
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    img = (clip.detach().float().cpu() * s + m).clamp(0, 1).mul(255).round().byte()
    return img.permute(0, 2, 3, 1).numpy()


@dataclass
class Window:
    """A window of a video as a model sees it and a person is shown it."""

    x: torch.Tensor           # [T, 3 * streams, S, S]: the model's input
    shown: np.ndarray         # uint8 [T, S, S, 3]: what that input shows (maps line up with it)
    times: np.ndarray         # seconds [T]
    rgb: np.ndarray           # uint8 [T, H, W, 3]: the whole frames
    regions: list[Region]     # the part of each frame the input shows
    places: list[Placement]   # where each frame's map lies in the whole frame (:mod:`xvad.render.place`)


def read_window(model: CRNN, path: str, start: float = 0.0, frames: int | None = None,
                duration: float | None = None, fps: float | None = None) -> Window:
    """The window of ``path`` the model sees from ``start``, as a stream of the file from its start sees
    it (the motion crop's squares chosen from the frames before ``start`` on, as the detector chose them).

    At a rate (``fps``, default the model's), ``frames`` (default: the model's) are taken at that rate;
    without one they are spread uniformly over ``[start, start + duration)`` (default: to the end).
    """
    cfg = model.config
    if fps or cfg.get("fps"):
        duration = None                      # frames at a rate fix the span
    elif duration is None and start > 0:     # uniformly over the rest of the video
        info = probe(path)
        duration = max(info.duration - start, 0.0) if info.duration else None
    clip = load_clip(path, cfg, start=start, duration=duration, frames=frames, fps=fps, as_streamed=True)
    x = clip.tensor()
    shown = display_frames(x, cfg["mean"], cfg["std"]) if clip.images is clip.rgb else \
        shown_frames(clip.rgb, cfg, clip.regions)
    h, w = clip.rgb.shape[1:3]
    places = [Placement.of(cfg, h, w, r) for r in clip.regions]
    return Window(x, shown, clip.times, clip.rgb, clip.regions, places)


def shown_frames(rgb: np.ndarray, config: dict, regions: list[Region] | None = None) -> np.ndarray:
    """uint8 RGB frames ``[T, H, W, 3]`` -> what a person is shown: the same crop and size as the
    model input, so that maps line up with them (for motion or flow input: the frames themselves; with
    the motion crop, each frame's square, ``regions``)."""
    if config.get("crop") == "motion":
        return shrink_images(rgb, config, regions)
    return display_frames(preprocess_as(rgb, config), config["mean"], config["std"])


def explain_video(model: CRNN, path: str, methods: list[str], out_dir: str, start: float = 0.0,
                  frames: int | None = None, duration: float | None = None, target=None,
                  normalize: str = "clip", contours: str = "top", q: float = 10.0,
                  options: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """Explain ``model`` on a window of the video with each method; write overlays, sheet, maps, JSON.
    ``options``: extra options per method name (``{"gradcam": {"layer": ...}}``)."""
    from .explain import explain, get_method
    from .render import write_explanation_outputs

    for m in methods:
        get_method(m)  # an unknown name fails before any work is done
    win = read_window(model, path, start, frames, duration)
    clip, shown, ts = win.x, win.shown, win.times
    # the motion crop's square moves from frame to frame: each map is drawn where it lies in the whole frame
    whole = model.config.get("crop") == "motion"
    per_method = options or {}
    explanations = {m: explain(model, clip, method=m, target=target, normalize=normalize, **per_method.get(m, {}))
                    for m in methods}
    span = float(ts[-1] - ts[0]) if len(ts) > 1 else 0.0
    fps = model.config.get("fps") or ((len(ts) - 1) / span if span > 0 else 8.0)  # the window's own rate
    paths = write_explanation_outputs(out_dir, win.rgb if whole else shown, explanations, fps=min(float(fps), 30.0),
                                      timestamps=ts, source=path, contour_mode=contours, q=q,
                                      places=win.places if whole else None)
    first = next(iter(explanations.values()))
    return {"paths": paths, "explanations": explanations, "score": first.score, "target": first.target,
            "class_name": first.class_name, "timestamps": ts}
