"""The motion crop against the centre crop: what a frame costs as a stream, side by side.

Each of every ``--every``-th clip of ``../shared/data/surv-fight`` (each at its own size, 320x240 to
1920x1080) is run as a stream through :class:`xvad.stream.Detector` (its reader thread decoding every
frame, sampling 8 a second, choosing each frame's square and making the model's images; one backbone
call a batch; the head every 2 frames), once with the centre crop and once with the motion crop, in
turns, the model otherwise the same (the shipped one, or ``--checkpoint``; the head's weights do not
change the cost). Per scored frame: CPU milliseconds of the whole process (every thread) and, apart,
of the reader's work alone (the images a frame needs, with the motion crop's choice of square), torch
on one thread. Results go to ``results/crop_cost.json``.

Usage: python bench/bench_crop.py [--every 8] [--checkpoint model.pt]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save, surv_fight_clips, timeit  # noqa: E402

import xvad  # noqa: E402
from xvad.stream import Detector  # noqa: E402
from xvad.video import model_images, read_frame_pairs  # noqa: E402
from xvad.video.crop import input_regions  # noqa: E402

CROPS = ("center", "motion")


def stream_ms(model: torch.nn.Module, path: str) -> tuple[float, float, int]:
    """CPU and wall milliseconds per scored frame of the whole detector on ``path``, and its frames."""
    wall, cpu = time.perf_counter(), time.process_time()
    results = list(Detector(model, stride=2).run(path))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    frames = results[-1].frame_index + 1 if results else 0
    return 1e3 * cpu / max(1, frames), 1e3 * wall / max(1, frames), frames


def images_ms(config: dict, frames: np.ndarray, partners: np.ndarray) -> float:
    """CPU milliseconds per frame of a window's model images, the square chosen for each (motion crop)."""
    def run() -> object:
        return model_images(frames, partners, config, input_regions(frames, partners, config))
    return 1e3 * timeit(run, reps=3, warmup=1, clock=time.process_time) / len(frames)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=8, help="every N-th clip of surv-fight (1: all 232)")
    ap.add_argument("--checkpoint", default=None, help="the model (default: the shipped one)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    clips = surv_fight_clips(a.every, "bench_crop")
    base = xvad.load_model(a.checkpoint)
    models = {}
    for crop in CROPS:
        m = copy.deepcopy(base)
        m.config["crop"] = crop
        models[crop] = m
    per_clip = []
    for i, (path, row) in enumerate(clips):
        frames, partners, _ = read_frame_pairs(path, frames=16, fps=8)
        entry: dict = {"clip": row["clip"], "size": f"{frames.shape[2]}x{frames.shape[1]}"}
        order = CROPS if i % 2 == 0 else CROPS[::-1]      # in turns: drift on a shared machine hits both
        for crop in order:
            entry[f"{crop} images"] = images_ms(models[crop].config, frames, partners)
            cpu, wall, n = stream_ms(models[crop], path)
            entry[f"{crop} stream"], entry[f"{crop} wall"], entry["frames"] = cpu, wall, n
        per_clip.append(entry)
        print(f"{i + 1}/{len(clips)} {row['clip']} {entry['size']}: " +
              ", ".join(f"{k} {v:.1f}" for k, v in entry.items() if isinstance(v, float)), flush=True)
    keys = [k for k in per_clip[0] if isinstance(per_clip[0][k], float)]
    med = {k: float(np.median([c[k] for c in per_clip])) for k in keys}
    ratio = float(np.median([c["motion stream"] / c["center stream"] for c in per_clip]))
    large = [c for c in per_clip if int(c["size"].split("x")[1]) >= 720]
    result = {"clips": len(clips), "every": a.every, "checkpoint": a.checkpoint or "shipped",
              "precision": base.precision, "median_ms": med, "ratio_stream_cpu": ratio,
              "ratio_stream_cpu_720p_up": float(np.median([c["motion stream"] / c["center stream"] for c in large]))
              if large else None,
              "frames_per_second": {crop: 1e3 / med[f"{crop} wall"] for crop in CROPS},
              "load_average": os.getloadavg(), "per_clip": per_clip}
    print(f"saved {save('crop_cost', result)}")
    print(f"\nmilliseconds per scored frame, median over {len(clips)} clips:")
    for k, v in med.items():
        print(f"  {k:18s} {v:7.2f}")
    print(f"  motion / centre, CPU of the stream: x{ratio:.2f} (median of the clips' ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
