"""Does fine-tuning the top of EfficientNet-Lite0 help the motion model? Group 5-fold CV on surv-fight.

The frozen lower network runs once: the output of block ``--cut`` (the 16 motion images of each clip,
as the shipped model sees them) is cached. Training then runs the blocks above the cut and the
1x1 head conv (trainable, from ImageNet, BatchNorm statistics kept) + max pool + mean/max over
time + the standardised linear head, with `xvad train`'s loop (``xvad.train.fit`` with
``finetune=True``: the head at lr 1e-3, the backbone part at ``--backbone-lr``; epochs chosen on an
inner group split, early stop after 8 epochs without progress). ``--backbone-lr 0`` is the frozen
reference (the shipped recipe on plain views).

Usage: python finetune_top.py DATA CACHE_DIR [--cut 15] [--backbone-lr 1e-4] [--seed 0]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from training import OnCache, fold_proba

from xvad.data import group_kfold, load_dataset
from xvad.features import load_frames
from xvad.metrics import classification_metrics
from xvad.models import CRNN
from xvad.train import TrainConfig
from xvad.video import preprocess_as


def cache_cut(data, model: CRNN, cut: int, path: str) -> np.ndarray:
    """Activations after block ``cut - 1`` (blocks 0..cut-1 applied), float16 [N, T, C, h, w]."""
    if os.path.isfile(path):
        return np.load(path, mmap_mode="r")
    net = model.backbone.body.net
    out = None
    for i, s in enumerate(data.samples):
        x = preprocess_as(load_frames(s.path, model.config), model.config)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.nn.functional.relu6(net._bn0(net._conv_stem(x)))
            for block in net._blocks[:cut]:
                y = block(y)
        y = y.float().numpy().astype(np.float16)
        if out is None:
            out = np.lib.format.open_memmap(path + ".part.npy", mode="w+", dtype=np.float16,
                                            shape=(len(data), *y.shape))
        out[i] = y
        if i % 40 == 0:
            print(f"cached {i + 1}/{len(data)}", flush=True)
    out.flush()
    del out
    os.replace(path + ".part.npy", path)
    return np.load(path, mmap_mode="r")


class Top(OnCache):
    """Blocks from ``cut`` on, the head conv, max pool, mean/max over time, standardised linear layer.
    ``backbone`` (the blocks, the head conv and its batch norm) trains at ``backbone_lr``, the rest at
    ``lr`` (``xvad.train.fit`` with ``finetune=True``)."""

    def __init__(self, model: CRNN, cut: int, train_backbone: bool) -> None:
        super().__init__(model.classes)
        net = copy.deepcopy(model.backbone.body.net)
        self.backbone = nn.ModuleDict(dict(blocks=nn.ModuleList(net._blocks[cut:]), conv_head=net._conv_head,
                                           bn=net._bn1, act=net._head_act))
        for p in self.backbone.parameters():   # the copied backbone arrives frozen
            p.requires_grad_(train_backbone)
        self.norm = nn.BatchNorm1d(2 * 1280, affine=False)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(2 * 1280, len(self.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # x [B, T, C, h, w]
        b, t = x.shape[:2]
        y = x.flatten(0, 1)
        bb = self.backbone
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for block in bb["blocks"]:
                y = block(y)
            y = bb["act"](bb["bn"](bb["conv_head"](y)))
        f = y.float().amax((2, 3)).view(b, t, -1)
        return self.fc(self.drop(self.norm(torch.cat([f.mean(1), f.amax(1)], 1))))

    def train(self, mode: bool = True):
        super().train(mode)
        for m in (self.backbone["blocks"], self.backbone["bn"]):   # ImageNet BatchNorm statistics stay
            m.eval()
        return self


class Cached(Mapping):
    """``{(clip, 0): activations}`` read from the cache file on demand (``xvad.train``'s inputs)."""

    def __init__(self, X: np.ndarray) -> None:
        self.X = X

    def __getitem__(self, key):
        i, view = key
        if view != 0 or not 0 <= i < len(self.X):
            raise KeyError(key)
        return torch.from_numpy(np.asarray(self.X[i]))

    def __iter__(self):
        return ((i, 0) for i in range(len(self.X)))

    def __len__(self) -> int:
        return len(self.X)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("cache")
    ap.add_argument("--cut", type=int, default=15, help="first trainable block (16: only the head conv)")
    ap.add_argument("--backbone-lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(a.cache, exist_ok=True)
    data = load_dataset(a.data)
    base = CRNN("efficientnet_lite0", weights="imagenet", input="motion", pooling="max", temporal="pool",
                classes=data.classes).eval()
    X = cache_cut(data, base, a.cut, os.path.join(a.cache, f"motion16_cut{a.cut}.npy"))
    y = data.labels
    cfg = TrainConfig(epochs=a.epochs, patience=8, finetune=True, backbone_lr=a.backbone_lr)
    inputs = Cached(X)
    t0 = time.time()
    folds, proba = [], np.zeros((len(y), 2))
    for f, (tr, va) in enumerate(group_kfold(data, 5, a.seed)):
        (p,), e = fold_proba(lambda: Top(base, a.cut, a.backbone_lr > 0), inputs, data, tr, va, cfg, a.seed + f)
        proba[va] = p
        folds.append(classification_metrics(y[va], p, data.classes) | {"epochs": e})
        print(f"fold {f + 1}: acc {folds[-1]['accuracy']:.3f} auc {folds[-1]['roc_auc']:.3f} epochs {e} "
              f"({time.time() - t0:.0f} s)", flush=True)
    res = {k: (float(np.mean([r[k] for r in folds])), float(np.std([r[k] for r in folds])))
           for k in ("accuracy", "roc_auc", "precision", "recall")}
    pooled = classification_metrics(y, proba, data.classes)
    out = {"cut": a.cut, "backbone_lr": a.backbone_lr, "seed": a.seed, "folds": res,
           "pooled": {k: pooled[k] for k in ("accuracy", "roc_auc")}, "epochs": [r["epochs"] for r in folds],
           "seconds": time.time() - t0}
    print(json.dumps(out))
    with open(os.path.join(a.cache, "finetune_results.jsonl"), "a") as fh:
        fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
