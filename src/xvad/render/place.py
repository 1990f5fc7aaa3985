"""Where a model's square input, and so an explanation map, lies in the frame a person sees: the fixed
crop's place (centre, full, pad) or, with the motion crop, each frame's own square. Maps are drawn back
there, so a reviewer sees them on the whole frame, at the place the model looked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..video.tensor import fit
from .overlay import colorize, draw_polygons, draw_polyline

CMAP = "jet"
LOW = 0.2                  # a map value up to this is transparent ...
OPACITY = 0.7              # ... and above it the opacity rises linearly to this at the maximum
BOX = (255, 224, 64)       # the outline of the square the model saw


def model_scale(config: dict, height: int, width: int) -> tuple[int, int]:
    """The size ``(height, width)`` of a ``height`` x ``width`` frame at a model's scale: resized as its
    fixed crop resizes it (the motion crop: as the centre crop does, its largest square's scale)."""
    crop = config.get("crop", "center")
    nh, nw, _, _ = fit(height, width, int(config["size"]), "center" if crop == "motion" else crop)
    return nh, nw


@dataclass(frozen=True)
class Placement:
    """Where the model's square input of ``size`` lies in a frame: the frame resized to ``height`` x
    ``width`` (the model's scale, :func:`model_scale`) has the square's top-left corner at ``(top,
    left)``, and the square covers ``span`` x ``span`` of its pixels (``size`` for a fixed crop; less for a
    motion-crop square smaller than the frame's short side)."""
    height: int
    width: int
    top: float
    left: float
    size: int
    span: float | None = None

    @classmethod
    def of(cls, config: dict, height: int, width: int, region: Any = None) -> Placement:
        """The placement in a ``height`` x ``width`` frame for a model with ``config``; ``region``: the
        frame's square (:class:`~xvad.video.crop.Region`, frame pixels) under the motion crop, which needs
        it (a fixed crop's place is :func:`~xvad.video.tensor.fit`'s, whatever ``region`` says)."""
        size = int(config["size"])
        if config.get("crop") != "motion":
            nh, nw, top, left = fit(height, width, size, config.get("crop", "center"))
            return cls(nh, nw, top, left, size)
        if region is None:
            raise ValueError("a motion-crop model's placement needs the frame's square (region)")
        nh, nw = model_scale(config, height, width)
        sy, sx = nh / height, nw / width
        return cls(nh, nw, region.top * sy, region.left * sx, size, region.width * sx)

    @property
    def step(self) -> float:
        """Model-scale pixels per map pixel."""
        return 1.0 if self.span is None else self.span / self.size

    def points(self, points: Any) -> np.ndarray:
        """Map pixel coordinates (pixel centres at integers) -> ``[N, 2]`` in 0..1 of the frame."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        k = self.step
        return np.column_stack([((p[:, 0] + 0.5) * k + self.left) / self.width,
                                ((p[:, 1] + 0.5) * k + self.top) / self.height])

    def tile(self, map_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The map in the whole frame at the model's scale, ``[height, width]``, and where it is defined
        (0..1: how much of each pixel it covers)."""
        if self.span is not None or self.top != int(self.top) or self.left != int(self.left):
            return self.on_frame(map_, self.height, self.width)
        top, left = int(self.top), int(self.left)
        out = np.zeros((self.height, self.width), np.float32)
        inside = np.zeros((self.height, self.width), np.float32)
        ys = slice(max(0, top), min(self.height, top + self.size))
        xs = slice(max(0, left), min(self.width, left + self.size))
        out[ys, xs] = map_[ys.start - top: ys.stop - top, xs.start - left: xs.stop - left]
        inside[ys, xs] = 1.0
        return out, inside

    def on_frame(self, map_: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The map in a frame of ``height`` x ``width`` (bilinear), and how much of each pixel it covers."""
        sx, sy, k = width / self.width, height / self.height, self.step
        m = np.array([[k * sx, 0, (self.left + 0.5 * k) * sx - 0.5],
                      [0, k * sy, (self.top + 0.5 * k) * sy - 0.5]], np.float64)

        def warp(a: np.ndarray) -> np.ndarray:
            return cv2.warpAffine(a, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)

        src = np.ascontiguousarray(map_, dtype=np.float32)
        return warp(src), warp(np.ones_like(src))

    def region_on_frame(self, region: Any, height: int, width: int) -> Any:
        """A contour region (:class:`~xvad.render.contours.Region`, map pixels) in a frame of ``height`` x
        ``width`` pixels."""
        sx, sy, k = width / self.width, height / self.height, self.step
        return region.scaled(k * sx, k * sy, self.left * sx, self.top * sy)

    def box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """The square's ``(x0, y0, x1, y1)`` in a frame of ``height`` x ``width`` pixels."""
        sx, sy, side = width / self.width, height / self.height, self.size * self.step
        return self.left * sx, self.top * sy, (self.left + side) * sx, (self.top + side) * sy


def rgba(maps: np.ndarray, cover: np.ndarray | None = None) -> np.ndarray:
    """0..1 maps -> uint8 ``[..., 4]``: the ``CMAP`` colour, and an opacity of 0 up to ``LOW`` rising to
    ``OPACITY`` at 1, times ``cover`` (where the map is defined; None: everywhere). What the console lays
    over the video, and the report and key frames over a whole frame."""
    m = np.asarray(maps, dtype=np.float32)
    opacity = np.clip((m - LOW) / (1.0 - LOW), 0.0, 1.0) * OPACITY
    if cover is not None:
        opacity = opacity * cover
    out = np.zeros((*m.shape, 4), np.uint8)
    out[..., :3] = colorize(m, CMAP)
    out[..., 3] = np.rint(opacity * 255.0).astype(np.uint8)
    if cover is not None:
        out[..., :3][np.asarray(cover) <= 0] = 0
    return out


def whole_frame(frame: np.ndarray, map01: np.ndarray, regions: list, place: Placement,
                box: bool = False) -> np.ndarray:
    """A whole frame with its map laid over it where the model looked (as the console draws it), the
    map's contours (:class:`~xvad.render.contours.Region` in map pixels) and, with ``box``, the outline of
    the square the model saw."""
    h, w = frame.shape[:2]
    m, cover = place.on_frame(map01, h, w)
    layer = rgba(m, cover).astype(np.float32)
    a = layer[..., 3:] / 255.0
    out = np.ascontiguousarray(np.rint(frame.astype(np.float32) * (1.0 - a) + layer[..., :3] * a).astype(np.uint8))
    scale = np.array([w, h], np.float64)
    thickness = max(2, round(min(h, w) / 240))
    if box:
        x0, y0, x1, y1 = place.box(h, w)
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) - 0.5
        draw_polyline(out, corners, BOX, max(1, thickness // 2))
    polys = [place.points(p) * scale - 0.5 for r in regions for p in (*r.polygons, *r.holes)]
    return draw_polygons(out, polys, thickness=thickness)
