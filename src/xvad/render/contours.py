"""Regions of high attribution: one threshold per clip, iso-line polygons and connected components.

The threshold is chosen once for the whole clip (``top``: keep the top q % of all values of the
clip; ``otsu``: Otsu's threshold over the clip's values), so a frame with little attribution gets
few or no regions instead of being stretched to the same share as every other frame.

The returned level always lies strictly between the values that are kept and those that are
not, so ``mask = map > level`` is the kept set and the iso-line at ``level`` (traced by contourpy)
runs between kept and dropped pixel centres. Coordinates are in pixels of the map, x to the right
and y down, with pixel centres at integers; boxes are ``(x0, y0, x1, y1)`` with x1, y1 exclusive
(the same convention as :mod:`xvad.synthetic`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .image import gaussian_blur
from .threshold import threshold

Point = tuple[float, float]
Polygon = list[Point]
Box = tuple[int, int, int, int]

# ----------------------------------------------------------------------------------------------
# connected components
# ----------------------------------------------------------------------------------------------

def _components(mask: Any, connectivity: int = 8) -> tuple[np.ndarray, int, np.ndarray]:
    """OpenCV's connected components of a 2-D mask, renumbered in raster order of each component's
    first pixel: ``(labels int32 [H, W], count, stats [count + 1, 5])`` (stats as OpenCV's
    ``CC_STAT_LEFT, TOP, WIDTH, HEIGHT, AREA``; row 0 is the background)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"label expects a 2-D mask, got shape {m.shape}")
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(m, dtype=np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
    n = count - 1
    if n > 1:
        ids, first = np.unique(labels.ravel(), return_index=True)
        fg = ids > 0
        order = ids[fg][np.argsort(first[fg], kind="stable")]   # old label of new labels 1..n
        renumber = np.zeros(count, np.int32)
        renumber[order] = np.arange(1, count, dtype=np.int32)
        labels = renumber[labels]
        stats = stats[np.r_[0, order]]
    return labels.astype(np.int32, copy=False), n, stats


def label(mask: Any, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected components of a 2-D boolean mask: ``(labels int32 [H, W], count)``, labels 1..count
    in raster order of each component's first pixel, 0 for background. ``connectivity`` is 4 or 8."""
    labels, n, _ = _components(mask, connectivity)
    return labels, n


# ----------------------------------------------------------------------------------------------
# regions
# ----------------------------------------------------------------------------------------------

@dataclass
class Region:
    """One connected region of a frame's map above the clip's level.

    ``polygon`` is the region's outer iso-line (closed: last point equals the first). In rare
    cases (pixels touching only at a corner) one 8-connected region has more than one outer
    iso-line; the others are in ``parts``. ``holes`` are iso-lines around dropped pixels inside.
    ``area`` counts the region's pixels, ``peak`` is the (x, y) of its highest value and ``mass``
    its share of the frame map's total.
    """
    polygon: Polygon
    box: Box
    area: int
    peak: tuple[int, int]
    mass: float
    value: float = 0.0                       # map value at the peak
    holes: list[Polygon] = field(default_factory=list)
    parts: list[Polygon] = field(default_factory=list)

    @property
    def polygons(self) -> list[Polygon]:
        """All outer iso-lines, the main one first."""
        return [self.polygon, *self.parts]

    def scaled(self, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> Region:
        """The region in another resolution, moved by ``(dx, dy)`` pixels of it: polygon coordinates map
        pixel centres to pixel centres (``x' = (x + 0.5) * sx - 0.5 + dx``), boxes scale their edges."""
        def tf(poly: Polygon) -> Polygon:
            return [((x + 0.5) * sx - 0.5 + dx, (y + 0.5) * sy - 0.5 + dy) for x, y in poly]
        x0, y0, x1, y1 = self.box
        box = (int(math.floor(x0 * sx + dx)), int(math.floor(y0 * sy + dy)),
               int(math.ceil(x1 * sx + dx)), int(math.ceil(y1 * sy + dy)))
        peak = (int(round((self.peak[0] + 0.5) * sx - 0.5 + dx)), int(round((self.peak[1] + 0.5) * sy - 0.5 + dy)))
        return Region(tf(self.polygon), box, int(round(self.area * sx * sy)), peak, self.mass,
                      self.value, [tf(p) for p in self.holes], [tf(p) for p in self.parts])

    def to_dict(self, decimals: int = 1) -> dict:
        def rp(poly: Polygon) -> list[list[float]]:
            return [[round(float(x), decimals), round(float(y), decimals)] for x, y in poly]
        return {
            "polygon": rp(self.polygon),
            "box": [int(v) for v in self.box],
            "area": int(self.area),
            "peak": [int(self.peak[0]), int(self.peak[1])],
            "mass": round(float(self.mass), 6),
            "value": round(float(self.value), 6),
            "holes": [rp(p) for p in self.holes],
            "parts": [rp(p) for p in self.parts],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Region:
        def tp(poly: Sequence[Sequence[float]]) -> Polygon:
            return [(float(x), float(y)) for x, y in poly]
        x0, y0, x1, y1 = (int(v) for v in d["box"])
        return cls(tp(d["polygon"]), (x0, y0, x1, y1), int(d["area"]),
                   (int(d["peak"][0]), int(d["peak"][1])), float(d["mass"]),
                   float(d.get("value", 0.0)), [tp(p) for p in d.get("holes", [])],
                   [tp(p) for p in d.get("parts", [])])


def polygon_area(poly: Any) -> float:
    """Signed shoelace area of a polygon given as (x, y) points."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def points_in_polygon(points: Any, poly: Any) -> np.ndarray:
    """Even-odd rule test of (x, y) points against a polygon of (x, y) points: bool ``[N]``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return np.zeros(len(pts), bool)
    if not np.array_equal(p[0], p[-1]):
        p = np.vstack([p, p[:1]])
    x0, y0, x1, y1 = p[:-1, 0], p[:-1, 1], p[1:, 0], p[1:, 1]
    px, py = pts[:, :1], pts[:, 1:]
    crosses = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    return np.count_nonzero(crosses & (px < xc), axis=1) % 2 == 1


def point_in_polygon(x: float, y: float, poly: Any) -> bool:
    """Even-odd rule test of one point against a polygon of (x, y) points."""
    return bool(points_in_polygon([(x, y)], poly)[0])


def _iso_lines(z: np.ndarray, level: float) -> list[np.ndarray]:
    """Closed iso-lines of a 2-D map at ``level`` in map pixel coordinates; the map is padded by
    one pixel below the level so that lines touching the border close along it."""
    import contourpy

    fill = float(z.min())
    if not fill < level:
        fill = level - 1.0
    zp = np.pad(z.astype(np.float64), 1, mode="constant", constant_values=fill)
    gen = contourpy.contour_generator(z=zp, line_type=contourpy.LineType.Separate)
    out = []
    for line in gen.lines(level):
        line = np.asarray(line, dtype=np.float64) - 1.0
        if len(line) < 3:
            continue
        if not np.array_equal(line[0], line[-1]):
            line = np.vstack([line, line[:1]])
        out.append(line)
    return out


def _nearest_kept(pts: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For points on grid edges: the kept pixel nearest each point within its 2 x 2 block,
    as ``(x, y, found)`` arrays."""
    h, w = mask.shape
    bx, by = np.floor(pts[:, 0]).astype(np.int64), np.floor(pts[:, 1]).astype(np.int64)
    best_x, best_y = np.zeros(len(pts), np.int64), np.zeros(len(pts), np.int64)
    best_d = np.full(len(pts), np.inf)
    for dy in (0, 1):
        for dx in (0, 1):
            cx, cy = bx + dx, by + dy
            ok = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            cxc, cyc = np.clip(cx, 0, w - 1), np.clip(cy, 0, h - 1)
            ok &= mask[cyc, cxc]
            d = (cx - pts[:, 0]) ** 2 + (cy - pts[:, 1]) ** 2
            better = ok & (d < best_d)
            best_x = np.where(better, cxc, best_x)
            best_y = np.where(better, cyc, best_y)
            best_d = np.where(better, d, best_d)
    return best_x, best_y, np.isfinite(best_d)


def _line_owners(lines: list[np.ndarray], mask: np.ndarray, labels: np.ndarray,
                 samples: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """For closed iso-lines: (label of the region each bounds, whether it is that region's outer
    boundary), vectorised over all lines.

    Each vertex of an iso-line lies on a grid edge between a kept and a dropped pixel; the kept
    pixel nearest the vertex belongs to the region the line bounds. A line is an outer boundary
    when the kept side is its interior: the kept pixel lies on the left of the direction of travel
    exactly when the shoelace area is positive (a vote over a few vertices per line)."""
    n = np.array([len(line) - 1 for line in lines], np.int64)          # vertices without the repeat
    offset = np.r_[0, np.cumsum(n)[:-1]]
    pts = np.concatenate([line[:-1] for line in lines])
    line_of = np.repeat(np.arange(len(lines)), n)
    local = np.arange(len(pts)) - offset[line_of]
    nxt = offset[line_of] + (local + 1) % n[line_of]
    cross = pts[:, 0] * pts[nxt, 1] - pts[:, 1] * pts[nxt, 0]
    area2 = np.add.reduceat(cross, offset)                       # twice the signed area per line

    k = np.minimum(n, samples)
    s_line = np.repeat(np.arange(len(lines)), k)
    s_idx = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
    pos = s_idx * n[s_line] // k[s_line]
    at = offset[s_line] + pos
    prev = offset[s_line] + (pos - 1) % n[s_line]
    nxt = offset[s_line] + (pos + 1) % n[s_line]
    v = pts[at]
    d = pts[nxt] - pts[prev]
    x, y, found = _nearest_kept(v, mask)
    side = d[:, 0] * (y - v[:, 1]) - d[:, 1] * (x - v[:, 0])     # > 0: kept pixel on the left
    lab = np.where(found, labels[y, x], 0)
    starts = np.r_[0, np.cumsum(k)[:-1]]
    owner = np.maximum.reduceat(lab, starts)
    agree = np.add.reduceat((found & (np.sign(side) == np.sign(area2[s_line]))).astype(np.int64), starts)
    votes = np.add.reduceat(found.astype(np.int64), starts)
    return owner, agree * 2 >= np.maximum(votes, 1)


def _min_pixels(min_area: float, shape: tuple[int, int]) -> float:
    """``min_area`` below 1 is a share of the frame's pixels, otherwise a pixel count."""
    return min_area * shape[0] * shape[1] if 0 < min_area < 1 else min_area


def find_regions(mask_or_map: Any, level: float | None = None, *, min_area: float = 0.002,
                 connectivity: int = 8, max_regions: int | None = None) -> list[Region]:
    """Regions of one frame: connected components of ``map > level`` with their iso-line polygons.

    ``mask_or_map`` is a 2-D float map (then ``level`` is its threshold; ``None`` means the top
    10 % of this frame alone) or a boolean mask (then the mask itself is contoured at 0.5, peak and
    mass refer to the mask). Regions smaller than ``min_area`` (a share of the frame if below 1,
    else pixels) are dropped. Regions come sorted by mass, largest first.
    """
    arr = np.asarray(mask_or_map)
    if arr.ndim != 2:
        raise ValueError(f"find_regions expects one 2-D frame map, got shape {arr.shape}")
    if arr.dtype == bool:
        z = arr.astype(np.float64)
        level = 0.5
    else:
        z = arr.astype(np.float64)
        bad = ~np.isfinite(z)
        if bad.any():                              # non-finite values count as the map's floor
            z[bad] = z[~bad].min() if (~bad).any() else 0.0
        if level is None:
            level = threshold(z, "top", 10.0)
    level = float(level)
    mask = z > level
    if not mask.any():
        return []
    labels, n, stats = _components(mask, connectivity)
    flat = labels.ravel()
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    min_px = _min_pixels(min_area, mask.shape)
    keep = np.flatnonzero(areas >= max(min_px, 1))
    keep = keep[keep > 0]
    if keep.size == 0:
        return []
    zf = z.ravel()
    weights = np.clip(zf, 0, None)
    total = float(weights.sum())
    masses = np.bincount(flat, weights=weights, minlength=n + 1)
    keep = keep[np.lexsort((-areas[keep], -masses[keep]))]     # by mass, then area, descending
    if max_regions is not None:
        keep = keep[:max_regions]

    # boxes (exclusive x1, y1) from OpenCV's statistics; the peak is each label's highest value
    h, w = mask.shape
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]
    fg = np.flatnonzero(flat)
    labs = flat[fg]
    order = np.lexsort((-zf[fg], labs))                        # highest value first per label
    first = np.r_[0, np.flatnonzero(np.diff(labs[order])) + 1]
    peak_at = np.zeros(n + 1, np.int64)
    peak_at[labs[order[first]]] = fg[order[first]]

    # iso-lines, assigned to the kept regions (a cheap first-vertex test skips the rest)
    wanted = np.zeros(n + 1, bool)
    wanted[keep] = True
    lines = _iso_lines(z, level)
    outer: dict[int, list[np.ndarray]] = {}
    holes: dict[int, list[np.ndarray]] = {}
    if lines:
        owners, is_outer = _line_owners(lines, mask, labels)
        for line, owner, out in zip(lines, owners, is_outer):
            if owner and wanted[owner]:
                (outer if out else holes).setdefault(int(owner), []).append(line)

    def as_poly(line: np.ndarray) -> Polygon:
        return [(float(x), float(y)) for x, y in line]

    regions: list[Region] = []
    for kept in keep:
        lab = int(kept)
        lines_out = sorted(outer.get(lab, []), key=lambda line: -abs(polygon_area(line)))
        if lines_out:
            poly = as_poly(lines_out[0])
        else:                                      # not expected; fall back to the box outline
            a, b, c, d = x0[lab] - 0.5, y0[lab] - 0.5, x1[lab] - 0.5, y1[lab] - 0.5
            poly = [(a, b), (c, b), (c, d), (a, d), (a, b)]
        py, px = divmod(int(peak_at[lab]), w)
        regions.append(Region(
            polygon=poly,
            box=(int(x0[lab]), int(y0[lab]), int(x1[lab]), int(y1[lab])),
            area=int(areas[lab]),
            peak=(px, py),
            mass=float(masses[lab] / total) if total > 0 else 0.0,
            value=float(zf[peak_at[lab]]),
            holes=[as_poly(line) for line in holes.get(lab, [])],
            parts=[as_poly(line) for line in lines_out[1:]],
        ))
    return regions


def _maps_of(explanation_or_maps: Any) -> np.ndarray:
    maps = getattr(explanation_or_maps, "maps", explanation_or_maps)
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"expected maps of shape [T, H, W], got {maps.shape}")
    return maps


def clip_contours(explanation_or_maps: Any, mode: str = "top", q: float = 10.0, *,
                  level: float | None = None, min_area: float = 0.002, connectivity: int = 8,
                  max_regions: int | None = None) -> list[list[Region]]:
    """Regions per frame for a clip (an explanation with ``.maps`` or a ``[T, H, W]`` array), with
    one threshold for the whole clip (:func:`threshold` with ``mode``/``q``, or ``level``)."""
    maps = _maps_of(explanation_or_maps)
    if level is None:
        level = threshold(maps, mode, q)
    return [find_regions(m, level, min_area=min_area, connectivity=connectivity,
                         max_regions=max_regions) for m in maps]


def smooth(maps: Any, sigma: float) -> np.ndarray:
    """Gaussian blur of ``[..., H, W]`` maps over H and W (kernel radius ``round(3 sigma)``, edges
    repeated); float32.

    Pixel-level maps (saliency and its kin) are speckled; contours of a lightly blurred copy outline
    the areas that matter instead of hundreds of single pixels.
    """
    a = np.asarray(maps, dtype=np.float32)
    if sigma <= 0:
        return a
    return gaussian_blur(a, sigma, radius=max(1, int(round(3 * sigma))))
