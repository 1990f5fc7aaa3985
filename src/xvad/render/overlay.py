"""Pictures on numpy images: heatmap colouring and blending, polygons, boxes, text, the
frame-importance strip, and the overlay video (PyAV, H.264).

Everything works on uint8 RGB arrays ``[H, W, 3]`` (or ``[T, H, W, 3]`` for clips). The drawing
functions (``draw_*``) draw in place and return the image, so calls can be chained. Text is
rendered with matplotlib's Agg renderer into a coverage mask and pasted onto the image.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np

from ..atomic import atomic_path

from .contours import Region, clip_contours
from .image import resize_images, resize_maps

Colour = tuple[int, int, int]

WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
HIGHLIGHT: Colour = (255, 170, 0)


# ----------------------------------------------------------------------------------------------
# arrays
# ----------------------------------------------------------------------------------------------

def as_rgb_frames(frames: Any) -> np.ndarray:
    """Frames as uint8 RGB ``[T, H, W, 3]``: accepts grey ``[T, H, W]`` or ``[T, H, W, 1]``, RGBA,
    and float frames in [0, 1] (or [0, 255] when their maximum exceeds 1)."""
    a = np.asarray(frames)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4):
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        a = a[..., :3]
    elif a.shape[-1] != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got {a.shape[-1]}")
    if a.dtype != np.uint8:
        f = a.astype(np.float32)
        if f.size and np.nanmax(f) <= 1.0:
            f = f * 255.0
        a = np.clip(np.rint(np.nan_to_num(f)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


# ----------------------------------------------------------------------------------------------
# heatmaps
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _lut(cmap: str) -> np.ndarray:
    import matplotlib

    table = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]
    lut = np.rint(table * 255).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def colorize(map_: Any, cmap: str = "jet", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """A map (any shape) coloured with a matplotlib colormap: uint8 RGB ``[..., 3]``. Values are
    scaled from ``[vmin, vmax]`` to the colormap and clipped; non-finite values count as ``vmin``."""
    m = np.nan_to_num(np.asarray(map_, dtype=np.float32), nan=vmin, posinf=vmax, neginf=vmin)
    span = vmax - vmin if vmax > vmin else 1.0
    idx = np.clip(np.rint((m - vmin) / span * 255.0), 0, 255).astype(np.intp)
    return _lut(cmap)[idx]


def blend(frame: Any, map_: Any, alpha: float = 0.45, cmap: str = "jet", vmin: float = 0.0,
          vmax: float = 1.0) -> np.ndarray:
    """The frame with the coloured map laid over it at opacity ``alpha`` (uint8 RGB). A map of
    another size than the frame is resized bilinearly to the frame."""
    f = as_rgb_frames(np.asarray(frame)[None])[0]
    m = np.asarray(map_, dtype=np.float32)
    if m.shape != f.shape[:2]:
        m = resize_maps(m, f.shape[:2])
    heat = colorize(m, cmap, vmin, vmax).astype(np.float32)
    out = f.astype(np.float32) * (1.0 - alpha) + heat * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# lines, polygons, boxes
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _brush(thickness: int) -> np.ndarray:
    """Integer offsets (dy, dx) of a round brush ``thickness`` pixels wide."""
    t = max(1, int(thickness))
    r = (t - 1) / 2.0
    c = np.arange(t) - r
    dy, dx = np.meshgrid(c, c, indexing="ij")
    keep = dy ** 2 + dx ** 2 <= (r + 0.5) ** 2 if t > 2 else np.ones_like(dy, bool)
    off = np.stack([dy[keep], dx[keep]], 1)
    return np.floor(off + 0.5).astype(np.int64)


def _stroke_pixels(points: Any, closed: bool) -> np.ndarray:
    """Integer (y, x) pixels along a polyline: every segment densely sampled (two samples per pixel
    of length), rounded to the nearest pixel centre."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(1)]
    if len(p) == 0:
        return np.empty((0, 2), np.int64)
    if closed and len(p) > 2 and not np.array_equal(p[0], p[-1]):
        p = np.vstack([p, p[:1]])
    if len(p) == 1:
        return np.floor(p[:, ::-1] + 0.5).astype(np.int64)
    a, b = p[:-1], p[1:]
    n = np.ceil(np.hypot(*(b - a).T) * 2).astype(np.int64) + 1
    seg = np.repeat(np.arange(len(a)), n)
    t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.maximum(np.repeat(n, n) - 1, 1)
    xy = a[seg] + (b[seg] - a[seg]) * t[:, None]
    return np.floor(xy[:, ::-1] + 0.5).astype(np.int64)


def _paint(img: np.ndarray, yx: np.ndarray, colour: Colour, thickness: int) -> None:
    if len(yx) == 0:
        return
    pix = (yx[:, None, :] + _brush(thickness)[None]).reshape(-1, 2)
    h, w = img.shape[:2]
    ok = (pix[:, 0] >= 0) & (pix[:, 0] < h) & (pix[:, 1] >= 0) & (pix[:, 1] < w)
    pix = pix[ok]
    img[pix[:, 0], pix[:, 1]] = np.asarray(colour, dtype=np.uint8)


def draw_polyline(img: np.ndarray, points: Any, colour: Colour = WHITE, thickness: int = 2,
                  closed: bool = True) -> np.ndarray:
    """Draw a polyline of (x, y) points (pixel centres at integers) in place."""
    _paint(img, _stroke_pixels(points, closed), colour, thickness)
    return img


def _polygons_of(item: Any, holes: bool) -> list[Any]:
    if isinstance(item, Region):
        return item.polygons + (item.holes if holes else [])
    if isinstance(item, dict) and "polygon" in item:
        return [item["polygon"], *item.get("parts", [])] + (item.get("holes", []) if holes else [])
    return [item]


def draw_polygons(img: np.ndarray, regions: Iterable[Any], colour: Colour = WHITE,
                  thickness: int = 2, outline: Colour | None = BLACK, holes: bool = True) -> np.ndarray:
    """Draw region outlines in place: :class:`Region` objects (their outer iso-lines and holes),
    region dicts, or plain polygons of (x, y) points. ``outline`` draws a darker line one pixel
    wider on each side first so the contour stays visible on any background."""
    strokes = [_stroke_pixels(p, True) for r in regions for p in _polygons_of(r, holes)]
    if outline is not None:
        for s in strokes:
            _paint(img, s, outline, thickness + 2)
    for s in strokes:
        _paint(img, s, colour, thickness)
    return img


def draw_boxes(img: np.ndarray, regions_or_boxes: Iterable[Any], colour: Colour = WHITE,
               thickness: int = 1, outline: Colour | None = None) -> np.ndarray:
    """Draw boxes in place; items are :class:`Region` objects, region dicts or ``(x0, y0, x1, y1)``
    boxes with exclusive x1, y1 (the outline runs on the box's outermost pixels)."""
    polys = []
    for item in regions_or_boxes:
        box = item.box if isinstance(item, Region) else item["box"] if isinstance(item, dict) else item
        x0, y0, x1, y1 = (float(v) for v in box)
        x1, y1 = x1 - 1, y1 - 1
        polys.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    return draw_polygons(img, polys, colour, thickness, outline, holes=False)


# ----------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1024)
def text_mask(text: str, size: int = 14, bold: bool = True) -> np.ndarray:
    """Coverage mask (float32 in [0, 1], ``[h, w]``) of ``text`` rendered with matplotlib's Agg
    renderer at ``size`` pixels (DejaVu Sans, antialiased). Multi-line text is supported."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 72.0                                     # 1 pt == 1 px
    fig = Figure(figsize=(1, 1), dpi=dpi, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    t = fig.text(0, 0, text, fontsize=size, color="white", fontweight="bold" if bold else "normal",
                 family="DejaVu Sans", ha="left", va="bottom", parse_math=False)
    bb = t.get_window_extent(canvas.get_renderer())
    pad = 2
    w, h = int(math.ceil(bb.width)) + 2 * pad, int(math.ceil(bb.height)) + 2 * pad
    fig.set_size_inches(w / dpi, h / dpi)
    t.set_position((pad / w, pad / h))
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    mask = rgba[..., 0].astype(np.float32) / 255.0
    rows, cols = np.flatnonzero(mask.max(1) > 0.02), np.flatnonzero(mask.max(0) > 0.02)
    if rows.size:                                  # trim to the ink, keeping the line height
        mask = mask[:, max(cols[0] - 1, 0): cols[-1] + 2]
    mask.flags.writeable = False
    return mask


def draw_text(img: np.ndarray, text: str, xy: tuple[int, int], colour: Colour = WHITE,
              size: int | None = None, background: Colour | None = BLACK,
              background_alpha: float = 0.6, anchor: str = "tl", padding: int = 3,
              bold: bool = True, max_width: int | None = None) -> np.ndarray:
    """Write ``text`` in place at ``xy`` on a translucent box. ``anchor`` says which corner of the
    box sits at ``xy``: two letters, ``t``/``b`` (top/bottom) and ``l``/``r`` (left/right), or
    ``c`` for the centre. ``size`` is the font size in pixels (default: about 1/18 of the smaller
    side of the image, at least 10). Text wider than ``max_width`` (default: the image width) is
    set in a smaller font, down to 7 px."""
    if not text:
        return img
    h, w = img.shape[:2]
    if size is None:
        size = default_font_size(h, w)
    size = int(size)
    limit = (w if max_width is None else max_width) - 2 * padding
    m = text_mask(text, size, bold)
    while m.shape[1] > limit and size > 7:
        size = max(7, min(size - 1, int(size * limit / m.shape[1])))
        m = text_mask(text, size, bold)
    mh, mw = m.shape
    bh, bw = mh + 2 * padding, mw + 2 * padding
    x, y = int(round(xy[0])), int(round(xy[1]))
    if anchor == "c":
        x0, y0 = x - bw // 2, y - bh // 2
    else:
        y0 = y if "t" in anchor else y - bh
        x0 = x if "l" in anchor else x - bw
    x0, y0 = min(max(x0, 0), max(w - bw, 0)), min(max(y0, 0), max(h - bh, 0))   # keep it in frame
    bx1, by1 = min(x0 + bw, w), min(y0 + bh, h)
    region = img[y0:by1, x0:bx1].astype(np.float32)
    if background is not None and background_alpha > 0:
        region = region * (1 - background_alpha) + np.asarray(background, np.float32) * background_alpha
    tx0, ty0 = padding, padding
    mm = m[: max(0, by1 - y0 - ty0), : max(0, bx1 - x0 - tx0)][..., None]
    sub = region[ty0: ty0 + mm.shape[0], tx0: tx0 + mm.shape[1]]
    region[ty0: ty0 + mm.shape[0], tx0: tx0 + mm.shape[1]] = sub * (1 - mm) + np.asarray(colour, np.float32) * mm
    img[y0:by1, x0:bx1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return img


def default_font_size(h: int, w: int) -> int:
    return max(10, int(round(min(h, w) / 18)))


# ----------------------------------------------------------------------------------------------
# frame importance strip
# ----------------------------------------------------------------------------------------------

def importance_strip(importance: Any, current: int | None, width: int, height: int,
                     colour: Colour = (170, 170, 170), highlight: Colour = HIGHLIGHT,
                     background: Colour = (24, 24, 24)) -> np.ndarray:
    """A ``[height, width, 3]`` strip with one bar per frame whose height is the frame's importance
    (scaled to the clip's largest magnitude); the bar of frame ``current`` is highlighted and
    marked underneath."""
    imp = np.nan_to_num(np.asarray(importance, dtype=np.float64).ravel())
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = background
    n = imp.size
    if n == 0 or width < n or height < 4:
        return strip
    lo = min(0.0, float(imp.min()))
    span = float(imp.max()) - lo
    v = (imp - lo) / span if span > 0 else np.zeros_like(imp)
    marker = max(2, height // 8)
    top_pad = 2
    usable = height - marker - top_pad - 1
    edges = np.floor(np.linspace(0, width, n + 1)).astype(int)
    gap = 1 if width // n >= 4 else 0
    for i in range(n):
        x0, x1 = edges[i], max(edges[i] + 1, edges[i + 1] - gap)
        bh = max(1, int(round(v[i] * usable)))
        c = highlight if i == current else colour
        strip[height - marker - 1 - bh: height - marker - 1, x0:x1] = c
        if i == current:
            strip[height - marker:, x0:x1] = highlight
    return strip


# ----------------------------------------------------------------------------------------------
# overlay clip
# ----------------------------------------------------------------------------------------------

def _class_text(expl: Any, score: float | None, label: str | None) -> str:
    if score is None:
        score = getattr(expl, "score", None)
    if label is None:
        label = getattr(expl, "class_name", None)
        if label is None and getattr(expl, "target", None) is not None:
            label = f"class {expl.target}"
    parts = [p for p in (label, f"p={float(score):.2f}" if score is not None else None) if p]
    return "  ".join(parts)


def overlay_frames(frames: Any, explanation: Any, regions: Sequence[Sequence[Region]] | None = None,
                   score: float | None = None, label: str | None = None, importance: bool = True, *,
                   alpha: float = 0.45, cmap: str = "jet", contours: bool = True,
                   contour_mode: str = "top", q: float = 10.0, boxes: bool = False,
                   timestamps: Sequence[float] | None = None, min_side: int = 240,
                   title: str | None = None) -> np.ndarray:
    """Compose the overlay clip: each frame with its heatmap blended in and the region contours,
    a header bar above it with the method, class and score (left) and the frame number and time
    (right), and a frame-importance strip below (every frame's importance as a bar, this frame's
    in orange). Returns uint8 ``[T, H', W', 3]``.

    ``explanation`` is an object with ``maps`` (and optionally ``frame_importance``, ``score``,
    ``class_name``, ``target``, ``method``) or a plain ``[T, h, w]`` maps array. Maps of another
    size than the frames are resized bilinearly to the frames. ``regions`` are per-frame regions
    in the maps' pixel coordinates (default: :func:`clip_contours` with ``contour_mode``/``q``).
    Frames whose smaller side is below ``min_side`` are enlarged (by an integer factor) first so
    the text stays legible; ``H'`` is that height plus the header's and the strip's.
    """
    fr = as_rgb_frames(frames)
    maps = np.asarray(getattr(explanation, "maps", explanation), dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"expected maps [T, H, W], got {maps.shape}")
    if len(maps) != len(fr):
        raise ValueError(f"{len(fr)} frames but {len(maps)} maps")
    T, H, W = fr.shape[:3]
    k = max(1, math.ceil(min_side / min(H, W))) if min_side else 1
    if k > 1:
        H, W = H * k, W * k
        fr = resize_images(fr, (H, W))
    mh, mw = maps.shape[1:]
    if contours and regions is None:
        regions = clip_contours(maps, contour_mode, q)
    if contours and regions is not None and len(regions) != T:
        raise ValueError(f"{T} frames but regions for {len(regions)}")
    sx, sy = W / mw, H / mh
    if (mh, mw) != (H, W):
        maps = resize_maps(maps, (H, W))

    imp = getattr(explanation, "frame_importance", None) if importance else None
    font = default_font_size(H, W)
    thickness = max(1, round(min(H, W) / 160))
    strip_h = max(16, H // 7) if imp is not None else 0
    method = getattr(explanation, "method", None)
    head = title if title is not None else "  ".join(
        p for p in (method, _class_text(explanation, score, label)) if p)

    def when(t: int) -> str:
        s = f"{t + 1}/{T}"
        if timestamps is not None and t < len(timestamps) and timestamps[t] is not None:
            s += f" {float(timestamps[t]):.2f} s"
        return s

    # a header bar above the frame (so no text hides the picture): method, class and score on
    # the left, frame number and time on the right
    pad = 3
    bar_h = text_mask("Ag", font).shape[0] + 2 * pad + 2
    counter_w = max(text_mask(when(t), font).shape[1] for t in range(T)) + 2 * pad
    head_w = max(W - counter_w - 2 * pad, W // 3)

    out = np.empty((T, bar_h + H + strip_h, W, 3), np.uint8)
    for t in range(T):
        bar = out[t, :bar_h]
        bar[:] = (24, 24, 24)
        if head:
            draw_text(bar, head, (0, 1), size=font, background=None, padding=pad, max_width=head_w)
        draw_text(bar, when(t), (W, 1), size=font, anchor="tr", background=None, padding=pad,
                  colour=(220, 220, 220))
        img = blend(fr[t], maps[t], alpha, cmap)
        if contours and regions is not None:
            regs = [r if isinstance(r, Region) else Region.from_dict(r) for r in regions[t]]
            if (sx, sy) != (1.0, 1.0):
                regs = [r.scaled(sx, sy) for r in regs]
            if boxes:
                draw_boxes(img, regs, HIGHLIGHT, max(1, thickness - 1), outline=BLACK)
            draw_polygons(img, regs, WHITE, thickness, outline=BLACK)
        out[t, bar_h:bar_h + H] = img
        if strip_h:
            out[t, bar_h + H:] = importance_strip(imp, t, W, strip_h)
    return out


# ----------------------------------------------------------------------------------------------
# video
# ----------------------------------------------------------------------------------------------

def write_video(path: str | os.PathLike, frames: Any, fps: float = 8.0, crf: int = 18) -> str:
    """Write uint8 RGB frames ``[T, H, W, 3]`` as an H.264 MP4 (yuv420p) with PyAV. Odd widths or
    heights are padded by one edge pixel (yuv420p needs even sizes). The file is written to
    ``path + ".part"`` and moved into place when complete. Returns the path."""
    import av

    fr = as_rgb_frames(frames)
    if len(fr) == 0:
        raise ValueError("no frames to write")
    T, H, W = fr.shape[:3]
    if H % 2 or W % 2:
        fr = np.pad(fr, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    path = os.fspath(path)
    rate = Fraction(float(fps)).limit_denominator(1001)
    with atomic_path(path) as part, av.open(part, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = fr.shape[2], fr.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(int(crf))}
        for f in fr:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
