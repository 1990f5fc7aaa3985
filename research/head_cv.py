"""The shipped head (mean and max over time, batch norm, dropout 0.3, linear) trained by the package's
loop (``xvad.train``: AdamW lr 1e-3, weight decay 1e-3, batch 16, class-weighted, the epoch count chosen
on an inner group split of each training part), on cached per-frame features ``CACHE/pooled/<name>.npy``;
group 5-fold over fold seeds 0, 1, 2. The inner split keeps the epoch of lowest validation loss over
all ``--epochs`` (no early stop unless ``--patience``), as the figures in variants.md were made.

Usage: python head_cv.py CACHE --data DATA absdiff16_native__max before__max gap60__max distinct__max
A name ``a+b`` concatenates the per-frame features of ``a`` and ``b`` (two streams, one head); ``a|b``
trains one head per stream and averages their probabilities (late fusion); ``a&b`` does the same in one
model trained on the averaged probability (one epoch count for both), as ``xvad train --input
motion+flow`` does.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from common import data_option, need
from torch import nn
from training import OnCache, as_inputs, fold_proba

from xvad.data import group_kfold, load_dataset
from xvad.metrics import classification_metrics
from xvad.models.crnn import Standardise
from xvad.train import TrainConfig


class Heads(OnCache):
    """One shipped head per stream of per-frame widths ``dims`` (``CRNN(temporal="pool")``'s head, for
    any widths); the clip's probabilities are the mean of the streams'."""

    def __init__(self, dims: list[int], classes, eps: float = 1e-5, clamp: float | None = None) -> None:
        super().__init__(classes)
        self.dims = dims
        self.heads = nn.ModuleList(nn.Sequential(Standardise(2 * d, eps, clamp), nn.Dropout(0.3),
                                                 nn.Linear(2 * d, len(self.classes))) for d in dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, sum(dims)]`` -> the log of the mean of the streams' probabilities."""
        logp = torch.stack([h(torch.cat([part.mean(1), part.amax(1)], 1)).log_softmax(-1)
                            for h, part in zip(self.heads, x.split(self.dims, 2))])
        return torch.logsumexp(logp, 0) - np.log(len(logp))


def load(cache: str, name: str) -> torch.Tensor:
    """``[N, T, D]`` per-frame features of ``a+b``: those of a and b side by side."""
    parts = []
    for n in name.split("+"):
        path = os.path.join(cache, "pooled", f"{n}.npy")
        if not os.path.isfile(path):
            raise SystemExit(f"{path}: no such cached feature set (made by layers.py, flow.py, ...)")
        parts.append(np.load(path).astype(np.float32))
    return torch.from_numpy(np.concatenate(parts, -1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", help="the feature cache (pooled/<name>.npy inside)")
    ap.add_argument("names", nargs="+")
    data_option(ap)
    ap.add_argument("--heads", type=int, default=1,
                    help="average this many final heads, trained from different seeds (an ensemble)")
    ap.add_argument("--bn-eps", type=float, default=1e-5,
                    help="variance floor of the heads' batch norm: features nearly constant in training "
                         "are scaled by at most 1/sqrt(eps)")
    ap.add_argument("--clamp", type=float, default=None,
                    help="clamp the standardised features to ±this before the linear layer")
    ap.add_argument("--epochs", type=int, default=60, help="epochs the inner split is trained for")
    ap.add_argument("--patience", type=int, default=None, help="early stop of the inner split (default: none)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fold seeds")
    ap.add_argument("--other", default=None, metavar="TAG",
                    help="also score each held-out clip on the features named with TAG before __max "
                         "(e.g. _fp32: the backbone in fp32) and report how far p(fight) moves")
    ap.add_argument("--train-on-both", action="store_true",
                    help="with --other: train on both versions of each training clip")
    a = ap.parse_args()
    need(ap, a, "data")
    if "^" in " ".join(a.names):
        ap.error("a^b (each head on its own loss) is not a loss xvad.train.fit trains; see variants.md")
    torch.set_num_threads(1)
    data = load_dataset(a.data)
    cfg = TrainConfig(epochs=a.epochs, patience=a.patience or a.epochs + 1, norm_eps=a.bn_eps,
                      norm_clamp=a.clamp)
    for name in a.names:
        def features(tag: str = "", name: str = name) -> tuple[list[torch.Tensor], list[list[int]]]:
            named = name.replace("__max", f"{tag}__max")
            if "&" in named:   # one model, one head per stream
                parts = [load(a.cache, stream) for stream in named.split("&")]
                return [torch.cat(parts, 2)], [[p.shape[2] for p in parts]]
            streams = [load(a.cache, stream) for stream in named.split("|")]
            return streams, [[x.shape[2]] for x in streams]

        streams, dims = features()
        if len(streams[0]) != len(data):
            raise SystemExit(f"{a.cache}: {name} has {len(streams[0])} clips, {a.data} {len(data)}")
        others = features(a.other)[0] if a.other else [None] * len(streams)
        per_seed, moved = [], []
        for seed in a.seeds:
            acc, auc = [], []
            for f, (tr, va) in enumerate(group_kfold(data, 5, seed)):
                probs, other_probs = [], []
                for x, other, d in zip(streams, others, dims):
                    inputs = as_inputs(x)
                    score = [] if other is None else [as_inputs(other)]
                    if other is not None and a.train_on_both:
                        inputs |= as_inputs(other, view=1)

                    def heads(d=d) -> Heads:
                        return Heads(d, data.classes, cfg.norm_eps, cfg.norm_clamp)

                    p, _ = fold_proba(heads, inputs, data, tr, va, cfg, seed + f, n_views=2,
                                      final_seeds=[seed + f + 1000 * k for k in range(a.heads)], score_inputs=score)
                    probs.append(p[0])
                    other_probs.extend(p[1:])
                p = np.mean(probs, 0)
                m = classification_metrics(data.labels[va], p, data.classes)
                acc.append(m["accuracy"])
                auc.append(m["roc_auc"])
                if other_probs:
                    moved.extend(np.abs(p[:, 1] - np.mean(other_probs, 0)[:, 1]))
            per_seed.append((np.mean(acc), np.mean(auc)))
        mean = np.mean(per_seed, 0)
        tail = (f"; p(fight) with {a.other} features moves by {np.mean(moved):.3f} on average, "
                f"{np.max(moved):.3f} at most" if moved else "")
        print(f"{name:28s} accuracy {mean[0]:.3f}  ROC-AUC {mean[1]:.3f}  per seed "
              + ", ".join(f"{p[0]:.3f}/{p[1]:.3f}" for p in per_seed) + tail, flush=True)


if __name__ == "__main__":
    main()
