"""Everything a person looks at for one explained clip, written in one call."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..jsonio import write_json
from .contours import clip_contours, smooth
from .files import explanation_record, safe_name, save_maps
from .overlay import as_rgb_frames, overlay_frames
from .sheet import as_named, contact_sheet
from .threshold import threshold
from .video_writer import VideoWriter


def write_explanation_outputs(out_dir: str | os.PathLike, frames: Any,
                              explanations: Mapping[str, Any] | Sequence[Any], fps: float = 8.0,
                              timestamps: Sequence[float | None] | np.ndarray | None = None, source: Any = None,
                              contour_mode: str = "top", q: float = 10.0, *,
                              min_area: float = 0.002, video: bool = True,
                              sheet: bool = True, places: Sequence[Any] | None = None) -> dict[str, str]:
    """Write into ``out_dir`` (created if needed): ``overlay_<method>.mp4`` per method,
    ``contact_sheet.png``, ``maps.npz`` and ``explanation.json``; every file atomically.

    ``frames`` are the uint8 RGB frames ``[T, H, W, 3]`` a person sees; ``explanations`` maps
    method names to explanations (or is a list, keyed by each one's ``method``). Contours are found
    per method with one threshold for the clip (``contour_mode``, ``q``) in the maps' pixel
    coordinates, and the same regions are drawn in the video, the sheet and stored in the JSON.
    With ``places`` (one :class:`~xvad.render.place.Placement` per frame) the frames are the whole
    frames and the maps and contours are drawn where the model looked in each (its square is recorded in
    the JSON, ``boxes``: x0, y0, x1, y1 in 0..1 of the frame).
    Returns the paths written, keyed ``overlay_<method>``, ``contact_sheet``, ``maps``, ``json``.
    """
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    fr = as_rgb_frames(frames)
    named = as_named(explanations)
    if not named:
        raise ValueError("no explanations to write")
    if timestamps is not None:
        timestamps = [None if t is None else float(t) for t in timestamps]

    regions, records, written = {}, {}, {}
    for name, e in named.items():
        maps = np.asarray(e.maps, dtype=np.float32)
        raw = getattr(e, "raw", None)
        # Pixel-level maps (the raw map is at input resolution) are blurred a little before contouring.
        pixel_level = raw is not None and np.shape(raw)[-2:] == maps.shape[-2:] and min(maps.shape[-2:]) >= 32
        sigma = 0.015 * min(maps.shape[-2:]) if pixel_level else 0.0
        shape = smooth(maps, sigma) if sigma else maps
        level = threshold(shape, contour_mode, q)
        regions[name] = clip_contours(shape, level=level, min_area=min_area)
        records[name] = explanation_record(
            e, regions[name],
            contour={"mode": contour_mode, "q": q, "level": level, "min_area": min_area, "smoothing_sigma": sigma})

    if video:
        for name, e in named.items():
            path = os.path.join(out, f"overlay_{safe_name(name)}.mp4")
            written[f"overlay_{safe_name(name)}"] = write_video(
                path, overlay_frames(fr, e, regions[name], timestamps=timestamps, places=places), fps)
    if sheet:
        written["contact_sheet"] = contact_sheet(
            fr, named, os.path.join(out, "contact_sheet.png"), timestamps=timestamps,
            regions=regions, places=places)
    written["maps"] = save_maps(os.path.join(out, "maps.npz"), named)

    first = next(iter(named.values()))
    payload = {
        "source": source,
        "score": getattr(first, "score", None),
        "target": getattr(first, "target", None),
        "class_name": getattr(first, "class_name", None),
        "frames": int(fr.shape[0]),
        "frame_size": [int(fr.shape[1]), int(fr.shape[2])],
        "fps": float(fps),
        "timestamps": timestamps,
        "files": {k: os.path.basename(v) for k, v in written.items()} | {"json": "explanation.json"},
        "methods": records,
    }
    if places is not None:      # the regions are in map pixels; this is where each frame's map lies
        payload["boxes"] = [[round(float(v), 4) for v in p.box(1, 1)] for p in places]
    written["json"] = write_json(os.path.join(out, "explanation.json"), payload)
    return written


def write_video(path: str | os.PathLike, frames: Any, fps: float = 8.0, crf: int = 18) -> str:
    """Write uint8 RGB frames ``[T, H, W, 3]`` as an H.264 MP4 (yuv420p, odd sizes padded by one
    edge pixel) through :class:`VideoWriter`, atomically. Returns the path."""
    fr = as_rgb_frames(frames)
    if len(fr) == 0:
        raise ValueError(f"{os.fspath(path)}: no frames to write")
    with VideoWriter(path, fps, crf) as video:
        for f in fr:
            video.write(f)
    return video.path
