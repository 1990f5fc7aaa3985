"""The shipped head (mean and max over time, batch norm, dropout 0.3, linear) trained as `xvad train`
trains it (AdamW lr 1e-3, weight decay 1e-3, batch 16, class-weighted, epochs chosen on an inner group
split), on cached per-frame features ``CACHE/pooled/<name>.npy``; group 5-fold over fold seeds 0, 1, 2.

Usage: python head_cv.py CACHE absdiff16_native__max before__max gap60__max distinct__max
A name ``a+b`` concatenates the per-frame features of ``a`` and ``b`` (two streams, one head); ``a|b``
trains one head per stream and averages their probabilities (late fusion); ``a&b`` does the same in one
model trained on the averaged probability (one epoch count for both); ``a^b`` as ``a&b`` but each head
trained on its own loss.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from torch import nn

from xvad.data import group_kfold, group_split, load_dataset
from xvad.metrics import classification_metrics

DATA = "/work/shared/data/surv-fight"
EPS = 1e-5   # the batch norm's variance floor (--bn-eps)
CLAMP = float("inf")   # bound on the standardised features (--clamp)


def describe(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.mean(1), x.amax(1)], 1)


class Heads(nn.Module):
    """One shipped head per stream; the clip's probabilities are the mean of the streams'."""

    def __init__(self, dims: list[int], eps: float = 1e-5) -> None:
        super().__init__()
        self.dims = dims
        self.heads = nn.ModuleList(nn.Sequential(nn.BatchNorm1d(d, eps=eps, affine=False), nn.Dropout(0.3),
                                                 nn.Linear(d, 2)) for d in dims)

    def streams(self, x: torch.Tensor) -> torch.Tensor:
        """[K, B, 2] log-probabilities, one row per stream (standardised features clamped to ±CLAMP)."""
        return torch.stack([h[2](h[1](h[0](part).clamp(-CLAMP, CLAMP))).log_softmax(-1)
                            for h, part in zip(self.heads, x.split(self.dims, 1))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # log of the mean probability
        logp = self.streams(x)
        return torch.logsumexp(logp, 0) - np.log(len(logp))


def fit(x, y, tr, va, epochs, seed, dims=None, per_stream=False):
    """Train on ``tr``; with ``va``, return the best epoch by validation loss, else the model."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = Heads(dims or [x.shape[1]], EPS)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-3)
    counts = np.bincount(y[tr], minlength=2)
    loss_fn = nn.NLLLoss(weight=torch.tensor(len(tr) / (2 * counts), dtype=torch.float32))
    best = (float("inf"), epochs)
    for epoch in range(epochs):
        head.train()
        order = rng.permutation(tr)
        for s in range(0, len(order), 16):
            b = order[s:s + 16]
            if len(b) > 1:
                if per_stream:   # each head on its own loss
                    loss = torch.stack([loss_fn(lp, torch.from_numpy(y[b])) for lp in head.streams(x[b])]).mean()
                else:
                    loss = loss_fn(head(x[b]), torch.from_numpy(y[b]))
                opt.zero_grad()
                loss.backward()
                opt.step()
        if len(va):
            head.eval()
            with torch.no_grad():
                vl = float(nn.functional.nll_loss(head(x[va]), torch.from_numpy(y[va])))
            if vl < best[0] - 1e-4:
                best = (vl, epoch + 1)
    return best[1] if len(va) else head.eval()


def load(cache: str, name: str) -> torch.Tensor:
    """Clip descriptors of ``a+b``: the per-frame features of a and b side by side."""
    parts = [np.load(os.path.join(cache, "pooled", f"{n}.npy")).astype(np.float32) for n in name.split("+")]
    return describe(torch.from_numpy(np.concatenate(parts, -1)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("names", nargs="+")
    ap.add_argument("--heads", type=int, default=1,
                    help="average this many final heads, trained from different seeds (an ensemble)")
    ap.add_argument("--bn-eps", type=float, default=1e-5,
                    help="variance floor of the heads' batch norm: features nearly constant in training "
                         "are scaled by at most 1/sqrt(eps)")
    ap.add_argument("--clamp", type=float, default=float("inf"),
                    help="clamp the standardised features to ±this before the linear layer")
    ap.add_argument("--other", default=None, metavar="TAG",
                    help="also score each held-out clip on the features named with TAG before __max "
                         "(e.g. _fp32: the backbone in fp32) and report how far p(fight) moves")
    ap.add_argument("--train-on-both", action="store_true",
                    help="with --other: train on both versions of each training clip")
    a = ap.parse_args()
    global EPS, CLAMP
    EPS, CLAMP = a.bn_eps, a.clamp
    torch.set_num_threads(1)
    data = load_dataset(DATA)
    y = data.labels
    n = len(y)
    for name in a.names:
        per_stream = "^" in name

        def features(tag: str = "") -> tuple[list[torch.Tensor], list[int] | None]:
            named = name.replace("__max", f"{tag}__max")
            if "&" in named or per_stream:   # one model, one head per stream
                parts = [load(a.cache, stream) for stream in named.replace("^", "&").split("&")]
                return [torch.cat(parts, 1)], [p.shape[1] for p in parts]
            return [load(a.cache, stream) for stream in named.split("|")], None

        streams, dims = features()
        others = features(a.other)[0] if a.other else [None] * len(streams)
        both = a.other and a.train_on_both
        yy = np.concatenate([y, y]) if both else y
        per_seed, moved = [], []
        for seed in (0, 1, 2):
            acc, auc = [], []
            for f, (tr, va) in enumerate(group_kfold(data, 5, seed)):
                itr, iva = group_split(data.subset(tr), 0.2, seed + f)
                fit_tr, fit_itr = (np.concatenate([tr, tr + n]), np.concatenate([tr[itr], tr[itr] + n])) if both \
                    else (tr, tr[itr])
                probs, other_probs = [], []
                for x, other in zip(streams, others):
                    xx = torch.cat([x, other]) if both else x
                    epochs = fit(xx, yy, fit_itr, tr[iva], 60, seed + f, dims, per_stream)
                    for k in range(a.heads):
                        head = fit(xx, yy, fit_tr, np.array([], int), max(epochs, 1), seed + f + 1000 * k, dims,
                                   per_stream)
                        with torch.no_grad():
                            probs.append(head(x[va]).exp().numpy())
                            if other is not None:
                                other_probs.append(head(other[va]).exp().numpy())
                p = np.mean(probs, 0)
                m = classification_metrics(y[va], p, data.classes)
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
