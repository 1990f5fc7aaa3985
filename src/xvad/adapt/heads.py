"""Retraining a pooled model's heads on pooled window features, each sample with its own weight.

The loss is the shipped recipe's (class-weighted negative log of the streams' mean probability,
AdamW, dropout and the heads' batch norm in training mode), with one change: every sample carries a
weight, so that a camera's handful of clips can count as much as the hundreds of base clips.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..models import CRNN
from .pooled import head_log_proba, heads


@dataclass(frozen=True)
class HeadRecipe:
    """How the heads train: the shipped model's settings; ``epochs`` comes with the base features."""

    epochs: int = 36
    lr: float = 1e-3
    weight_decay: float = 1e-3
    batch_size: int = 16


def sample_weights(labels: np.ndarray, site: np.ndarray, share: float) -> np.ndarray:
    """Per-sample weights: base and site samples balanced by class within each part, and the site part
    given ``share`` of the total (0.5: the camera's clips weigh as much as the whole base set)."""
    labels, site = np.asarray(labels, int), np.asarray(site, bool)
    w = np.zeros(len(labels))
    parts = [(~site, 1.0 - share), (site, share)] if site.any() and share > 0 else [(~site | site, 1.0)]
    for part, total in parts:
        classes = np.unique(labels[part])
        for c in classes:
            members = part & (labels == c)
            w[members] = total / (len(classes) * members.sum())
    return w * len(labels)          # mean weight 1: the learning rate means what it means in training


def fit_heads(model: CRNN, pooled: torch.Tensor, labels: np.ndarray, weights: np.ndarray,
              recipe: HeadRecipe = HeadRecipe(), seed: int = 0,
              on_epoch: Callable[[CRNN], None] | None = None) -> CRNN:
    """A copy of ``model`` whose heads are trained afresh (seeded) on ``pooled`` ``[N, S, 2D]`` with
    ``labels`` and per-sample ``weights``; the backbone is shared with ``model``, not copied.
    ``on_epoch(model)`` is called after each epoch (in eval mode; training resumes after)."""
    backbone = model.backbone
    model.backbone = None       # type: ignore[assignment]   # not deep-copied: it is frozen and large
    try:
        new = copy.deepcopy(model)
    finally:
        model.backbone = backbone
    new.backbone = backbone
    torch.manual_seed(seed)
    for h in heads(new):
        for m in h.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset) and m is not h:
                reset()
    params = [p for h in heads(new) for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    rng = np.random.default_rng(seed)
    for h in heads(new):
        h.train()
    for _ in range(recipe.epochs):
        order = rng.permutation(len(y))
        for first in range(0, len(order), recipe.batch_size):
            batch = order[first:first + recipe.batch_size]
            if len(batch) == 1 < len(order):
                continue        # batch statistics need two samples
            logp = head_log_proba(new, pooled[batch])
            loss = -(w[batch] * logp[torch.arange(len(batch)), y[batch]]).sum() / w[batch].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(new.eval())
            for h in heads(new):
                h.train()
    new.checkpoint_id = ""              # a new model: it gets its id when it is saved and loaded
    return new.eval()
