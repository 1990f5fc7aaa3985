"""An alert's explanation for the review console, written beside its decision report: ``explanation.json``
(frame times, frame importance, contours, the window scores, each stream's vote), ``maps.png`` (a sprite
sheet of every explained frame's Grad-CAM map, colour-mapped, transparent where the map is low) and
``key_N.jpg`` (the peak window's key frames with the map and its contours drawn).

The clip is explained window by window: non-overlapping windows of the model's length at its rate,
aligned on the peak window (the first and the last are moved inside the clip, so they may overlap their
neighbour), at most ``max_windows`` of them around the peak, Grad-CAM in fp32 for the class of the peak
window. As in the decision report, each window's maps and frame importance are relative within that
window (0..1; a saturated score has tiny gradients, so their sizes do not compare across windows) and its
maps are outlined with one threshold for the window (:class:`xvad.report.Contours`).

Times are seconds from the clip's start: the timestamps of the clip's own frames, which is what a
browser's ``video.currentTime`` reports. A tile covers the whole frame at the model's scale, with the map
where the model looked (its crop of the frame; with the motion crop, that frame's own square) and
transparent elsewhere; contour points, and each frame's ``box`` (the square the model saw: x0, y0, x1, y1),
are in 0..1 of the frame (x to the right, y down). Only explained frames are listed (``explained`` gives their span): a
player shows a map only within half a model frame of a listed time.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from ..atomic import atomic_path
from ..jsonio import write_json
from ..render.place import Placement, rgba, whole_frame
from ..report import Contours, key_frames
from ..report.text import LEAN

if TYPE_CHECKING:
    from ..report import AlertView
    from ..stream import WindowResult

log = logging.getLogger(__name__)

VERSION = 1
EXPLANATION = "explanation.json"
MAPS = "maps.png"
MAX_WINDOWS = 8            # windows explained around the peak: a long clip stays cheap
SPRITE_WIDTH = 4096        # pixels: no wider sprite sheet, so every browser decodes it
KEY_QUALITY = 90
RULE = Contours()           # the contour rule of the decision report
DECIMALS = 4               # of the 0..1 contour coordinates (a tenth of a pixel of a 4K frame)
SIMPLIFY = 0.5             # map pixels: contour vertices closer than this to the outline are left out
PNG_LEVEL = 6              # zlib level of the sprite sheet: most of the gain of 9 at a tenth of the time


def model_frame_times(video: str, fps: float) -> list[float]:
    """The times of the frames a model at ``fps`` sees in ``video``, by the sampling rule of the stream
    detector (the frame nearest each tick ``k / fps``), from a demux-only pass."""
    from ..video.decode import packet_times
    from ..video.sample import Nearest, ticks

    nearest = Nearest(ticks(fps))
    out: list[float] = []
    for t in packet_times(video):
        out.extend(pt for _, pt in nearest.push(t, t))
    return out


def windows_around(peak: int, frames: int, window: int, most: int) -> list[tuple[int, int, int]]:
    """The windows that explain the clip, in time order, each ``(read, first, end)``: read ``window``
    model frames from index ``read``, keep the maps of ``first`` .. ``end - 1``. They tile the frames on the
    grid of the window that starts at ``peak`` (the ones at the clip's ends read inside it), at most
    ``most`` of them nearest the peak, the earlier first on a tie."""
    if frames < window or not 0 <= peak <= frames - window:
        raise ValueError(f"a peak window from frame {peak} does not fit {frames} frames of windows of {window}")
    ks = [0]
    before, after = -1, 1
    while len(ks) < most:
        grew = False
        for k in (before, after):
            start = peak + k * window
            if len(ks) < most and start + window > 0 and start < frames:
                ks.append(k)
                grew = True
        before, after = before - 1, after + 1
        if not grew:
            break
    out = []
    for k in sorted(ks):
        start = peak + k * window
        out.append((min(max(start, 0), frames - window), max(start, 0), min(start + window, frames)))
    return out


@dataclass
class Explained:
    """The explained frames of a clip, in time order: maps ``[F, S, S]`` and importance ``[F]`` (each 0..1
    within its window), times, contours (regions per frame) and where each map lies in its frame; the peak
    window's own importance and times, where its frames start among them, and each stream's vote on it."""
    maps: np.ndarray
    importance: np.ndarray
    times: np.ndarray
    regions: list[list]
    places: list[Placement]
    peak_importance: np.ndarray
    peak_times: np.ndarray
    peak_at: int
    votes: list[tuple[str, float]]


def _report_view(views: Sequence[AlertView], start: float, target: int) -> AlertView | None:
    """The report's explanation of the window from ``start`` for ``target``, if it made one."""
    for v in views:
        gc = v.explanations.get("gradcam")
        if gc is not None and len(v.window_times) and float(v.window_times[0]) == start and gc.target == target:
            return v
    return None


def share(importance: np.ndarray) -> np.ndarray:
    """Frame importance as 0..1 of the largest: a frame that lowered the score (negative) counts 0."""
    v = np.clip(np.asarray(importance, dtype=np.float64), 0.0, None)
    top = float(v.max()) if v.size else 0.0
    return v / top if top > 0 else np.zeros_like(v)


def explain_windows(model: Any, video: str, times: Sequence[float], plan: Sequence[tuple[int, int, int]], peak: int,
                    window: int, fps: float, target: int, views: Sequence[AlertView] = (),
                    contours: Contours = RULE) -> Explained:
    """Grad-CAM of each planned window in fp32 (the model's precision is restored after), its maps and
    importance relative within the window and outlined by one threshold for the window, as the decision
    report does (a saturated score's gradients are tiny, so windows are not compared by size); the peak
    window's explanation and votes are taken from the report's ``views`` when it made them."""
    from ..explain import explain
    from ..explain_video import read_window

    view = _report_view(views, times[peak], target)
    maps, imps, ts, regions, places = [], [], [], [], []
    peak_x: torch.Tensor | None = None
    peak_imp, peak_ts, peak_at, at = np.zeros(0), np.zeros(0), 0, 0
    own = model.config["precision"]
    try:
        model.set_precision("fp32")
        for read, first, end in plan:
            if read == peak and view is not None and view.window is not None:
                e, t, win = view.explanations["gradcam"], np.asarray(view.window_times), view.window
            else:
                win = read_window(model, video, start=times[read], frames=window, fps=fps)
                x, t = win.x, win.times
                e = explain(model, x, method="gradcam", target=target)
                peak_x = x if read == peak else peak_x
            keep = slice(first - read, end - read)
            places.extend(win.places[keep])
            maps.append(np.asarray(e.maps, np.float32)[keep])
            imps.append(share(e.frame_importance)[keep])
            ts.append(np.asarray(t)[keep])
            regions.extend(contours.regions(e.maps)[keep])
            if read == peak:
                peak_imp, peak_ts, peak_at = np.asarray(e.frame_importance), np.asarray(t), at
            at += end - first
    finally:
        model.set_precision(own)
    if view is not None:
        votes = list(view.votes)
    elif peak_x is not None and model.stream_heads:   # at the precision that scored the alert
        votes = list(zip(model.stream_heads, model.stream_proba(peak_x)[:, target].tolist()))
    else:
        votes = []
    return Explained(np.concatenate(maps), np.concatenate(imps), np.concatenate(ts), regions, places, peak_imp,
                     peak_ts, peak_at, votes)


def sprite(tiles: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Equal RGBA tiles in rows of as many as fit ``SPRITE_WIDTH``: (the sheet, its columns)."""
    h, w = tiles[0].shape[:2]
    columns = max(1, min(len(tiles), SPRITE_WIDTH // w))
    rows = math.ceil(len(tiles) / columns)
    sheet = np.zeros((rows * h, columns * w, 4), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return sheet, columns


def write_image(path: str, image: np.ndarray, quality: int = KEY_QUALITY) -> None:
    """An RGB(A) uint8 image as PNG or JPEG (by the name), atomically."""
    ext = os.path.splitext(path)[1].lower()
    code = cv2.COLOR_RGBA2BGRA if image.shape[-1] == 4 else cv2.COLOR_RGB2BGR
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") else \
        [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL]
    ok, data = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(image), code), params)
    if not ok:
        raise ValueError(f"{path}: could not encode an image of shape {image.shape}")
    with atomic_path(path) as part, open(part, "wb") as f:
        f.write(data.tobytes())


def simplified(line: Any, tolerance: float = SIMPLIFY) -> np.ndarray:
    """A closed iso-line with the vertices that lie within ``tolerance`` map pixels of the outline
    through the others left out (Douglas-Peucker, OpenCV): every vertex kept is one of the line's."""
    p = np.asarray(line, dtype=np.float32).reshape(-1, 2)
    if len(p) > 1 and np.array_equal(p[0], p[-1]):
        p = p[:-1]
    kept = cv2.approxPolyDP(p.reshape(-1, 1, 2), tolerance, True).reshape(-1, 2)
    return np.vstack([kept, kept[:1]])


def contour_lists(regions: list, place: Placement) -> list[list[list[float]]]:
    """A frame's regions as closed iso-lines (outer lines and holes) in 0..1 of the frame."""
    return [np.round(np.clip(place.points(simplified(p)), 0.0, 1.0), DECIMALS).tolist()
            for r in regions for p in (*r.polygons, *r.holes)]


def write_overlay(model: Any, video: str, folder: str, results: Sequence[WindowResult], threshold: float, *,
                  views: Sequence[AlertView] = (), fps: float | None = None, max_windows: int = MAX_WINDOWS,
                  contours: Contours = RULE) -> dict[str, str]:
    """Explain ``video`` (an alert's clip, scored by the stream detector as ``results``) for the console and
    write the files into ``folder``; returns them by name (``explanation``, ``maps``, ``key_0`` ...),
    relative to ``folder``. ``views``: the decision report's explained windows, reused where they fit."""
    from ..video import probe, read_frames
    from ..video.decode import packet_times
    from ..video.images import input_streams

    if not results:
        raise ValueError(f"{video}: no window scores to explain")
    if max_windows < 1:
        raise ValueError(f"max_windows must be at least 1, not {max_windows}")
    cfg = model.config
    fps = float(fps or cfg.get("fps") or 8.0)
    window = int(cfg["frames"])
    peak = max(results, key=lambda r: r.score)
    target = int(peak.class_index)
    times = model_frame_times(video, fps)
    plan = windows_around(peak.start_frame, len(times), window, max_windows)
    ex = explain_windows(model, video, times, plan, peak.start_frame, window, fps, target, views, contours)
    maps, importance, regions, places = ex.maps, ex.importance, ex.regions, ex.places
    info = probe(video)
    tiles = []
    for m, place in zip(maps, places):
        tile, inside = place.tile(m)
        tiles.append(rgba(tile, inside))
    sheet, columns = sprite(tiles)
    os.makedirs(folder, exist_ok=True)
    write_image(os.path.join(folder, MAPS), sheet)

    rgb, _ = read_frames(video, frames=window, fps=fps, start=times[peak.start_frame])
    files: dict[str, str] = {}
    keys = []
    for n, i in enumerate(key_frames(ex.peak_importance)):
        at = ex.peak_at + i
        name = f"key_{n}.jpg"
        write_image(os.path.join(folder, name), whole_frame(rgb[i], maps[at], regions[at], places[at]))
        files[f"key_{n}"] = name
        keys.append({"t": float(ex.times[at]), "file": name, "importance": float(importance[at]), "tile": at})

    leans = [p > LEAN for _, p in ex.votes]
    payload = {
        "version": VERSION,
        "clip": {"file": os.path.basename(video), "fps": info.fps, "frames": len(packet_times(video)),
                 "duration": info.duration, "width": info.width, "height": info.height},
        "threshold": float(threshold),
        "class_name": peak.class_name or str(target), "class_index": target,
        "model_fps": fps, "window": window,
        "streams": list(model.stream_heads) or input_streams(cfg.get("input", "rgb")),
        "windows": [{"start": float(r.start_time), "time": float(r.time), "score": float(r.score)} for r in results],
        "explained": [float(ex.times[0]), float(ex.times[-1])],
        "frames": [{"t": float(t), "importance": float(imp), "tile": i,
                    "contours": contour_lists(regions[i], places[i]),
                    "box": [round(float(v), DECIMALS) for v in places[i].box(1, 1)]}
                   for i, (t, imp) in enumerate(zip(ex.times, importance))],
        "sprite": {"file": MAPS, "columns": columns, "tile_width": places[0].width, "tile_height": places[0].height},
        "key_frames": keys,
        "votes": [{"stream": name, "p": float(p), "agrees": lean == (float(peak.score) > LEAN)}
                  for (name, p), lean in zip(ex.votes, leans)],
        "agree": len(set(leans)) <= 1,
        "peak": {"score": float(peak.score), "time": float(peak.time)},
    }
    write_json(os.path.join(folder, EXPLANATION), payload)      # last: once it exists, so do its files
    log.info("%s: explained %d frames in %d windows for the console", video, len(maps), len(plan))
    return {"explanation": EXPLANATION, "maps": MAPS, **files}
