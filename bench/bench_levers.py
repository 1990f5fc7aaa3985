"""Where a served frame's CPU time goes, and what each cheaper way of doing it costs in scores.

For a model whose images are made at the frame's resolution and resized last (``shrink="last"``: the
model shipped before the current one, motion + flow streams; ``--checkpoint``), on one 2 s window
(16 frames at 8 fps) of real clips from ``../shared/data/surv-fight`` (every ``--every``-th clip), side
by side in one run:

- per-frame time of each stage: the motion image, the optical flow (DIS presets medium, the shipped
  one, fast and ultrafast), the resize and normalisation to the model's input (224 px for that
  model), and the backbone (fp32 and the model's own precision, batches of 16 and 64 frames);
- the levers that change the model's input: a cheaper flow preset, and resizing the uint8 images with
  OpenCV before normalising (instead of an antialiased float resize of the full frame). For each, the
  window's p(fight) against the shipped path: largest and mean change, the clips whose decision at
  the model's threshold flips, and ROC-AUC both ways (the shipped model as it is, nothing retrained).

Results go to ``bench/results/levers.json`` (``levers_NAME.json`` with ``--checkpoint``: another model,
e.g. one trained at a smaller input size; its images are resized to that model's own size).

Usage: python bench/bench_levers.py [--every 4] [--checkpoint model.pt [--name NAME]]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save, surv_fight_clips, timeit  # noqa: E402

import xvad  # noqa: E402
from xvad.metrics import roc_auc  # noqa: E402
from xvad.stream.inference import window_scores  # noqa: E402
from xvad.video import read_frame_pairs  # noqa: E402
from xvad.video.images import flow_images, motion_images  # noqa: E402
from xvad.video.tensor import preprocess_as  # noqa: E402

PRESETS = {"medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST}


def images(frames: np.ndarray, partners: np.ndarray, preset: str = "medium") -> np.ndarray:
    """The model's motion + flow images, with the flow of ``preset``."""
    return np.concatenate([motion_images(frames, partners), flow_images(frames, partners, PRESETS[preset])], -1)


def resized_first(imgs: np.ndarray, size: int) -> np.ndarray:
    """The images shrunk with OpenCV (area averaging, uint8) so the shorter side is ``size``: what the
    centre crop then needs no float resize for."""
    h, w = imgs.shape[1:3]
    scale = size / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    out = []
    for im in imgs:   # cv2.resize takes at most 4 channels at a time here: do the streams apart
        parts = [cv2.resize(np.ascontiguousarray(im[..., c:c + 3]), (nw, nh), interpolation=cv2.INTER_AREA)
                 for c in range(0, im.shape[-1], 3)]
        out.append(np.concatenate(parts, -1))
    return np.stack(out)


def per_frame(fn: Callable[[], object], frames: int, reps: int = 3) -> float:
    """Median milliseconds per frame of ``fn`` over ``reps`` runs, after one warm-up run."""
    return 1e3 * timeit(fn, reps=reps, warmup=1) / frames


def stage_times(frames: np.ndarray, partners: np.ndarray, shipped: np.ndarray, cfg: dict) -> dict[str, float]:
    """Milliseconds per frame of each stage before the backbone, on one window."""
    n = len(frames)
    stages: dict[str, Callable[[], object]] = {"motion": lambda: motion_images(frames, partners)}
    for name, preset in PRESETS.items():
        stages[f"flow {name}"] = lambda preset=preset: flow_images(frames, partners, preset)
    stages["resize+normalise (float, antialiased)"] = lambda: preprocess_as(shipped, cfg)
    stages["resize+normalise (OpenCV uint8 first)"] = lambda: preprocess_as(resized_first(shipped, cfg["size"]), cfg)
    return {name: per_frame(fn, n) for name, fn in stages.items()}


def backbone_times(model: torch.nn.Module, x: torch.Tensor, batches: tuple[int, ...]) -> dict[str, list[float]]:
    """Milliseconds per frame of the backbone in fp32 and in the model's own precision, per batch size."""
    own = model.config["precision"]
    out = {}
    try:
        for precision in ("fp32", own):
            model.set_precision(precision)
            for batch in batches:
                xb = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch]
                with torch.inference_mode():
                    ms = per_frame(lambda xb=xb: model.frame_features(xb), batch)
                out[f"backbone {precision} batch {batch}"] = [ms]
    finally:
        model.set_precision(own)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=4, help="every N-th clip of surv-fight (1: all 232)")
    ap.add_argument("--checkpoint", default=None, help="model file (default: the shipped model)")
    ap.add_argument("--name", default=None,
                    help="results file suffix (default: the checkpoint's folder name; none for the shipped model)")
    a = ap.parse_args()
    if a.name is None and a.checkpoint:
        a.name = os.path.basename(os.path.dirname(os.path.abspath(a.checkpoint)))
    clips = surv_fight_clips(a.every, "bench_levers")
    model = xvad.load_model(a.checkpoint)
    if model.config.get("shrink") == "first":
        sys.exit("bench_levers: the levers measured here are those of a model whose images are made at the "
                 "frame's resolution (shrink last, the model shipped before); give one with --checkpoint, "
                 "or see bench/bench_frame_cost.py for the shipped model")
    cfg, own = model.config, model.config["precision"]
    threshold = float(model.extra.get("threshold", 0.5))
    labels, probs = [], {}
    timing: dict[str, list[float]] = {}

    def score(x: torch.Tensor) -> float:
        with torch.inference_mode():
            return float(window_scores(model.classify(model.frame_features(x)[None]))[0][0])

    for i, (path, row) in enumerate(clips):
        frames, partners, _ = read_frame_pairs(path, frames=16, fps=8)
        labels.append(int(row["label"] == "fight"))
        shipped = images(frames, partners)
        for name, ms in stage_times(frames, partners, shipped, cfg).items():
            timing.setdefault(name, []).append(ms)
        inputs = {"shipped": preprocess_as(shipped, cfg)}
        for name in ("fast", "ultrafast"):
            inputs[f"flow {name}"] = preprocess_as(images(frames, partners, name), cfg)
        inputs["OpenCV resize first"] = preprocess_as(resized_first(shipped, cfg["size"]), cfg)
        for name, x in inputs.items():
            probs.setdefault(name, []).append(score(x))
        if i == 0:   # the backbone's cost does not depend on the clip: once, on this window
            timing.update(backbone_times(model, inputs["shipped"], (16, 64)))
        print(f"{i + 1}/{len(clips)} {row['clip']}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in probs.items()),
              flush=True)
    y = np.array(labels)
    base = np.array(probs["shipped"])
    effects = {}
    for name, p in probs.items():
        p = np.array(p)
        effects[name] = {"max_change": float(np.abs(p - base).max()), "mean_change": float(np.abs(p - base).mean()),
                         "decisions_flipped": int(((p >= threshold) != (base >= threshold)).sum()),
                         "roc_auc": float(roc_auc(y, p)), "accuracy": float(((p >= threshold) == y).mean())}
    ms = {k: float(np.median(v)) for k, v in timing.items()}
    result = {"model": a.checkpoint or "shipped", "size": cfg["size"], "clips": len(clips), "every": a.every,
              "threshold": threshold, "precision": own, "ms_per_frame": ms, "effects": effects}
    print(f"saved {save('levers' + (f'_{a.name}' if a.name else ''), result)}")
    print("\nper-frame cost (ms, median over clips):")
    for k, v in ms.items():
        print(f"  {k:44s} {v:7.2f}")
    print(f"\neffect on p(fight) of one window, {len(clips)} clips (threshold {threshold:.3f}):")
    for k, e in effects.items():
        print(f"  {k:22s} max |dp| {e['max_change']:.3f}  mean {e['mean_change']:.4f}  flipped "
              f"{e['decisions_flipped']:3d}  ROC-AUC {e['roc_auc']:.3f}  acc {e['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
