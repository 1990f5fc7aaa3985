"""How much a camera gains from k labelled clips per class: each source video of a dataset treated as a
new camera (leave one group out), measured for the README and the model card.

Usage: python scripts/adapt_curve.py BASE_FEATURES.npz OUT.json [--k 2 4 8] [--draws 5] [--checkpoint CKPT]

For each group: the base heads are retrained without it (epochs chosen by inner group 3-fold CV on
the rest), that base model scores the group's clips as it comes (k = 0, threshold 0.5); then, for each
k the group has (k fights and k others, and at least one clip left), ``--draws`` random draws of k
clips per class adapt it (``xvad.adapt.adapt``) and the group's other clips are scored. Variants:
"base" (the base model on those same clips, for a paired comparison),
"adapt" (as shipped: the camera's clips weighted to half the loss, its own threshold), "added" (the
clips simply added to the training set, threshold 0.5) and "weighted" (weighted, threshold 0.5).
Metrics per (group, draw); the summary is the mean and spread over groups of each group's mean.
"""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch

import xvad
from xvad.adapt import adapt, load_base, retrain
from xvad.adapt.core import choose_base_epochs, clip_scores, summarise
from xvad.atomic import atomic_path

VARIANTS = ("base", "adapt", "weighted", "added")


def run_group(model, base, g: str, ks: list[int], draws: int, seed: int) -> list[dict]:
    mask = base.groups == g
    rest = base.without(mask)
    rest.epochs = choose_base_epochs(model, rest, seed=seed)
    base_model = retrain(model, rest, torch.zeros(0, *base.pooled.shape[1:]), np.zeros(0, int), share=0.0, seed=seed)
    base_model.extra = {"threshold": 0.5}
    idx = np.flatnonzero(mask)
    labels = base.labels[idx]
    clips = [base.pooled[i][None] for i in idx]
    rows = [{"group": g, "k": 0, "draw": 0, "variant": "base", "epochs": rest.epochs,
             **summarise(clip_scores(base_model, clips), labels, 0.5)}]
    rng = np.random.default_rng(seed)
    for k in ks:
        pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        if len(pos) < k or len(neg) < k or len(labels) <= 2 * k:
            continue
        for d in range(draws):
            pick = np.r_[rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)]
            other = np.setdiff1d(np.arange(len(labels)), pick)
            train, test = [clips[i] for i in pick], [clips[i] for i in other]
            for variant in VARIANTS:
                if variant == "base":                   # the same test clips, before adaptation
                    m, t = base_model, 0.5
                elif variant == "adapt":
                    a = adapt(base_model, rest, train, labels[pick], seed=seed + d)
                    m, t = a.model, a.threshold
                else:
                    share = 0.5 if variant == "weighted" else 2 * k / (2 * k + len(rest.labels))
                    m, t = retrain(base_model, rest, torch.cat(train), labels[pick], share=share, seed=seed + d), 0.5
                rows.append({"group": g, "k": k, "draw": d, "variant": variant,
                             **summarise(clip_scores(m, test), labels[other], t)})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per (k, variant): mean and sd over groups of each group's mean accuracy, recall and ROC-AUC."""
    out = []
    for k, variant in sorted({(r["k"], r["variant"]) for r in rows}):
        sel = [r for r in rows if r["k"] == k and r["variant"] == variant]
        groups = sorted({r["group"] for r in sel})
        line: dict = {"k": k, "variant": variant, "groups": len(groups), "draws": len(sel)}
        for key in ("accuracy", "recall", "roc_auc"):
            per_group = []
            for g in groups:
                vals = [r[key] for r in sel if r["group"] == g and r[key] is not None
                        and not (key == "recall" and r["confusion_matrix"][1] == [0, 0])]
                if vals:
                    per_group.append(float(np.mean(vals)))
            line[key] = {"mean": float(np.mean(per_group)) if per_group else None,
                         "sd": float(np.std(per_group)) if per_group else None, "groups": len(per_group)}
        out.append(line)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("out")
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=None, help="the model the base features belong to (default: shipped)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    model = xvad.load_model(a.checkpoint)
    base = load_base(a.base)
    rows: list[dict] = []
    for g in sorted(set(base.groups.tolist())):
        rows += run_group(model, base, g, a.k, a.draws, a.seed)
        print(g, "done", flush=True)
    result = {"summary": summary(rows), "rows": rows, "k": a.k, "draws": a.draws, "seed": a.seed}
    with atomic_path(a.out) as part, open(part, "w") as f:
        json.dump(result, f, indent=1)
    for line in result["summary"]:
        means = {k: line[k]["mean"] for k in ("accuracy", "recall", "roc_auc")}
        print(line["k"], line["variant"], line["groups"], means)


if __name__ == "__main__":
    main()
