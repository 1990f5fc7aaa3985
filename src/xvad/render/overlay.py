"""Pictures on numpy images: heatmap colouring and blending, polygons, boxes, text, the
frame-importance strip, and the overlay video's frames (written by :mod:`.outputs`).

Everything works on uint8 RGB arrays ``[H, W, 3]`` (or ``[T, H, W, 3]`` for clips). The drawing
functions (``draw_*``) draw in place with OpenCV and return the image, so calls can be chained.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

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
          vmax: float = 1.0, cover: Any = None) -> np.ndarray:
    """The frame with the coloured map laid over it at opacity ``alpha`` (uint8 RGB), times ``cover``
    (0..1 per pixel: where the map is defined; None: everywhere). A map of another size than the
    frame is resized bilinearly to the frame."""
    f = as_rgb_frames(np.asarray(frame)[None])[0]
    m = np.asarray(map_, dtype=np.float32)
    if m.shape != f.shape[:2]:
        m = resize_maps(m, f.shape[:2])
    heat = colorize(m, cmap, vmin, vmax).astype(np.float32)
    a: Any = alpha if cover is None else alpha * np.asarray(cover, np.float32)[..., None]
    out = f.astype(np.float32) * (1.0 - a) + heat * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# lines, polygons, boxes
# ----------------------------------------------------------------------------------------------

SHIFT = 4                                          # fractional bits of OpenCV point coordinates


def _fixed(points: Any) -> np.ndarray:
    """(x, y) points (pixel centres at integers) as OpenCV's fixed-point int32 ``[N, 2]``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(1)]
    return np.rint(p * (1 << SHIFT)).astype(np.int32)


def _drawable(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8 or img.ndim != 3 or not img.flags.c_contiguous or not img.flags.writeable:
        raise ValueError("drawing needs a writable, contiguous uint8 image [H, W, C]")
    return img


def _stroke(img: np.ndarray, lines: list[np.ndarray], colour: Colour, thickness: int, closed: bool) -> None:
    lines = [p for p in lines if len(p)]
    if not lines:
        return
    t = max(1, int(thickness))
    ink = tuple(int(c) for c in colour)
    kind = cv2.LINE_AA if t > 1 else cv2.LINE_8        # a one-pixel line stays solid
    cv2.polylines(img, lines, closed, ink, t, kind, SHIFT)
    for p in lines:                                # a single point is a dot
        if len(p) == 1:
            cv2.circle(img, (int(p[0, 0]), int(p[0, 1])), max(1, t // 2) << SHIFT, ink, -1, kind, SHIFT)


def draw_polyline(img: np.ndarray, points: Any, colour: Colour = WHITE, thickness: int = 2,
                  closed: bool = True) -> np.ndarray:
    """Draw a polyline of (x, y) points (pixel centres at integers) in place."""
    _stroke(_drawable(img), [_fixed(points)], colour, thickness, closed)
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
    lines = [_fixed(p) for r in regions for p in _polygons_of(r, holes)]
    if outline is not None:
        _stroke(_drawable(img), lines, outline, thickness + 2, True)
    _stroke(_drawable(img), lines, colour, thickness, True)
    return img


def draw_boxes(img: np.ndarray, regions_or_boxes: Iterable[Any], colour: Colour = WHITE,
               thickness: int = 1, outline: Colour | None = None) -> np.ndarray:
    """Draw boxes in place; items are :class:`Region` objects, region dicts or ``(x0, y0, x1, y1)``
    boxes with exclusive x1, y1 (the outline runs on the box's outermost pixels)."""
    corners = []
    for item in regions_or_boxes:
        box = item.box if isinstance(item, Region) else item["box"] if isinstance(item, dict) else item
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        corners.append(((x0, y0), (x1 - 1, y1 - 1)))
    _drawable(img)
    for c, t in ((outline, thickness + 2), (colour, thickness)):
        if c is not None:
            for p0, p1 in corners:
                cv2.rectangle(img, p0, p1, tuple(int(v) for v in c), max(1, int(t)), cv2.LINE_8)
    return img


# ----------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------

FONT, BOLD_FONT = cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX
_PLAIN = {"\u2026": "...", "\u00b7": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "x"}


def _plain(text: str) -> str:
    """``text`` in the characters OpenCV's fonts have (printable ASCII; others become '?')."""
    text = "".join(_PLAIN.get(c, c) for c in text)
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


@lru_cache(maxsize=64)
def _font(size: int, bold: bool) -> tuple[int, float, int, int, int]:
    """(face, scale, thickness, ascent, descent) for text about ``size`` pixels high (an ``Ag``
    line is ``1.15 * size`` pixels from ascender to descender)."""
    face = BOLD_FONT if bold else FONT
    (_, a1), d1 = cv2.getTextSize("Ag", face, 1.0, 1)
    scale = 1.15 * size / (a1 + d1)
    thickness = max(1, int(round(size / (14 if bold else 20))))
    (_, a), d = cv2.getTextSize("Ag", face, scale, thickness)
    return face, scale, thickness, a, d


def text_size(text: str, size: int = 14, bold: bool = True) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``text`` set at ``size`` (lines split at newlines; every
    line is as high as ``Ag``)."""
    face, scale, thickness, a, d = _font(int(size), bold)
    lines = _plain(text).split("\n")
    width = max(cv2.getTextSize(line, face, scale, thickness)[0][0] for line in lines)
    return width, len(lines) * (a + d) + (len(lines) - 1) * _gap(size)


def _gap(size: int) -> int:
    return max(1, int(size) // 4)


def draw_text(img: np.ndarray, text: str, xy: tuple[int, int], colour: Colour = WHITE,
              size: int | None = None, background: Colour | None = BLACK,
              background_alpha: float = 0.6, anchor: str = "tl", padding: int = 3,
              bold: bool = True, max_width: int | None = None) -> np.ndarray:
    """Write ``text`` in place at ``xy`` on a translucent box. ``anchor`` says which corner of the
    box sits at ``xy``: two letters, ``t``/``b`` (top/bottom) and ``l``/``r`` (left/right), or
    ``c`` for the centre. ``size`` is the font size in pixels (default: about 1/18 of the smaller
    side of the image, at least 10). Text wider than ``max_width`` (default: the image width) is
    set in a smaller font, down to 7 px. Only printable ASCII is drawn (others become '?')."""
    if not text:
        return img
    _drawable(img)
    h, w = img.shape[:2]
    if size is None:
        size = default_font_size(h, w)
    size = int(size)
    limit = (w if max_width is None else max_width) - 2 * padding
    tw, th = text_size(text, size, bold)
    while tw > limit and size > 7:
        size = max(7, min(size - 1, int(size * limit / tw)))
        tw, th = text_size(text, size, bold)
    bh, bw = th + 2 * padding, tw + 2 * padding
    x, y = int(round(xy[0])), int(round(xy[1]))
    if anchor == "c":
        x0, y0 = x - bw // 2, y - bh // 2
    else:
        y0 = y if "t" in anchor else y - bh
        x0 = x if "l" in anchor else x - bw
    x0, y0 = min(max(x0, 0), max(w - bw, 0)), min(max(y0, 0), max(h - bh, 0))   # keep it in frame
    if background is not None and background_alpha > 0:
        box = img[y0:y0 + bh, x0:x0 + bw].astype(np.float32)
        box = box * (1 - background_alpha) + np.asarray(background, np.float32) * background_alpha
        img[y0:y0 + bh, x0:x0 + bw] = np.clip(np.rint(box), 0, 255).astype(np.uint8)
    face, scale, thickness, a, d = _font(size, bold)
    for i, line in enumerate(_plain(text).split("\n")):
        base = y0 + padding + a + i * (a + d + _gap(size))
        cv2.putText(img, line, (x0 + padding, base), face, scale, tuple(int(c) for c in colour),
                    thickness, cv2.LINE_AA)
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
                   timestamps: Sequence[float | None] | None = None, min_side: int = 240,
                   title: str | None = None, places: Sequence[Any] | None = None) -> np.ndarray:
    """Compose the overlay clip: each frame with its heatmap blended in and the region contours,
    a header bar above it with the method, class and score (left) and the frame number and time
    (right), and a frame-importance strip below (every frame's importance as a bar, this frame's
    in orange). Returns uint8 ``[T, H', W', 3]``.

    ``explanation`` is an object with ``maps`` (and optionally ``frame_importance``, ``score``,
    ``class_name``, ``target``, ``method``) or a plain ``[T, h, w]`` maps array. Maps of another
    size than the frames are resized bilinearly to the frames, or, with ``places`` (one
    :class:`~xvad.render.place.Placement` per frame), drawn where the model looked in each whole frame.
    ``regions`` are per-frame regions in the maps' pixel coordinates (default: :func:`clip_contours`
    with ``contour_mode``/``q``).
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
    covers: list[Any] = [None] * T
    if places is not None:
        if len(places) != T:
            raise ValueError(f"{T} frames but {len(places)} placements")
        drawn = [place.on_frame(m, H, W) for m, place in zip(maps, places)]
        maps, covers = np.stack([m for m, _ in drawn]), [c for _, c in drawn]
    elif (mh, mw) != (H, W):
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
        stamp = timestamps[t] if timestamps is not None and t < len(timestamps) else None
        if stamp is not None:
            s += f" {float(stamp):.2f} s"
        return s

    # a header bar above the frame (so no text hides the picture): method, class and score on
    # the left, frame number and time on the right
    pad = 3
    bar_h = text_size("Ag", font)[1] + 2 * pad + 2
    counter_w = max(text_size(when(t), font)[0] for t in range(T)) + 2 * pad
    head_w = max(W - counter_w - 2 * pad, W // 3)

    out = np.empty((T, bar_h + H + strip_h, W, 3), np.uint8)
    for t in range(T):
        bar = out[t, :bar_h]
        bar[:] = (24, 24, 24)
        if head:
            draw_text(bar, head, (0, 1), size=font, background=None, padding=pad, max_width=head_w)
        draw_text(bar, when(t), (W, 1), size=font, anchor="tr", background=None, padding=pad,
                  colour=(220, 220, 220))
        img = blend(fr[t], maps[t], alpha, cmap, cover=covers[t])
        if contours and regions is not None:
            regs = [r if isinstance(r, Region) else Region.from_dict(r) for r in regions[t]]
            if places is not None:
                regs = [places[t].region_on_frame(r, H, W) for r in regs]
            elif (sx, sy) != (1.0, 1.0):
                regs = [r.scaled(sx, sy) for r in regs]
            if boxes:
                draw_boxes(img, regs, HIGHLIGHT, max(1, thickness - 1), outline=BLACK)
            draw_polygons(img, regs, WHITE, thickness, outline=BLACK)
        out[t, bar_h:bar_h + H] = img
        if strip_h:
            out[t, bar_h + H:] = importance_strip(imp, t, W, strip_h)
    return out

