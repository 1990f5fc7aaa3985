"""CPU time of one served frame, stage by stage: the old pipeline against the new, side by side.

A camera at R frames per second scored at 8 costs, per scored frame: decoding R / 8 frames, turning
one into RGB, making its model images (motion and flow, its partner's too) and normalising them, and
the backbone on each stream. On every ``--every``-th clip of ``../shared/data/surv-fight`` (each at its
own size, 320x240 to 1920x1080), in one run and in turns, as CPU time of the whole process
(``time.process_time``: every thread's, so what the cores spend whatever threads a library uses),
with torch on one thread:

- decode: every frame of the clip decoded (as a live camera is) and one in R / 8 turned to RGB;
- images "last" (streams made at the frame's resolution, then an antialiased resize, centre crop: the
  rule of the model shipped two versions ago) against "first" (frames, or the motion crop's squares,
  shrunk to the input first with OpenCV area averaging, motion and flow made on the small frames), each
  at its model's input size;
- the backbone on the two streams, eager against batch norms folded (``xvad.models.fold``), at the
  model's precision (bf16 here), batches of 16, at each size.

The goal, 8 cameras at 8 frames per second on 2 cores, leaves 2 / 64 s = 31 ms of CPU per frame
for everything. Results go to ``results/frame_cost.json``.

Usage: python bench/bench_frame_cost.py [--every 8] [--old-size 224] [--checkpoint model.pt]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import av
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save, surv_fight_clips, timeit  # noqa: E402

import xvad  # noqa: E402
from xvad.models.precision import autocast  # noqa: E402
from xvad.video import model_images, preprocess_as, read_frame_pairs  # noqa: E402
from xvad.video.crop import input_regions  # noqa: E402

BUDGET_MS = 2 * 1000 / 64          # 2 cores, 8 cameras x 8 frames per second


def cpu_ms(fn: Callable[[], object], reps: int = 3) -> float:
    """Median CPU milliseconds of ``fn()`` over ``reps`` runs, after one warm-up run."""
    return 1e3 * timeit(fn, reps=reps, warmup=1, clock=time.process_time)


def decode_per_scored_frame(path: str, fps: float = 8.0) -> float:
    """CPU milliseconds per scored frame of decoding the whole clip, with one frame in R / ``fps`` made RGB."""
    def run() -> int:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or 25)
            step, due, kept = rate / fps, 0.0, 0
            for i, frame in enumerate(container.decode(stream)):
                if i >= due:
                    frame.to_ndarray(format="rgb24")
                    due += step
                    kept += 1
            return kept
    kept = run()
    return cpu_ms(run) / max(1, kept)


def backbone_ms(model: torch.nn.Module, x: torch.Tensor, folded: bool) -> float:
    """CPU milliseconds per frame (both streams) of the backbone on ``x`` ``[16, 6, S, S]``."""
    images = x.reshape(-1, 3, *x.shape[-2:]).contiguous(memory_format=torch.channels_last)

    def run() -> object:
        with torch.inference_mode():
            if folded:                   # what the model runs with no gradient wanted
                return model.feature_maps(images)
            with autocast(model.precision, images.device):
                return model.backbone(images)
    return cpu_ms(run) / len(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=8, help="every N-th clip of surv-fight (1: all 232)")
    ap.add_argument("--old-size", type=int, default=224, help="input size of the old pipeline (default 224)")
    ap.add_argument("--checkpoint", default=None, help="the new model (default: the shipped one)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    clips = surv_fight_clips(a.every, "bench_frame_cost")
    model = xvad.load_model(a.checkpoint)
    new = dict(model.config, shrink="first")     # the shipped model's crop (motion: each frame's square)
    old = dict(model.config, shrink="last", size=a.old_size, crop="center")
    per_clip = []
    for i, (path, row) in enumerate(clips):
        frames, partners, _ = read_frame_pairs(path, frames=16, fps=8)
        entry: dict = {"clip": row["clip"], "size": f"{frames.shape[2]}x{frames.shape[1]}",
                       "decode": decode_per_scored_frame(path)}
        for name, cfg in (("last", old), ("first", new)):
            def images(cfg: dict = cfg, frames: np.ndarray = frames, partners: np.ndarray = partners) -> object:
                return preprocess_as(model_images(frames, partners, cfg, input_regions(frames, partners, cfg)), cfg)
            entry[f"images {name}"] = cpu_ms(images) / len(frames)
        per_clip.append(entry)
        print(f"{i + 1}/{len(clips)} {row['clip']} {entry['size']}: " +
              ", ".join(f"{k} {v:.1f}" for k, v in entry.items() if isinstance(v, float)), flush=True)
    backbone = {}
    for cfg in (old, new):
        x = preprocess_as(model_images(frames, partners, cfg, input_regions(frames, partners, cfg)), cfg)
        size = int(cfg["size"])
        backbone[f"{size} eager"] = backbone_ms(model, x, folded=False)
        backbone[f"{size} folded"] = backbone_ms(model, x, folded=True)
    med = {k: float(np.median([c[k] for c in per_clip])) for k in per_clip[0] if k not in ("clip", "size")}
    old_total = med["decode"] + med["images last"] + backbone[f"{a.old_size} eager"]
    new_total = med["decode"] + med["images first"] + backbone[f"{new['size']} folded"]
    result = {"clips": len(clips), "every": a.every, "old": {"size": a.old_size, "shrink": "last", "backbone": "eager"},
              "new": {"size": new["size"], "shrink": "first", "backbone": "folded",
                      "checkpoint": a.checkpoint or "shipped"},
              "precision": model.precision, "budget_ms": BUDGET_MS, "median_ms": med, "backbone_ms": backbone,
              "total_ms": {"old": old_total, "new": new_total, "ratio": old_total / new_total},
              "load_average": os.getloadavg(), "per_clip": per_clip}
    print(f"saved {save('frame_cost', result)}")
    print(f"\nCPU ms per scored frame, median over {len(clips)} clips (CPU time; budget {BUDGET_MS:.1f}):")
    for k, v in {**med, **{f"backbone {k}": v for k, v in backbone.items()}}.items():
        print(f"  {k:28s} {v:7.2f}")
    print(f"  old pipeline: {old_total:.1f} ms, new: {new_total:.1f} ms (x{old_total / new_total:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
