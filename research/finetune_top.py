"""Does fine-tuning the top of EfficientNet-Lite0 help the motion model? Group 5-fold CV on surv-fight.

The frozen lower network runs once: the output of block ``--cut`` (the 16 motion images of each clip,
as the shipped model sees them) is cached. Training then runs the blocks above the cut and the
1x1 head conv (trainable, from ImageNet, BatchNorm statistics kept) + max pool + mean/max over
time + the standardised linear head, with epochs chosen on an inner group split as `xvad train`
does. ``--backbone-lr 0`` is the frozen reference (the shipped recipe on plain views).

Usage: python finetune_top.py DATA CACHE_DIR [--cut 15] [--backbone-lr 1e-4] [--seed 0]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np
import torch
from torch import nn

from xvad.data import group_kfold, group_split, load_dataset
from xvad.features import load_frames
from xvad.metrics import classification_metrics
from xvad.models import CRNN
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


class Top(nn.Module):
    """Blocks from ``cut`` on, the head conv, max pool, mean/max over time, standardised linear layer."""

    def __init__(self, model: CRNN, cut: int) -> None:
        super().__init__()
        net = copy.deepcopy(model.backbone.body.net)
        self.blocks = nn.ModuleList(net._blocks[cut:])
        self.conv_head, self.bn, self.act = net._conv_head, net._bn1, net._head_act
        self.norm = nn.BatchNorm1d(2 * 1280, affine=False)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(2 * 1280, 2)

    def backbone_params(self):
        return [p for m in (self.blocks, self.conv_head, self.bn) for p in m.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # x [B, T, C, h, w]
        b, t = x.shape[:2]
        y = x.flatten(0, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for block in self.blocks:
                y = block(y)
            y = self.act(self.bn(self.conv_head(y)))
        f = y.float().amax((2, 3)).view(b, t, -1)
        return self.fc(self.drop(self.norm(torch.cat([f.mean(1), f.amax(1)], 1))))

    def train(self, mode: bool = True):
        super().train(mode)
        for m in (self.blocks, self.bn):   # ImageNet BatchNorm statistics stay as they are
            m.eval()
        return self


def fit(base: CRNN, cut: int, X, y, tr, va, epochs: int, seed: int, lr_bb: float, patience: int = 8):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m = Top(base, cut)
    groups = [{"params": list(m.fc.parameters()), "lr": 1e-3}]
    for p in m.backbone_params():   # the copied backbone arrives frozen
        p.requires_grad_(lr_bb > 0)
    if lr_bb > 0:
        groups.append({"params": m.backbone_params(), "lr": lr_bb})
    opt = torch.optim.AdamW(groups, weight_decay=1e-3)
    counts = np.bincount(y[tr], minlength=2)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(len(tr) / (2 * counts), dtype=torch.float32))
    best, bad, best_state, best_epoch = float("inf"), 0, None, epochs
    for epoch in range(epochs):
        m.train()
        order = rng.permutation(tr)
        for s in range(0, len(order), 16):
            b = np.sort(order[s:s + 16])
            if len(b) < 2:
                continue
            loss = loss_fn(m(torch.from_numpy(np.asarray(X[b])).float()), torch.from_numpy(y[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if len(va):
            p = predict(m, X, va)
            vl = float(nn.functional.nll_loss(torch.log(p.clamp_min(1e-8)), torch.from_numpy(y[va])))
            if vl < best - 1e-4:
                best, bad, best_epoch, best_state = vl, 0, epoch + 1, copy.deepcopy(m.state_dict())
            else:
                bad += 1
                if bad >= patience:
                    break
    if best_state is not None:
        m.load_state_dict(best_state)
    return m, best_epoch


@torch.no_grad()
def predict(m: Top, X, idx) -> torch.Tensor:
    m.eval()
    return torch.cat([m(torch.from_numpy(np.asarray(X[np.sort(idx)[s:s + 32]])).float()).softmax(-1)
                      for s in range(0, len(idx), 32)])


def main() -> None:
    ap = argparse.ArgumentParser()
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
    t0 = time.time()
    folds, proba = [], np.zeros((len(y), 2))
    for f, (tr, va) in enumerate(group_kfold(data, 5, a.seed)):
        itr, iva = group_split(data.subset(tr), 0.2, a.seed + f)
        _, e = fit(base, a.cut, X, y, tr[itr], tr[iva], a.epochs, a.seed + f, a.backbone_lr)
        m, _ = fit(base, a.cut, X, y, tr, np.array([], int), e, a.seed + f, a.backbone_lr)
        va = np.sort(va)
        p = predict(m, X, va).numpy()
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
