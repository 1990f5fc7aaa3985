"""Optical-flow features of the 16 uniformly sampled frames of every surv-fight clip, each frame paired
with the next decoded one (the shipped motion rule). Flow: OpenCV DIS (medium preset) on grey frames
scaled to 320 px wide. Writes into ``CACHE/pooled/`` the layout `head_cv.py` reads:

  flowxy__max.npy    [232, 16, 1280]  frozen Lite0 (ImageNet, bf16, max-pooled) on the flow drawn as an
                                      image: R = 128 + 8·dx, G = 128 + 8·dy, B = 16·|d| (clipped)
  flowhsv__max.npy   [232, 16, 1280]  the same on the usual colour wheel: hue = direction, value = 16·|d|
  flowstats.npy      [232, 16, 35]    hand-made statistics per frame: magnitude percentiles, share of
                                      pixels above 1/2/4/8 px, 4x4 grid of mean magnitude (sorted),
                                      direction histogram weighted by magnitude, its entropy, and the
                                      mean resultant length of the moving pixels' directions

Usage: python flow.py DATA CACHE
"""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import torch
from common import frozen_lite0, next_index, sampled_index, start

from xvad.video import preprocess_as, read_frames

WIDTH = 320


def grey(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (WIDTH, max(2, round(h * WIDTH / w))), interpolation=cv2.INTER_AREA)


def flow_images(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = flow[..., 0], flow[..., 1]
    mag = np.hypot(dx, dy)
    xy = np.stack([128 + 8 * dx, 128 + 8 * dy, 16 * mag], -1)
    hsv = np.stack([(np.arctan2(dy, dx) % (2 * np.pi)) * 90 / np.pi, np.full_like(mag, 255),
                    np.clip(16 * mag, 0, 255)], -1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return np.clip(xy, 0, 255).astype(np.uint8), rgb


def flow_stats(flow: np.ndarray) -> np.ndarray:
    dx, dy = flow[..., 0], flow[..., 1]
    mag = np.hypot(dx, dy)
    h, w = mag.shape
    pct = np.percentile(mag, [50, 75, 90, 95, 99])
    share = [(mag > t).mean() for t in (1, 2, 4, 8)]
    grid = np.array([c.mean() for r in np.array_split(mag, 4, 0) for c in np.array_split(r, 4, 1)])
    ang = np.arctan2(dy, dx)
    hist = np.bincount(((ang + np.pi) / (2 * np.pi) * 8).astype(int).clip(0, 7).ravel(),
                       weights=mag.ravel(), minlength=8)
    p = hist / max(hist.sum(), 1e-6)
    entropy = -(p * np.log(p + 1e-9)).sum()
    moving = mag > 1
    resultant = (np.hypot(np.cos(ang[moving]).sum(), np.sin(ang[moving]).sum()) / moving.sum()
                 if moving.any() else 0.0)
    return np.concatenate([np.log1p(pct), share, np.log1p(np.sort(grid)[::-1]), p, [entropy, resultant]])


def main() -> None:
    a, data = start(doc=__doc__)
    cv2.setNumThreads(2)
    model = frozen_lite0(data.classes)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    n = len(data)
    out = {k: np.zeros((n, 16, 1280), np.float16) for k in ("flowxy", "flowhsv")}
    stats = np.zeros((n, 16, 35), np.float32)
    t0, t_flow = time.time(), 0.0
    for i, sample in enumerate(data.samples):
        frames, _ = read_frames(sample.path)
        idx = sampled_index(len(frames))
        nxt = next_index(idx, len(frames))
        xy, hsv = [], []
        t1 = time.time()
        for k, (s, e) in enumerate(zip(idx, nxt)):
            flow = dis.calc(grey(frames[s]), grey(frames[e]), None)
            stats[i, k] = flow_stats(flow)
            a_, b_ = flow_images(flow)
            xy.append(a_)
            hsv.append(b_)
        t_flow += time.time() - t1
        with torch.no_grad():
            out["flowxy"][i] = model.frame_features(preprocess_as(np.stack(xy), model.config)).float().numpy()
            out["flowhsv"][i] = model.frame_features(preprocess_as(np.stack(hsv), model.config)).float().numpy()
        if i % 20 == 0:
            print(f"{i + 1}/{n} clips, {time.time() - t0:.0f}s (flow {t_flow:.0f}s)", flush=True)
    os.makedirs(os.path.join(a.cache, "pooled"), exist_ok=True)
    for k, x in out.items():
        np.save(os.path.join(a.cache, "pooled", f"{k}__max.npy"), x)
    np.save(os.path.join(a.cache, "pooled", "flowstats.npy"), stats)
    print(f"done in {time.time() - t0:.0f}s, flow {t_flow:.0f}s")


if __name__ == "__main__":
    main()
