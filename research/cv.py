"""Group-wise 5-fold cross-validation of head / pooling / input-stream variants on cached feature maps.

Selection protocol (honest): for every OUTER fold, the number of epochs is chosen by an INNER
group-wise k-fold (default 3) on the outer training clips only: each inner model trains for
``--max-epochs`` epochs, the inner validation losses are averaged per epoch, and E* = argmin
(``xvad.train.choose_epochs``). Then a fresh head trains on all outer-training clips for E* epochs
(``xvad.train.fit``); its outer-validation prediction is the reported (out-of-fold) one. The outer
validation fold never picks anything. GRU heads train with the package's loop (see training.py);
their "std" / "l2" normalisation is fitted on the outer training part and applied before it. The
logistic-regression head is a convex fit (LBFGS), its C chosen by the same inner folds.

For comparison only, the same run also records the "optimistic" figure that picking the epoch with
the lowest OUTER validation loss would report: column ``acc_es``.

Usage:  python cv.py CACHE_DIR VARIANT [VARIANT ...] [--seeds 0 1 2] [--list]
Variants are defined in VARIANTS below; results go to CACHE_DIR/../results/<variant>_s<seed>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from training import OnCache, as_inputs, fold_proba, views

from xvad.data import Dataset, Sample, group_kfold
from xvad.metrics import classification_metrics, summarize_folds
from xvad.train import TrainConfig, fit

# -- variants ----------------------------------------------------------------------------------
# streams: list of (cached set, pooling). Poolings: avg | max | g2 | g3 (adaptive-avg grid, cell-major)
#          | mapdiff (|M_t - M_t-1| of the 7x7 maps, then avg) | mapdiff_g2 | featdiff (diff of avg features)
# head: gru (hidden, bidir, readout last|mean|max, dropout, wd, norm none|std|l2, reduce 1x1 conv width)
#       or logreg (L2 logistic regression on temporal mean+max of standardised features; C by inner CV)
BASE = dict(streams=[("rgb16_center", "avg")], head="gru", hidden=128, bidir=False, readout="last",
            dropout=0.3, wd=1e-3, lr=1e-3, norm="none", reduce=0, flip=False)


def V(**kw):
    v = dict(BASE)
    v.update(kw)
    return v


RGB = ("rgb16_center", "avg")
ABS = ("absdiff16_native", "avg")
VARIANTS = {
    # floor
    "base": V(),
    # head variants on global-avg appearance
    "h64": V(hidden=64), "h256": V(hidden=256), "bidir": V(bidir=True),
    "mean_ro": V(readout="mean"), "max_ro": V(readout="max"),
    "std": V(norm="std"), "l2": V(norm="l2"), "std_mean": V(norm="std", readout="mean"),
    "drop5_wd1e-2": V(dropout=0.5, wd=1e-2),
    "logreg": V(head="logreg"),
    "maxpool": V(streams=[("rgb16_center", "max")]),
    # spatial grid
    "g2": V(streams=[("rgb16_center", "g2")], norm="std"),
    "g3": V(streams=[("rgb16_center", "g3")], norm="std"),
    "g2_r64": V(streams=[("rgb16_center", "g2")], norm="std", reduce=64),
    "g3_r64": V(streams=[("rgb16_center", "g3")], norm="std", reduce=64),
    "g3_r32": V(streams=[("rgb16_center", "g3")], norm="std", reduce=32),
    # motion
    "mapdiff": V(streams=[RGB, ("rgb16_center", "mapdiff")], norm="std"),
    "mapdiff_only": V(streams=[("rgb16_center", "mapdiff")], norm="std"),
    "featdiff": V(streams=[RGB, ("rgb16_center", "featdiff")], norm="std"),
    "abs_only": V(streams=[ABS], norm="std"),
    "rgb+abs": V(streams=[RGB, ABS], norm="std"),
    "rgb+abs_raw": V(streams=[RGB, ABS]),
    "rgb+abssamp": V(streams=[RGB, ("absdiff16_sampled", "avg")], norm="std"),
    "abssamp_only": V(streams=[("absdiff16_sampled", "avg")], norm="std"),
    "rgb+sign": V(streams=[RGB, ("signdiff16_native", "avg")], norm="std"),
    "rgb+abs_g2r64": V(streams=[("rgb16_center", "g2"), ("absdiff16_native", "g2")], norm="std", reduce=64),
    "rgb+abs_logreg": V(streams=[RGB, ABS], head="logreg"),
    "rgb+abs_mean": V(streams=[RGB, ABS], norm="std", readout="mean"),
    "rgb+abs_h64": V(streams=[RGB, ABS], norm="std", hidden=64),
    "rgb+abs_h256": V(streams=[RGB, ABS], norm="std", hidden=256),
    "rgb+abs_bidir": V(streams=[RGB, ABS], norm="std", bidir=True),
    "rgb+abs+abssamp": V(streams=[RGB, ABS, ("absdiff16_sampled", "avg")], norm="std"),
    # crop / density
    "full": V(streams=[("rgb16_full", "avg")], norm="std"),
    "pad": V(streams=[("rgb16_pad", "avg")], norm="std"),
    "rgb32": V(streams=[("rgb32_center", "avg")], norm="std"),
    "rgb32+mapdiff": V(streams=[("rgb32_center", "avg"), ("rgb32_center", "mapdiff")], norm="std"),
    # augmentation (mirrored views added to the training folds only)
    "std_flip": V(norm="std", flip=True),
    "rgb+abs_flip": V(streams=[RGB, ABS], norm="std", flip=True),
}
# Cheap screen of input representations: the same streams under the logistic-regression head.
LR = {
    "lr_avg": [RGB], "lr_max": [("rgb16_center", "max")], "lr_g2": [("rgb16_center", "g2")],
    "lr_g3": [("rgb16_center", "g3")], "lr_mapdiff": [RGB, ("rgb16_center", "mapdiff")],
    "lr_mapdiff_only": [("rgb16_center", "mapdiff")], "lr_featdiff": [RGB, ("rgb16_center", "featdiff")],
    "lr_abs_only": [ABS], "lr_rgb+abs": [RGB, ABS], "lr_rgb+abs+mapdiff": [RGB, ABS, ("rgb16_center", "mapdiff")],
    "lr_g2+absg2": [("rgb16_center", "g2"), ("absdiff16_native", "g2")],
    "lr_rgb+absg2": [RGB, ("absdiff16_native", "g2")],
    "lr_absg2_only": [("absdiff16_native", "g2")], "lr_mapdiffg2": [RGB, ("rgb16_center", "mapdiff_g2")],
    "lr_full": [("rgb16_full", "avg")], "lr_full+abs": [("rgb16_full", "avg"), ABS],
    "lr_pad": [("rgb16_pad", "avg")], "lr_absmax_only": [("absdiff16_native", "max")],
    "lr_max+absmax": [("rgb16_center", "max"), ("absdiff16_native", "max")],
    "lr_absg3_only": [("absdiff16_native", "g3")], "lr_rgb32": [("rgb32_center", "avg")],
    "lr_absfull_max": [("absdiff16_native_full", "max")], "lr_absfull_avg": [("absdiff16_native_full", "avg")],
    "lr_full+absfull": [("rgb16_full", "avg"), ("absdiff16_native_full", "avg")],
    "lr_abssamp_only": [("absdiff16_sampled", "avg")], "lr_rgb+abssamp": [RGB, ("absdiff16_sampled", "avg")],
}
VARIANTS.update({k: V(streams=v, head="logreg") for k, v in LR.items()})


# -- features ----------------------------------------------------------------------------------
def pooled(cache: str, name: str, pool: str) -> np.ndarray:
    """[N, T, D] float32 features of set ``name`` pooled by ``pool`` (memoised under cache/pooled)."""
    out = os.path.join(cache, "pooled", f"{name}__{pool}.npy")
    if os.path.isfile(out):
        return np.load(out).astype(np.float32)
    maps = np.load(os.path.join(cache, f"{name}.npy"), mmap_mode="r")
    chunks = []
    for i in range(len(maps)):
        m = torch.from_numpy(np.asarray(maps[i], dtype=np.float32))   # [T, C, 7, 7]
        if pool.startswith("mapdiff"):
            d = (m[1:] - m[:-1]).abs()
            m = torch.cat([d[:1], d])
        if pool in ("avg", "featdiff", "mapdiff"):
            f = m.mean((2, 3))
        elif pool == "max":
            f = m.amax((2, 3))
        elif pool in ("g2", "g3", "mapdiff_g2"):
            g = 3 if pool == "g3" else 2
            f = F.adaptive_avg_pool2d(m, g).flatten(2).transpose(1, 2).flatten(1)   # cell-major
        else:
            raise ValueError(pool)
        if pool == "featdiff":
            d = (f[1:] - f[:-1]).abs()
            f = torch.cat([d[:1], d])
        chunks.append(f.numpy().astype(np.float16))
    arr = np.stack(chunks)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    np.save(out, arr)
    return arr.astype(np.float32)


def load_features(cache: str, streams, flip: bool):
    """(x [N, T, D], widths per stream, x_flip or None)."""
    xs, widths, xf = [], [], []
    for name, pool in streams:
        a = pooled(cache, name, pool)
        xs.append(a)
        widths.append(a.shape[-1])
        if flip:
            xf.append(pooled(cache, name + "_flip", pool))
    t = min(a.shape[1] for a in xs)
    x = torch.from_numpy(np.concatenate([a[:, :t] for a in xs], -1))
    return x, widths, (torch.from_numpy(np.concatenate([a[:, :t] for a in xf], -1)) if flip else None)


# -- head --------------------------------------------------------------------------------------
class Head(OnCache):
    """GRU head variants on ``[B, T, D]`` features (trained by ``xvad.train.fit``, see training.py)."""

    def __init__(self, widths, v, classes) -> None:
        super().__init__(classes)
        self.widths, self.v = list(widths), v
        self.reducers = nn.ModuleList()
        d = 0
        for w in widths:
            if v["reduce"] and w % 1280 == 0:
                self.reducers.append(nn.Linear(1280, v["reduce"]))   # a learned 1x1 conv per cell
                d += v["reduce"] * (w // 1280)
            else:
                self.reducers.append(nn.Identity())
                d += w
        self.gru = nn.GRU(d, v["hidden"], batch_first=True, bidirectional=v["bidir"])
        out = v["hidden"] * (2 if v["bidir"] else 1)
        h = v["hidden"]
        self.mlp = nn.Sequential(nn.Dropout(v["dropout"]), nn.Linear(out, h // 2), nn.ReLU(),
                                 nn.Dropout(v["dropout"]), nn.Linear(h // 2, len(self.classes)))

    def forward(self, x):
        parts, s = [], 0
        for w, red in zip(self.widths, self.reducers):
            p = x[..., s:s + w]
            s += w
            if isinstance(red, nn.Linear):
                b, t = p.shape[:2]
                p = F.relu(red(p.reshape(b, t, -1, 1280))).reshape(b, t, -1)
            parts.append(p)
        y, h = self.gru(torch.cat(parts, -1))
        ro = self.v["readout"]
        if ro == "last":
            z = torch.cat([h[-2], h[-1]], 1) if self.v["bidir"] else h[-1]
        elif ro == "mean":
            z = y.mean(1)
        else:
            z = y.amax(1)
        return self.mlp(z)


def normaliser(x_train, widths, mode):
    """A function normalising [.., T, D] features, fitted on training clips only."""
    if mode == "std":
        flat = x_train.reshape(-1, x_train.shape[-1])
        mu, sd = flat.mean(0), flat.std(0) + 1e-3
        return lambda x: (x - mu) / sd
    if mode == "l2":
        def f(x):
            parts, s = [], 0
            for w in widths:
                p = x[..., s:s + w]
                s += w
                parts.append(p / (p.norm(dim=-1, keepdim=True) + 1e-6) * np.sqrt(w) / 8)
            return torch.cat(parts, -1)
        return f
    return lambda x: x


def gru_fold(x, xflip, data, tr, va, widths, v, args, seed):
    """One outer fold of a GRU variant with the package's loop: features normalised with the outer
    training clips' statistics, the epoch count E* of lowest validation loss averaged over the inner
    group folds (``xvad.train.choose_epochs``), a fresh head trained on all of ``tr`` for E* epochs.
    Also the optimistic figure: the best epoch on the outer fold itself.
    Returns (probabilities for ``va``, optimistic ones, E*)."""
    norm = normaliser(x[tr] if xflip is None else torch.cat([x[tr], xflip[tr]]), widths, v["norm"])
    inputs = as_inputs(norm(x))
    if xflip is not None:   # mirrored views: extra training items (never in evaluation)
        inputs |= as_inputs(norm(xflip), view=1)
    cfg = TrainConfig(epochs=args.max_epochs, lr=v["lr"], weight_decay=v["wd"], inner_folds=args.inner,
                      patience=args.max_epochs + 1)

    def head() -> Head:
        return Head(widths, v, data.classes)

    (p,), e_star = fold_proba(head, inputs, data, tr, va, cfg, seed, n_views=2)
    optimistic = fit(head(), inputs, views(inputs, tr, 2), [(int(i), 0) for i in va], data.labels, cfg,
                     args.max_epochs, seed, "outer fold", False)["proba"].numpy()
    return p, optimistic, e_star


def logreg(x, y, tr, ev, c, seed, xflip=None):
    """L2 logistic regression on [mean, max] over time of standardised features; proba for ``ev``."""
    def pool(a):
        return torch.cat([a.mean(1), a.amax(1)], -1)
    ztr, ytr = pool(x[tr]), y[tr]
    if xflip is not None:
        ztr, ytr = torch.cat([ztr, pool(xflip[tr])]), torch.cat([ytr, ytr])
    mu, sd = ztr.mean(0), ztr.std(0) + 1e-3
    ztr, zev = (ztr - mu) / sd, (pool(x[ev]) - mu) / sd
    torch.manual_seed(seed)
    lin = nn.Linear(ztr.shape[1], 2)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")
    counts = np.bincount(ytr.numpy(), minlength=2)
    weight = torch.tensor(len(ytr) / (2 * np.maximum(counts, 1)), dtype=torch.float32)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(ztr), ytr, weight=weight) + (lin.weight ** 2).sum() / (2 * c * len(ytr))
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        p = lin(zev).softmax(-1)
    return p.numpy(), float(F.nll_loss(torch.log(p.clamp_min(1e-8)), y[ev]))


# -- cross-validation --------------------------------------------------------------------------
def run(cache, name, v, seed, args, meta, data):
    x, widths, xflip = load_features(cache, v["streams"], v["flip"])
    y = torch.tensor(meta["labels"])
    outer = group_kfold(data, 5, seed)
    fold_metrics, fold_es, oof, chosen = [], [], np.zeros((len(y), 2)), []
    oof_es = np.zeros((len(y), 2))
    t0 = time.time()
    cs = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    for f, (tr, va) in enumerate(outer):
        if v["head"] == "logreg":
            inner = group_kfold(data.subset(tr), args.inner, seed + 100 + f)
            scores = np.zeros(len(cs))
            for itr, iva in inner:
                for k, c in enumerate(cs):
                    scores[k] += logreg(x, y, tr[itr], tr[iva], c, seed, xflip)[1]
            c = cs[int(np.argmin(scores))]
            chosen.append(c)
            p, _ = logreg(x, y, tr, va, c, seed, xflip)
            p_es = p
        else:
            p, p_es, e_star = gru_fold(x, xflip, data, tr, va, widths, v, args, seed * 1000 + f * 10)
            chosen.append(e_star)
        oof[va], oof_es[va] = p, p_es
        fold_metrics.append(classification_metrics(y[va].numpy(), p, data.classes))
        fold_es.append(classification_metrics(y[va].numpy(), p_es, data.classes))
    res = {"variant": name, "config": v, "seed": seed, "inner_folds": args.inner, "max_epochs": args.max_epochs,
           "chosen": chosen, "folds": fold_metrics, "cv": summarize_folds(fold_metrics),
           "cv_optimistic_early_stop": summarize_folds(fold_es),
           "pooled": classification_metrics(y.numpy(), oof, data.classes),
           "oof_proba": oof.tolist(), "seconds": time.time() - t0, "dim": int(x.shape[-1])}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache")
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--inner", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        print("\n".join(VARIANTS))
        return
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.cache, "meta.json")) as f:
        meta = json.load(f)
    data = Dataset([Sample(p, y, g) for p, y, g in zip(meta["paths"], meta["labels"], meta["groups"])],
                   meta["classes"], "")
    outdir = os.path.join(os.path.dirname(os.path.abspath(args.cache)), "results")
    os.makedirs(outdir, exist_ok=True)
    for seed in args.seeds:
        for name in args.variants:
            path = os.path.join(outdir, f"{name}_s{seed}.json")
            if os.path.isfile(path) and not args.force:
                continue
            res = run(args.cache, name, VARIANTS[name], seed, args, meta, data)
            with open(path, "w") as f:
                json.dump(res, f)
            cv, es = res["cv"], res["cv_optimistic_early_stop"]
            print(f"{name:18s} s{seed} acc {cv['accuracy']['mean']:.3f}±{cv['accuracy']['std']:.3f} "
                  f"auc {cv['roc_auc']['mean']:.3f}±{cv['roc_auc']['std']:.3f} | pooled acc "
                  f"{res['pooled']['accuracy']:.3f} auc {res['pooled']['roc_auc']:.3f} | es-acc "
                  f"{es['accuracy']['mean']:.3f} | chosen {res['chosen']} | {res['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
