"""Stacks of maps and pictures through OpenCV: Gaussian blur and bilinear resize over the image axes
of arrays with any number of leading axes."""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np


def gaussian_blur(a: Any, sigma: float, radius: int | None = None) -> np.ndarray:
    """Gaussian blur of ``[..., H, W]`` float arrays over H and W, edges repeated; the kernel reaches
    ``radius`` pixels each way (default ``ceil(3 sigma)``). Float64 stays float64, else float32."""
    arr = np.asarray(a)
    arr = arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32)
    if sigma <= 0 or arr.size == 0:
        return arr.copy()
    r = max(1, int(math.ceil(3 * sigma)) if radius is None else int(radius))
    h, w = arr.shape[-2:]
    planes = np.ascontiguousarray(arr.reshape(-1, h, w))
    out = np.empty_like(planes)
    for i, plane in enumerate(planes):
        out[i] = cv2.GaussianBlur(plane, (2 * r + 1, 2 * r + 1), sigmaX=sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REPLICATE)
    return out.reshape(arr.shape)


def resize_maps(maps: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of map(s) ``[..., H, W]`` to ``size = (height, width)``, pixel centres
    aligned; float32."""
    a = np.asarray(maps, dtype=np.float32)
    h, w = a.shape[-2:]
    if (h, w) == tuple(size):
        return a.copy()
    planes = np.ascontiguousarray(a.reshape(-1, h, w))
    out = np.empty((len(planes), int(size[0]), int(size[1])), np.float32)
    for i, plane in enumerate(planes):
        out[i] = cv2.resize(plane, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return out.reshape(*a.shape[:-2], int(size[0]), int(size[1]))


def resize_images(images: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of uint8 image(s) ``[..., H, W, C]`` to ``size = (height, width)``."""
    a = np.asarray(images)
    if a.shape[-3:-1] == tuple(size):
        return a.astype(np.uint8, copy=False)
    h, w, c = a.shape[-3:]
    pics = np.ascontiguousarray(a.reshape(-1, h, w, c), dtype=np.uint8)
    out = np.empty((len(pics), int(size[0]), int(size[1]), c), np.uint8)
    for i, pic in enumerate(pics):
        out[i] = cv2.resize(pic, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR).reshape(out.shape[1:])
    return out.reshape(*a.shape[:-3], int(size[0]), int(size[1]), c)
