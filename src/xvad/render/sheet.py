"""Contact sheet: one PNG comparing explanation methods over a clip's frames (matplotlib Agg).

Columns are frames (all of them, or an even subsample); the first row shows the plain frames with
their index (and time), then one row per method with the heatmap blended over the frame and the
region contours, each cell titled with that frame's importance (the clip's most important frame
in orange). The figure title gives the score, class and target.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..atomic import atomic_path
from .contours import Region, clip_contours
from .overlay import HIGHLIGHT, as_rgb_frames, blend

MAX_COLUMNS = 16


def frame_subsample(n: int, columns: int | None = None) -> np.ndarray:
    """Indices of the frames to show: all ``n`` when they fit in ``columns`` (default 16), else
    ``columns`` indices spread evenly from the first frame to the last."""
    k = MAX_COLUMNS if columns is None else max(1, int(columns))
    if n <= k:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, k)).astype(int))


def as_named(explanations: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """Explanations keyed by name: a mapping is kept; a sequence is keyed by each item's ``method``
    (``method_2``, ``method_3`` ... for repeats)."""
    if isinstance(explanations, Mapping):
        return dict(explanations)
    named: dict[str, Any] = {}
    for i, e in enumerate(explanations):
        base = str(getattr(e, "method", None) or f"method{i}")
        name, k = base, 2
        while name in named:
            name, k = f"{base}_{k}", k + 1
        named[name] = e
    return named


def headline(expl: Any) -> str:
    """'score 0.931 · class anomaly · target 1' for an explanation (fields that exist)."""
    parts = []
    score = getattr(expl, "score", None)
    if score is not None:
        parts.append(f"score {float(score):.3f}")
    name = getattr(expl, "class_name", None)
    if name is not None:
        parts.append(f"class {name}")
    target = getattr(expl, "target", None)
    if target is not None:
        parts.append(f"target {target}")
    return "  \u00b7  ".join(parts)


def contact_sheet(frames: Any, explanations: Mapping[str, Any] | Sequence[Any],
                  path: str | os.PathLike, columns: int | None = None, contours: bool = True, *,
                  timestamps: Sequence[float | None] | None = None, contour_mode: str = "top",
                  q: float = 10.0, regions: Mapping[str, Sequence[Sequence[Region]]] | None = None,
                  alpha: float = 0.45, cmap: str = "jet", title: str | None = None,
                  cell: float = 1.6, dpi: int = 100, places: Sequence[Any] | None = None) -> str:
    """Write the contact sheet PNG to ``path`` (atomically, via ``path + ".part"``); returns the path.

    ``frames`` are uint8 RGB ``[T, H, W, 3]``; each explanation has ``maps [T, h, w]`` (resized
    to the frames when their size differs) and, if available, ``frame_importance``, ``score``,
    ``class_name`` and ``target``. ``columns`` caps the number of frames shown (default 16).
    ``regions`` optionally gives precomputed per-frame regions per method, in map coordinates.
    ``places`` (one :class:`~xvad.render.place.Placement` per frame): the frames are whole frames and each
    map is drawn where the model looked in them.
    ``cell`` is the width of one frame in inches.
    """
    from matplotlib import patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fr = as_rgb_frames(frames)
    named = as_named(explanations)
    T, H, W = fr.shape[:3]
    for name, e in named.items():
        n = len(np.asarray(getattr(e, "maps", e)))
        if n != T:
            raise ValueError(f"{T} frames but {n} maps for {name!r}")
    idx = frame_subsample(T, columns)
    ncols, nrows = len(idx), 1 + len(named)

    # layout in inches: fixed margins, cells keep the frames' aspect ratio
    cw, ch = cell, cell * H / W
    gap, head = 0.06, 0.30                         # between cells; above each cell (its title)
    left, right, top, bottom = 0.40, 0.10, 0.55, 0.10
    fw = left + right + ncols * cw + (ncols - 1) * gap
    fh = top + bottom + nrows * (ch + head)
    fig = Figure(figsize=(fw, fh), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    font = 8 if cell >= 1.2 else 6
    stroke = [patheffects.withStroke(linewidth=2.6, foreground="black")]
    highlight = tuple(c / 255 for c in HIGHLIGHT)

    def axes_at(r: int, c: int):
        x = left + c * (cw + gap)
        y = fh - top - r * (ch + head) - head - ch
        ax = fig.add_axes((x / fw, y / fh, cw / fw, ch / fh))
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_linewidth(0.5)
        return ax

    for c, t in enumerate(idx):
        ax = axes_at(0, c)
        ax.imshow(fr[t], interpolation="nearest")
        label = f"#{t}"
        if timestamps is not None and t < len(timestamps) and timestamps[t] is not None:
            label += f"  {float(timestamps[t]):.2f} s"
        ax.set_title(label, fontsize=font, pad=3)
        if c == 0:
            ax.set_ylabel("frames", fontsize=font + 1)

    for r, (name, e) in enumerate(named.items(), start=1):
        maps = np.asarray(getattr(e, "maps", e), dtype=np.float32)
        mh, mw = maps.shape[1:]
        regs = None
        if contours:
            regs = regions.get(name) if regions is not None else None
            if regs is None:
                regs = clip_contours(maps, contour_mode, q)
        imp = getattr(e, "frame_importance", None)
        imp = None if imp is None else np.asarray(imp, dtype=np.float64).ravel()
        best = int(np.nanargmax(imp)) if imp is not None and imp.size and np.isfinite(imp).any() else -1
        sx, sy = W / mw, H / mh
        for c, t in enumerate(idx):
            ax = axes_at(r, c)
            if places is not None:      # the map where the model looked in the whole frame
                m, cover = places[t].on_frame(maps[t], H, W)
                ax.imshow(blend(fr[t], m, alpha, cmap, cover=cover), interpolation="nearest")
            else:
                ax.imshow(blend(fr[t], maps[t], alpha, cmap), interpolation="nearest")
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)
            if regs is not None:
                for reg in regs[t]:
                    reg = reg if isinstance(reg, Region) else Region.from_dict(reg)
                    if places is not None:
                        reg = places[t].region_on_frame(reg, H, W)
                    elif (sx, sy) != (1.0, 1.0):
                        reg = reg.scaled(sx, sy)
                    for poly in reg.polygons + reg.holes:
                        p = np.asarray(poly)
                        ax.plot(p[:, 0], p[:, 1], color="white", linewidth=1.1, path_effects=stroke)
            if imp is not None and t < imp.size:
                top_frame = t == best
                ax.set_title(f"imp {imp[t]:.2f}", fontsize=font, pad=3,
                             color=highlight if top_frame else "black",
                             fontweight="bold" if top_frame else "normal")
                if top_frame:
                    for s in ax.spines.values():
                        s.set_edgecolor(highlight)
                        s.set_linewidth(2.0)
            if c == 0:
                ax.set_ylabel(name, fontsize=font + 1, fontweight="bold")

    first = next(iter(named.values()), None)
    text = title if title is not None else headline(first) if first is not None else ""
    if ncols < T:
        text += f"  ({ncols} of {T} frames)"
    fig.text(left / fw, 1 - 0.12 / fh, text, fontsize=font + 3, fontweight="bold", va="top", ha="left")

    path = os.fspath(path)
    with atomic_path(path) as part, open(part, "wb") as fh_:
        canvas.print_png(fh_)
    return path
