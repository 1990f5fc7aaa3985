"""The backbone at inference, lever by lever: calls of at most 8 images, freed memory kept, convolutions
fused with their activations. Side by side in one run, each variant in a fresh process, in turns.

The service hands the backbone 16 frames at a time (two streams each: 32 images of 192 x 192 for
the shipped model). Each variant runs that batch in a thread of its own (as the service's inference
thread), torch on one thread, and reports CPU milliseconds per frame (median of its batches, then of its
rounds):

- before: one call over the 32 images, glibc's default allocator settings, convolution and ReLU6 as
  two ops (the service before these levers);
- chunks: calls of at most ``CHUNK_PIXELS`` input pixels (``xvad.models.crnn``);
- kept: ``keep_freed_memory()`` (``xvad.models.allocator``);
- chunks + kept, chunks + fused (``xvad.models.fold.ConvReLU6``), and all three (what the service runs now).

Results go to ``results/backbone_memory.json``.

Usage: python bench/bench_backbone_memory.py [--rounds 3] [--batches 4] [--checkpoint model.pt]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, save, timeit  # noqa: E402

VARIANTS = {"before": set(), "chunks": {"chunks"}, "kept": {"kept"}, "chunks + kept": {"chunks", "kept"},
            "chunks + fused": {"chunks", "fused"}, "chunks + kept + fused": {"chunks", "kept", "fused"}}


def child(levers: set[str], batches: int, checkpoint: str | None) -> float:
    """CPU ms per frame of ``batches`` batches of 16 frames with ``levers`` on (in this process)."""
    import torch

    import xvad
    from xvad.models import crnn, fold
    from xvad.models.allocator import keep_freed_memory

    if "kept" in levers:
        keep_freed_memory()
    if "chunks" not in levers:
        crnn.CHUNK_PIXELS = 1 << 40
    if "fused" not in levers:
        fold._FUSED = None
    model = xvad.load_model(checkpoint).eval()
    size, streams = model.config["size"], model.streams
    frames = torch.rand(16, 3 * streams, size, size)
    out: list[float] = []

    def work() -> None:
        torch.set_num_threads(1)
        with torch.inference_mode():   # the warm-up call makes the folded copy
            seconds = timeit(lambda: model.frame_features(frames), reps=batches, warmup=1, clock=time.thread_time)
            out.append(seconds / 16 * 1e3)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return out[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=4, help="batches of 16 frames timed per variant and round")
    ap.add_argument("--checkpoint", default=None, help="model file (default: the shipped model)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(set(json.loads(args.child)), args.batches, args.checkpoint)))
        return
    runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, levers in VARIANTS.items():
            cmd = [sys.executable, __file__, "--child", json.dumps(sorted(levers)), "--batches", str(args.batches)]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            ms = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split("\n")[-2])
            runs[name].append(ms)
            print(f"round {r + 1}: {name:22s} {ms:6.1f} ms/frame", flush=True)
    median = {name: statistics.median(v) for name, v in runs.items()}
    base = median["before"]
    for name, ms in median.items():
        print(f"{name:22s} {ms:6.1f} ms/frame  x{base / ms:.2f}")
    save("backbone_memory", {"machine": machine(), "model": args.checkpoint or "shipped", "rounds": args.rounds,
                             "batches": args.batches, "frames_per_batch": 16, "ms_per_frame": runs,
                             "median_ms_per_frame": median,
                             "speedup_vs_before": {k: base / v for k, v in median.items()}})


if __name__ == "__main__":
    main()
