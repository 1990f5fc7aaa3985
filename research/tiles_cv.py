"""The shipped head on the crops and tiles of ``tiles.py``, group 5-fold over fold seeds 0, 1, 2, as
``head_cv.py`` trains it (the package's loop, the epoch count chosen inside each training part), with
recall beside accuracy and ROC-AUC and every clip's out-of-fold p(fight) kept.

A variant names feature prefixes of ``CACHE/pooled/<prefix>_{motion,flow}__max.npy``:

  center             the two shipped streams on the centre crop: one head per stream in one model,
                     trained on the averaged probability (``xvad train --input motion+flow``)
  crop, tilemax      the same on the motion-guided crop, or on the per-frame maximum over tiles
  center&crop        four streams (the centre's two and the crop's two), one head each, averaged
  max:tiles          one two-stream model scores every tile of ``CACHE/tiles/tiles_*.npy``; the clip's
                     p(fight) is the largest tile's, and the model is trained on that (the tiles share
                     its weights)
  max:center,crop    the same over the centre and the crop

Writes ``OUT`` (JSON: per variant, per fold seed, the metrics and every clip's out-of-fold p(fight)).

With ``--partial`` (``tiles.py`` stopped early) every variant is scored on the clips written for every
set, the same clips for all.

Usage: python tiles_cv.py CACHE OUT.json --data DATA center crop center&crop tilemax max:tiles
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from common import data_option, need
from head_cv import Heads, load
from training import OnCache, as_inputs, fold_proba

from xvad.data import group_kfold, load_dataset
from xvad.metrics import classification_metrics
from xvad.train import TrainConfig

STREAMS = ("motion", "flow")
WATCH = ("fi090", "fi095", "fi035")   # far or hidden fights MODEL_CARD.md lists; camera g36 is added
WATCH_GROUP = "g36"


class MaxOver(OnCache):
    """One model of ``Heads(dims)`` that scores each of ``k`` places (tiles, crops) of a clip; the clip's
    p(fight) is the largest place's, so that a fight in one corner is not averaged away."""

    def __init__(self, dims: list[int], k: int, classes, eps: float = 1e-5, clamp: float | None = None) -> None:
        super().__init__(classes)
        self.k = k
        self.inner = Heads(dims, classes, eps, clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, k * sum(dims)]`` (place-major) -> ``[B, 2]`` log-probabilities, p(fight) = max over places."""
        b, t, _ = x.shape
        places = x.reshape(b, t, self.k, -1).permute(0, 2, 1, 3).reshape(b * self.k, t, -1)
        fight = self.inner(places)[:, 1].exp().reshape(b, self.k).amax(1).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log1p(-fight), fight.log()], 1)


def distinct_tiles(x: np.ndarray) -> int:
    """How many of the stored tiles differ for some clip (clips with fewer repeat their last tile)."""
    k = x.shape[1]
    while k > 1 and np.array_equal(x[:, k - 1], x[:, k - 2]):
        k -= 1
    return k


class Features:
    """The per-frame features of ``tiles.py``'s cache: the finished sets, or (``partial``) the clips
    written so far of every set, read from its unfinished files."""

    def __init__(self, cache: str, partial: bool = False) -> None:
        self.cache, self.partial = cache, partial
        self.rows = None
        if partial:
            done = np.load(os.path.join(cache, "tiles", "done.part.npy"))
            self.rows = np.flatnonzero(done.all(1))

    def get(self, prefix: str, stream: str) -> np.ndarray:
        """``[N, T, 1280]`` of ``<prefix>_<stream>`` (``tilemax``: the maximum over tiles)."""
        if not self.partial:
            return load(self.cache, f"{prefix}_{stream}__max").numpy()
        if prefix == "tilemax":
            return self.tiles(stream).max(1)
        return np.load(os.path.join(self.cache, "tiles", f"{prefix}_{stream}.part.npy"),
                       mmap_mode="r")[self.rows].astype(np.float32)

    def tiles(self, stream: str) -> np.ndarray:
        """``[N, K, T, 1280]``: every tile."""
        name = f"tiles_{stream}.part.npy" if self.partial else f"tiles_{stream}.npy"
        x = np.load(os.path.join(self.cache, "tiles", name), mmap_mode="r")
        return (x[self.rows] if self.partial else np.asarray(x)).astype(np.float32)


def variant_inputs(features: Features, name: str) -> tuple[torch.Tensor, list[int], int]:
    """``(features [N, T, D], the streams' widths, places)`` for a variant (see the module's doc)."""
    if name == "max:tiles":
        tiles = [features.tiles(s) for s in STREAMS]
        k = max(distinct_tiles(t) for t in tiles)
        both = np.concatenate([t[:, :k] for t in tiles], -1)           # [N, k, T, 2560]
        x = torch.from_numpy(both.transpose(0, 2, 1, 3).reshape(len(both), both.shape[2], -1))
        return x, [1280] * len(STREAMS), k
    if name.startswith("max:"):
        places = [np.concatenate([features.get(p, s) for s in STREAMS], 2) for p in name[4:].split(",")]
        return torch.from_numpy(np.concatenate(places, 2)), [1280] * len(STREAMS), len(places)
    parts = [features.get(p, s) for p in name.split("&") for s in STREAMS]
    return torch.from_numpy(np.concatenate(parts, 2)), [p.shape[2] for p in parts], 1


def summary(per_seed: list[dict]) -> str:
    out = []
    for key in ("accuracy", "roc_auc", "recall"):
        v = [m[key] for m in per_seed]
        out.append(f"{key} {np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", help="the feature cache of tiles.py")
    ap.add_argument("out", help="a JSON file for the results (variants already in it are kept)")
    ap.add_argument("names", nargs="+")
    data_option(ap)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fold seeds")
    ap.add_argument("--epochs", type=int, default=60, help="epochs the inner split is trained for")
    ap.add_argument("--partial", action="store_true",
                    help="tiles.py has not finished: score the clips it has written for every set")
    a = ap.parse_args()
    need(ap, a, "data")
    torch.set_num_threads(1)
    data = load_dataset(a.data)
    features = Features(a.cache, a.partial)
    if features.rows is not None:
        print(f"{len(features.rows)} of {len(data)} clips written for every set: scoring those", flush=True)
        data = data.subset(features.rows)
    cfg = TrainConfig(epochs=a.epochs, patience=a.epochs + 1)
    clips = [os.path.splitext(os.path.basename(s.path))[0] for s in data.samples]
    watch = [i for i, (c, s) in enumerate(zip(clips, data.samples)) if c in WATCH or s.group == WATCH_GROUP]
    results = {}
    if os.path.isfile(a.out):
        with open(a.out) as f:
            results = json.load(f)
    for name in a.names:
        x, dims, k = variant_inputs(features, name)
        if len(x) != len(data):
            raise SystemExit(f"{a.cache}: {name} has {len(x)} clips, {a.data} {len(data)}")
        inputs = as_inputs(x)

        def model(dims: list[int] = dims, k: int = k) -> OnCache:
            return MaxOver(dims, k, data.classes) if k > 1 else Heads(dims, data.classes)

        per_seed = []
        for seed in a.seeds:
            oof, folds = np.zeros(len(data)), []
            for f, (tr, va) in enumerate(group_kfold(data, 5, seed)):
                p, _ = fold_proba(model, inputs, data, tr, va, cfg, seed + f)
                oof[va] = p[0][:, 1]
                folds.append(classification_metrics(data.labels[va], p[0], data.classes))
            means = {key: float(np.mean([m[key] for m in folds])) for key in ("accuracy", "roc_auc", "recall")}
            per_seed.append({"seed": seed, "n": len(data), **means,
                             "p_fight": dict(zip(clips, np.round(oof, 4).tolist()))})
        results[name] = per_seed
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"{name:20s} {summary(per_seed)}; per seed "
              + ", ".join(f"{m['accuracy']:.3f}/{m['roc_auc']:.3f}/{m['recall']:.3f}" for m in per_seed), flush=True)
        mean_p = np.mean([[m["p_fight"][clips[i]] for i in watch] for m in per_seed], 0)
        print("   watched p(fight), mean over seeds: " + ", ".join(
            f"{clips[i]}{'*' if data.labels[i] else ''} {p:.2f}" for i, p in zip(watch, mean_p)), flush=True)


if __name__ == "__main__":
    main()
