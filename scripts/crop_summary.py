"""The centre crop against the motion crop: the figures of `scripts/crossval_surv_fight.sh`'s crop runs.

For each crop and fold seed: the group 5-fold means (accuracy, ROC-AUC, recall) of the clips as
training samples them (16 frames over the clip) and scored as a stream scores them (8 frames a second
over the whole clip, the highest 2-second window: ``xvad train --stream-fps 8``); then, pooled over the
three seeds' out-of-fold scores, the clips by frame size and the far and hidden fights MODEL_CARD.md
lists. Writes ``scripts/results/crop_cv.json`` and prints markdown tables.

Usage: python scripts/crop_summary.py RUNS [--data ../shared/data/surv-fight]
    (RUNS holds crop-center-s0 ... crop-motion-s2, each an `xvad train --stream-fps 8` run)
"""
from __future__ import annotations

import argparse
import csv
import json
import os
from functools import cache

import numpy as np

from xvad.jsonio import write_json
from xvad.metrics import classification_metrics
from xvad.video import probe

CROPS = ("center", "motion")
SEEDS = (0, 1, 2)
KEYS = ("accuracy", "roc_auc", "recall")
NAMED = ("fi035", "fi090", "fi095", "fi133", "fi134", "fi135", "fi136", "nofi102", "nofi103", "nofi104")


def run_dir(runs: str, crop: str, seed: int) -> str:
    return os.path.join(runs, f"crop-{crop}-s{seed}")


@cache
def out_of_fold(run: str, stream: bool) -> dict[str, float]:
    """Each clip's out-of-fold p(fight) by clip name (predictions.csv): as training samples the clip, or
    scored as a stream (``stream``; a clip not read at the stream's rate has none)."""
    column = "stream_p_fight" if stream else "p_fight"
    with open(os.path.join(run, "predictions.csv")) as f:
        return {os.path.splitext(os.path.basename(r["path"]))[0]: float(r[column])
                for r in csv.DictReader(f) if r[column]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs")
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "surv-fight"))
    a = ap.parse_args()
    table: dict = {}
    for crop in CROPS:
        for seed in SEEDS:
            with open(os.path.join(run_dir(a.runs, crop, seed), "metrics.json")) as f:
                m = json.load(f)
            row = {"clips": {k: m["cross_validation"][k]["mean"] for k in KEYS}}
            if "as_stream" in m:
                row["stream"] = {k: m["as_stream"]["cross_validation"][k]["mean"] for k in KEYS}
            table.setdefault(crop, {})[seed] = row
    print("| crop | scored | " + " | ".join(f"seed {s}" for s in SEEDS) + " | mean of 3 seeds |")
    print("|---|---|" + "---|" * (len(SEEDS) + 1))
    summary: dict = {}
    for crop in CROPS:
        for how in ("clips", "stream"):
            rows = [table[crop][s].get(how) for s in SEEDS]
            if any(r is None for r in rows):
                continue
            mean = {k: float(np.mean([r[k] for r in rows])) for k in KEYS}
            summary.setdefault(crop, {})[how] = {"per_seed": rows, "mean": mean}
            cells = [" / ".join(f"{r[k]:.3f}" for k in KEYS) for r in rows]
            print(f"| {crop} | {how} | " + " | ".join(cells) + " | **" +
                  " / ".join(f"{mean[k]:.3f}" for k in KEYS) + "** |")
    # by frame size and the named clips: out-of-fold p(fight) of the clips as training samples them
    sizes: dict[str, int] = {}
    labels: dict[str, int] = {}
    with open(os.path.join(a.data, "groups.csv")) as f:
        for r in csv.DictReader(f):
            info = probe(os.path.join(a.data, r["label"], r["clip"] + ".mp4"))
            sizes[r["clip"]], labels[r["clip"]] = min(info.height, info.width), int(r["label"] == "fight")
    # p(fight) of each clip, the mean of its three out-of-fold scores
    p = {(crop, how): {c: float(np.mean([out_of_fold(run_dir(a.runs, crop, s), how == "stream")[c]
                                         for s in SEEDS])) for c in sizes
                       if all(c in out_of_fold(run_dir(a.runs, crop, s), how == "stream") for s in SEEDS)}
         for crop in CROPS for how in ("clips", "stream")}
    print("\n| crop | scored | 720p and up: clips, accuracy / ROC-AUC / recall | smaller |")
    print("|---|---|---|---|")
    by_size: dict = {}
    for (crop, how), scores in p.items():
        cells = []
        for name, keep in (("large", lambda s: s >= 720), ("small", lambda s: s < 720)):
            clips = [c for c in scores if keep(sizes[c])]
            y = np.array([labels[c] for c in clips])
            proba = np.array([[1 - scores[c], scores[c]] for c in clips])
            mm = classification_metrics(y, proba, ["noFight", "fight"])
            by_size.setdefault(f"{crop} {how}", {})[name] = {"clips": len(clips), **{k: mm[k] for k in KEYS}}
            cells.append(f"{len(clips)}: " + " / ".join(f"{mm[k]:.3f}" for k in KEYS))
        print(f"| {crop} | {how} | " + " | ".join(cells) + " |")
    print("\n| clip | " + " | ".join(f"{crop}, {how}" for crop, how in p) + " |")
    print("|---|" + "---|" * len(p))
    named = {c: {f"{crop} {how}": p[crop, how][c] for crop, how in p} for c in NAMED
             if all(c in scores for scores in p.values())}
    for c, row in named.items():
        print(f"| {c} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "crop_cv.json")
    write_json(out, {"summary": summary, "by_size": by_size, "named": named})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
