"""The shipped model's backbone run by torch (fp32 and bf16) and by OpenVINO (fp32), side by side.

Speed: CPU time per image on one thread, batches of 8 frames (16 images: the model's two streams) of a
real clip's input, the engines taken in turn, ``--rounds`` times; the median of each engine's batches in
each round, then the median over rounds, and the ratio of each to torch bf16 (the service's engine before
OpenVINO) in the same run.

Fidelity: every ``--every``-th clip of ``../shared/data/surv-fight`` and the package's sample footage,
each read as a stream reads it at the model's rate (all of its frames), every window of the model's
length scored at stride 1 by each engine; against torch fp32: how far p(alert) moves (mean, 99th
percentile, largest), the windows and clips (their highest window) whose decision at the model's
threshold changes, and the cosine similarity of the frame features.

Usage: python bench/bench_engine.py [--rounds 3] [--every 1]
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import SURV_FIGHT, save, surv_fight_clips  # noqa: E402

import xvad  # noqa: E402
from xvad.evaluate import model_threshold, window_count  # noqa: E402
from xvad.video.clip import load_clip  # noqa: E402

SAMPLES = os.path.join(os.path.dirname(xvad.__file__), "samples", "demo-footage")


def engines() -> dict:
    """The shipped model three times: torch fp32, torch bf16, OpenVINO fp32."""
    return {"torch fp32": xvad.load_model().eval().set_precision("fp32"),
            "torch bf16": xvad.load_model().eval().set_precision("bf16"),
            "openvino fp32": xvad.load_model().eval().set_engine("openvino")}


def stream_input(model, path: str) -> torch.Tensor:
    """Every frame a stream at the model's rate samples from the clip, as model input ``[n, 6, H, W]``."""
    fps = float(model.config["fps"])
    return load_clip(path, dict(model.config, fps=fps, frames=window_count(model, path, fps))).tensor()


def speed(models: dict, frames: torch.Tensor, rounds: int) -> dict:
    """CPU milliseconds per image of each engine (one thread), rounds taken in turn."""
    torch.set_num_threads(1)
    batches = [frames[i:i + 8] for i in range(0, len(frames) - 7, 8)] or [frames[:8]]
    per_round: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m.frame_features(batches[0])                     # compile / set up kernels
        for _ in range(rounds):
            for name, m in models.items():
                times = []
                for b in batches:
                    t = time.process_time()
                    m.frame_features(b)
                    times.append((time.process_time() - t) / (len(b) * m.streams))
                per_round[name].append(1000 * statistics.median(times))
    out = {k: {"ms_per_image": statistics.median(v), "rounds": v} for k, v in per_round.items()}
    for k in out:
        out[k]["vs_torch_bf16"] = out["torch bf16"]["ms_per_image"] / out[k]["ms_per_image"]
    return out


def window_scores(model, feats: torch.Tensor) -> np.ndarray:
    w = int(model.config["frames"])
    windows = torch.stack([feats[i:i + w] for i in range(feats.shape[0] - w + 1)])
    with torch.inference_mode():
        p = model.classify(windows).float().softmax(-1)
    return p[:, 1].numpy()


def fidelity(models: dict, paths: list[str]) -> dict:
    """Each engine against torch fp32 on every window of every clip."""
    torch.set_num_threads(os.cpu_count() or 1)
    ref_model = models["torch fp32"]
    cut = model_threshold(ref_model)
    diffs: dict[str, list] = {k: [] for k in models if k != "torch fp32"}
    cosines: dict[str, list] = {k: [] for k in diffs}
    flips = {k: [0, 0] for k in diffs}                 # windows, clips
    windows = 0
    for i, path in enumerate(paths):
        x = stream_input(ref_model, path)
        with torch.inference_mode():
            ref = ref_model.frame_features(x)
        p_ref = window_scores(ref_model, ref)
        windows += len(p_ref)
        for name in diffs:
            with torch.inference_mode():
                f = models[name].frame_features(x).float()
            p = window_scores(models[name], f)
            diffs[name].append(np.abs(p - p_ref))
            cosines[name].append(torch.nn.functional.cosine_similarity(f, ref).numpy())
            flips[name][0] += int(((p >= cut) != (p_ref >= cut)).sum())
            flips[name][1] += int((p.max() >= cut) != (p_ref.max() >= cut))
        print(f"\r{i + 1}/{len(paths)} clips", end="", flush=True)
    print()
    out = {}
    for name in diffs:
        d, c = np.concatenate(diffs[name]), np.concatenate(cosines[name])
        out[name] = {"score_diff_mean": float(d.mean()), "score_diff_p99": float(np.quantile(d, 0.99)),
                     "score_diff_max": float(d.max()), "windows_flipped": flips[name][0],
                     "clips_flipped": flips[name][1], "feature_cosine_mean": float(c.mean()),
                     "feature_cosine_min": float(c.min())}
    return {"clips": len(paths), "windows": windows, "threshold": cut, "against_torch_fp32": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="speed rounds, engines in turn (default 3)")
    ap.add_argument("--every", type=int, default=1, help="every N-th surv-fight clip for fidelity (default 1)")
    a = ap.parse_args()
    samples = sorted(glob.glob(os.path.join(SAMPLES, "*", "*.mp4")))
    clips = [p for p, _ in surv_fight_clips(a.every, "bench_engine")] if os.path.isdir(SURV_FIGHT) else []
    models = engines()
    print(f"load average {os.getloadavg()[0]:.2f}")
    fast = speed(models, stream_input(models["torch fp32"], samples[0]), a.rounds)
    for name, r in fast.items():
        print(f"{name:>14}: {r['ms_per_image']:.2f} ms CPU an image (rounds "
              f"{', '.join(f'{v:.2f}' for v in r['rounds'])}), x{r['vs_torch_bf16']:.2f} of torch bf16's speed")
    result = {"speed": fast, "fidelity_surv_fight": fidelity(models, clips) if clips else None,
              "fidelity_samples": fidelity(models, samples), "load_average_after": os.getloadavg()}
    for part in ("fidelity_surv_fight", "fidelity_samples"):
        if result[part] is None:
            continue
        print(f"{part}: {result[part]['clips']} clips, {result[part]['windows']} windows")
        for name, r in result[part]["against_torch_fp32"].items():
            print(f"  {name:>14} vs torch fp32: |dp| mean {r['score_diff_mean']:.5f} p99 {r['score_diff_p99']:.5f} "
                  f"max {r['score_diff_max']:.5f}; {r['windows_flipped']} windows and {r['clips_flipped']} clips "
                  f"change decision; feature cosine min {r['feature_cosine_min']:.6f}")
    print(save("engine", result))


if __name__ == "__main__":
    main()
