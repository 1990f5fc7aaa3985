"""Independent references for the image code of xvad.render: labelling by breadth-first search and
Otsu's threshold by trying every split, both written plainly with no library image code."""
from __future__ import annotations

from collections import deque

import numpy as np


def bfs_label(mask, connectivity):
    """Reference labelling by breadth-first search: labels 1..n in raster order of first pixels."""
    h, w = mask.shape
    out = np.zeros((h, w), int)
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not out[y, x]:
                n += 1
                out[y, x] = n
                todo = deque([(y, x)])
                while todo:
                    cy, cx = todo.popleft()
                    for dy, dx in steps:
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not out[ny, nx]:
                            out[ny, nx] = n
                            todo.append((ny, nx))
    return out, n


def brute_otsu(values):
    """Otsu by trying every split between consecutive distinct sorted values; returns the level
    midway between the two classes (or None for fewer than two distinct values)."""
    v = np.sort(np.asarray(values, np.float64).ravel())
    best, level = -1.0, None
    cs = np.cumsum(v)
    n = v.size
    for i in np.flatnonzero(np.diff(v) > 0):
        w0, w1 = i + 1, n - i - 1
        m0, m1 = cs[i] / w0, (cs[-1] - cs[i]) / w1
        between = w0 * w1 * (m0 - m1) ** 2
        if between > best:
            best, level = between, (v[i] + v[i + 1]) / 2
    return level


def brute_otsu_binned(values, bins=256):
    """Otsu over ``bins`` equal bins between the minimum and the maximum (numpy's histogram bins):
    every cut between two bins tried in turn; returns the edge after the best cut's last bin (the
    first best cut when several tie)."""
    v = np.asarray(values, np.float64).ravel()
    hist, edges = np.histogram(v, bins=bins, range=(v.min(), v.max()))
    centres = (edges[:-1] + edges[1:]) / 2
    best, cut = -1.0, None
    for i in range(bins - 1):
        w0, w1 = hist[: i + 1].sum(), hist[i + 1:].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (hist[: i + 1] * centres[: i + 1]).sum() / w0
        m1 = (hist[i + 1:] * centres[i + 1:]).sum() / w1
        between = w0 * w1 * (m0 - m1) ** 2
        if between > best * (1 + 1e-12):
            best, cut = between, i
    return float(edges[cut + 1])


def bilinear_resize(a, size):
    """Bilinear resampling of the last two axes with pixel centres aligned (half-pixel rule, edge
    samples clamped), one axis at a time, in float64."""
    out = np.asarray(a, np.float64)
    for axis, n in ((out.ndim - 2, size[0]), (out.ndim - 1, size[1])):
        m = out.shape[axis]
        pos = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0, m - 1)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, m - 1)
        shape = [1] * out.ndim
        shape[axis] = n
        t = (pos - i0).reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - t) + np.take(out, i1, axis=axis) * t
    return out


def gaussian_reference(a, sigma, radius):
    """Separable Gaussian blur by explicit sums over a padded copy (edges repeated), float64."""
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = np.asarray(a, np.float64)
    for axis in (out.ndim - 2, out.ndim - 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(wt * np.take(p, np.arange(i, i + n), axis=axis) for i, wt in enumerate(k))
    return out
