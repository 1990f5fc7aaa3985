"""Where the backbone looks in a wide frame: the centre crop (as the package does), a motion-guided
crop and tiles covering the whole frame, for the two shipped streams. Each clip's frames are sampled
as the shipped model samples them (``read_frame_pairs`` with its frame count and rate: 16 frames at
8 fps, each paired with the frame decoded just after it), and frozen Lite0 (ImageNet, bf16, last map
max-pooled) sees:

  center_{motion,flow}   the package's images, shorter side resized to 224 and centre-cropped: the
                         shipped model's own features, read from the package's feature cache
                         (``xvad.features.FeatureCache``) when there; every ``--check-every``-th clip is
                         recomputed anyway (its cost, and the largest gap to the cache, in cost.json)
  crop_{motion,flow}     one square per clip, at native resolution: the smallest of a ladder of sides
                         (224 px, or the short side if smaller, up to the short side) whose best placement
                         holds at least ``--share`` of the clip's moving pixels (a pixel moved when a channel
                         changes by more than 8 grey levels to its partner, counted over the 16 pairs), at
                         that placement. The motion image is cut from the native full-frame one (cutting
                         and recomputing are the same). The flow is recomputed on the cropped frame pairs
                         (``xvad.video.flow_images``: DIS at 320 px across the crop), since the full frame's
                         flow, at 320 px across the frame, gives a far fight in a 720p frame a few dozen
                         flow pixels.
  tiles_{motion,flow}    squares of the short side, ceil(long / short - 0.05) of them spread evenly along
                         the long side from one end to the other (two for 4:3 up to 2:1 frames): the whole
                         frame at the centre crop's scale. Both images are cut from the full-frame images,
                         so a tile sees what the centre crop sees, shifted. Stored [N, K, 16, 1280], a
                         clip with fewer than K tiles repeating its last (a maximum is unchanged).

Writes ``CACHE/pooled/{center,crop}_{motion,flow}__max.npy`` [N, 16, 1280] and
``tilemax_{motion,flow}__max.npy`` (the per-frame maximum over tiles) for ``head_cv.py`` / ``tiles_cv.py``,
``CACHE/tiles/tiles_{motion,flow}.npy`` (every tile), ``CACHE/tiles/boxes.json`` (each clip's frame size,
crop box and the share of moving pixels it holds) and ``CACHE/tiles/cost.json`` (seconds per step and
frames per strategy, the load average as it ran). Resumable: clips already written are kept, and
``--parts`` splits the work (e.g. the crop for every clip first, the tiles after).

Usage: python tiles.py DATA CACHE [--parts crop tiles] [--share 0.67] [--limit 20]
"""
from __future__ import annotations

import json
import math
import os
import time

import cv2
import numpy as np
import torch
from common import frozen_lite0, parser, start

from xvad.checkpoint import load_model
from xvad.features import FeatureCache, default_cache_dir
from xvad.video import View, flow_images, motion_images, preprocess_as, read_frame_pairs
from xvad.video.crop import best_square
from xvad.video.images import MOTION_GAIN, STILL_LEVEL

MIN_SIDE = 224      # the crop is never smaller than the backbone's input
LADDER = 6          # crop sides tried, geometric from MIN_SIDE to the short side
MAX_TILES = 3
STREAMS = ("motion", "flow")
PARTS = ("crop", "tiles")


def motion_energy(motion: np.ndarray) -> np.ndarray:
    """How often each pixel moved over a clip's motion images ``[T, H, W, 3]``: float32 ``[H, W]``."""
    return (motion.max(-1) > MOTION_GAIN * STILL_LEVEL).sum(0).astype(np.float32)


def centred(energy: np.ndarray, top: int, left: int, side: int) -> tuple[int, int]:
    """The square of ``side`` at ``(top, left)`` moved so that the energy inside it is centred (the best
    placement of a square larger than the moving region touches its edge), kept inside the frame."""
    h, w = energy.shape
    top, left = min(top, h - side), min(left, w - side)
    inside = energy[top:top + side, left:left + side]
    total = float(inside.sum())
    if total > 0:
        rows, cols = inside.sum(1), inside.sum(0)
        top += int(round(float(rows @ np.arange(len(rows))) / total - (side - 1) / 2))
        left += int(round(float(cols @ np.arange(len(cols))) / total - (side - 1) / 2))
    return min(max(top, 0), h - side), min(max(left, 0), w - side)


def motion_box(energy: np.ndarray, share: float) -> tuple[int, int, int, float]:
    """The smallest square (of a ladder of sides from ``MIN_SIDE`` to the short side) whose best
    placement holds ``share`` of ``energy``: ``(top, left, side, held share)``, in pixels of ``energy``.
    No motion at all: the centre square of the short side (the centre crop)."""
    h, w = energy.shape
    short = min(h, w)
    total = float(energy.sum())
    if total == 0:
        return (h - short) // 2, (w - short) // 2, short, 0.0
    low = min(MIN_SIDE, short)
    sides = sorted({int(round(low * (short / low) ** (k / (LADDER - 1)))) for k in range(LADDER)})
    step = max(1, max(h, w) // 480)                 # place the square on a coarser map: fast, 1-4 px off
    small = cv2.resize(energy, (w // step, h // step), interpolation=cv2.INTER_AREA) if step > 1 else energy
    for side in sides:
        top, left, held = best_square(small, max(1, side // step))
        held *= step * step / total
        if held >= share or side == sides[-1]:
            top, left = centred(energy, top * step, left * step, side)
            return top, left, side, min(held, 1.0)
    raise AssertionError("unreachable: the last side always returns")


def tile_boxes(h: int, w: int) -> list[tuple[int, int, int]]:
    """Squares of the short side spread evenly along the long side, covering the frame: ``(top, left,
    side)`` each."""
    short, long_ = min(h, w), max(h, w)
    n = max(1, min(MAX_TILES, math.ceil(long_ / short - 0.05)))
    starts = [round(k * (long_ - short) / (n - 1)) if n > 1 else (long_ - short) // 2 for k in range(n)]
    return [(0, s, short) if w >= h else (s, 0, short) for s in starts]


def cut(images: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    top, left, side = box[:3]
    return np.ascontiguousarray(images[:, top:top + side, left:left + side])


class Clock:
    """Seconds spent per named step, summed over clips."""

    def __init__(self, seconds: dict | None = None) -> None:
        self.seconds: dict[str, float] = dict(seconds or {})
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.t
        self.t = now


def open_set(path: str, shape: tuple[int, ...], dtype: type = np.float16) -> np.ndarray:
    """A resumable ``.npy`` memmap: the one already there, or a new one of zeros."""
    if os.path.isfile(path):
        return np.lib.format.open_memmap(path, mode="r+")
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def load_json(path: str, default: dict) -> dict:
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def save_json(obj: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


STRATEGIES = {   # what a stream pays per frame for each way of looking (step-name prefixes), decoding apart
    "centre (shipped)": ("motion image", "flow image", "centre:"),
    "crop alone": ("motion image", "crop:"),
    "centre + crop": ("motion image", "flow image", "centre:", "crop:"),
    "2 tiles": ("motion image", "flow image", "2 tiles:"),
}
FRAMES_OF = {"centre": "centre", "crop": "crop", "2 tiles": "2 tiles"}


def cost_table(cost: dict) -> list[str]:
    """Milliseconds per frame of each step and strategy (and frames per second), from ``cost.json``."""
    per_frame = {}
    for step, seconds in cost["seconds"].items():
        frames = cost["frames"].get(next((f for k, f in FRAMES_OF.items() if step.startswith(k)),
                                         "full-frame images"), 0)
        if frames:
            per_frame[step] = 1000 * seconds / frames
    lines = [f"{step:44s} {ms:7.1f} ms/frame" for step, ms in per_frame.items()]
    for name, prefixes in STRATEGIES.items():
        steps = [s for s in per_frame if s.startswith(prefixes)]
        if all(any(s.startswith(p) for s in steps) for p in prefixes):
            ms = sum(per_frame[s] for s in steps)
            lines.append(f"{name:44s} {ms:7.1f} ms/frame, {1000 / ms:5.1f} frames/s (decoding apart)")
    return lines


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                    help="what to extract in this run (the centre always: from the package's feature cache "
                         "of the shipped model when there, else computed)")
    ap.add_argument("--share", type=float, default=0.67,
                    help="the crop holds at least this share of the clip's moving pixels (default 0.67)")
    ap.add_argument("--check-every", type=int, default=10,
                    help="recompute the centre of every Nth clip even when cached: its cost, and a check "
                         "that it equals the cache")
    ap.add_argument("--limit", type=int, default=None, help="only the first N clips (a check)")
    ap.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                    help="visit the clips in a random order (this seed): a run stopped early leaves a "
                         "random subset of clips, not the first classes' clips")
    ap.add_argument("--clips", nargs="+", default=None, metavar="NAME",
                    help="only these clips (file names without extension; e.g. to time the strategies "
                         "side by side in a cache of their own, with --check-every 1)")
    a, data = start(ap)
    cv2.setNumThreads(1)
    model = frozen_lite0(data.classes)
    shipped = load_model(None)
    cfg = shipped.config
    cache = FeatureCache(default_cache_dir(), shipped)
    out_dir = os.path.join(a.cache, "tiles")
    os.makedirs(out_dir, exist_ok=True)
    n = len(data)
    sets = {f"{kind}_{s}": open_set(os.path.join(out_dir, f"{kind}_{s}.part.npy"), (n, 16, 1280))
            for kind in ("center", "crop") for s in STREAMS}
    sets |= {f"tiles_{s}": open_set(os.path.join(out_dir, f"tiles_{s}.part.npy"), (n, MAX_TILES, 16, 1280))
             for s in STREAMS}
    done = open_set(os.path.join(out_dir, "done.part.npy"), (n, 1 + len(PARTS)), np.uint8)
    boxes_path, cost_path = os.path.join(out_dir, "boxes.json"), os.path.join(out_dir, "cost.json")
    boxes = load_json(boxes_path, {})
    cost = load_json(cost_path, {"seconds": {}, "frames": {}, "load": [], "centre_vs_cache": 0.0})
    clock = Clock(cost["seconds"])

    def features(images: np.ndarray, name: str) -> np.ndarray:
        x = preprocess_as(images, model.config)
        clock.lap(f"{name}: preprocess")
        with torch.no_grad():
            f = model.frame_features(x).float().numpy()
        clock.lap(f"{name}: backbone")
        return f

    features(np.zeros((16, 224, 224, 3), np.uint8), "warm-up")   # the first call's set-up is not timed
    del clock.seconds["warm-up: preprocess"], clock.seconds["warm-up: backbone"]

    def count(name: str, frames: int) -> None:
        cost["frames"][name] = cost["frames"].get(name, 0) + frames

    parts = [PARTS.index(p) + 1 for p in a.parts]
    names = [os.path.splitext(os.path.basename(s.path))[0] for s in data.samples]
    todo = [i for i in range(n if a.limit is None else min(n, a.limit)) if a.clips is None or names[i] in a.clips]
    if a.shuffle is not None:
        todo = list(np.random.default_rng(a.shuffle).permutation(todo))
    t0 = time.time()
    cost["load"].append(os.getloadavg()[0])
    for k, i in enumerate(todo):
        if done[i, 0] and all(done[i, p] for p in parts):
            continue
        sample = data.samples[i]
        clock.t = time.perf_counter()
        frames, partners, _ = read_frame_pairs(sample.path, frames=cfg["frames"], fps=cfg.get("fps"))
        clock.lap("decoding the sampled frames and partners")
        h, w = frames.shape[1:3]
        motion = motion_images(frames, partners)
        clock.lap("motion image (full frame)")
        flow = flow_images(frames, partners)
        clock.lap("flow image (full frame)")
        count("full-frame images", len(frames))
        cached = cache.path(sample.path, View())
        if not done[i, 0]:
            if os.path.isfile(cached) and i % a.check_every:
                both = torch.load(cached).float().numpy()
                sets["center_motion"][i], sets["center_flow"][i] = both[:, :1280], both[:, 1280:]
            else:
                sets["center_motion"][i] = features(motion, "centre")
                sets["center_flow"][i] = features(flow, "centre")
                count("centre", len(frames))
                if os.path.isfile(cached):
                    both = torch.load(cached).float().numpy()
                    gap = np.abs(both - np.concatenate([sets["center_motion"][i], sets["center_flow"][i]], 1))
                    cost["centre_vs_cache"] = max(cost["centre_vs_cache"], float(gap.max()))
            clock.t = time.perf_counter()
        if "crop" in a.parts and not done[i, 1]:
            box = motion_box(motion_energy(motion), a.share)
            crop_motion = cut(motion, box)
            clock.lap("crop: choosing the box")
            crop_flow = flow_images(cut(frames, box), cut(partners, box))
            clock.lap("crop: flow on the crop")
            sets["crop_motion"][i] = features(crop_motion, "crop")
            sets["crop_flow"][i] = features(crop_flow, "crop")
            count("crop", len(frames))
            boxes[os.path.basename(sample.path)] = {"size": [h, w], "crop": list(box[:3]), "held": round(box[3], 3)}
        if "tiles" in a.parts and not done[i, 2]:
            tiles = tile_boxes(h, w)
            for s, images in (("motion", motion), ("flow", flow)):
                per_tile = [features(cut(images, t), f"{len(tiles)} tiles") for t in tiles]
                sets[f"tiles_{s}"][i] = np.stack(per_tile + [per_tile[-1]] * (MAX_TILES - len(tiles)))
            count(f"{len(tiles)} tiles", len(frames))
        for x in sets.values():
            x.flush()
        done[i, 0] = 1
        for p in parts:
            done[i, p] = 1
        done.flush()
        if k % 10 == 0 or k == len(todo) - 1:
            cost["load"].append(os.getloadavg()[0])
            cost["seconds"] = clock.seconds
            save_json(boxes, boxes_path)
            save_json(cost, cost_path)
            print(f"{k + 1}/{len(todo)} clips, {time.time() - t0:.0f}s, load {os.getloadavg()[0]:.1f}", flush=True)
    cost["seconds"] = clock.seconds
    save_json(boxes, boxes_path)
    save_json(cost, cost_path)
    print("\n".join(cost_table(cost)))
    print(f"load average (1 min) over the run: {np.mean(cost['load']):.1f}")
    pooled = os.path.join(a.cache, "pooled")
    os.makedirs(pooled, exist_ok=True)
    for k, part in enumerate(("center", *PARTS)):
        if not done[:, k].all():
            print(f"{part}: {int(done[:, k].sum())}/{n} clips written; run again to finish")
            continue
        for s in STREAMS:
            x = np.asarray(sets[f"{part}_{s}"])
            if part == "tiles":
                np.save(os.path.join(out_dir, f"tiles_{s}.npy"), x)
                np.save(os.path.join(pooled, f"tilemax_{s}__max.npy"), x.max(1))
            else:
                np.save(os.path.join(pooled, f"{part}_{s}__max.npy"), x)
        print(f"{part}: all {n} clips, features in {pooled}")


if __name__ == "__main__":
    main()
