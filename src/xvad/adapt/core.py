"""Adapting a model to one camera: its heads retrained on the base clips plus the camera's, the camera's
clips weighted up, and the camera's own threshold chosen on out-of-fold scores of its clips (given
``THRESHOLD_CLIPS`` of each class).

Each camera clip is a set of windows (:func:`~.pooled.clip_windows`); it is scored as a stream is, by
its highest window, and it trains through that window under the current model (for a fight clip, the
window most likely to hold the fight; for a quiet one, its hardest moment).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import Dataset, Sample, group_kfold
from ..metrics import classification_metrics
from ..models import CRNN
from .base import BaseFeatures
from .heads import HeadRecipe, fit_heads, sample_weights
from .pooled import alert_scores

log = logging.getLogger(__name__)
SHARE = 0.5          # the camera's clips weigh as much as the whole base set
# clips of each class a camera needs before its own threshold is chosen: with 2 of each, the threshold
# chosen on their 4 out-of-fold scores cost the shipped model accuracy (surv-fight, each source video a
# camera, 18 groups: 0.812 against 0.868 keeping 0.5; scripts/adapt_curve.py, README)
THRESHOLD_CLIPS = 4


def clip_scores(model: CRNN, clips: list[torch.Tensor]) -> np.ndarray:
    """Each clip's score as a stream gets it: the highest p(alert) over its windows."""
    if not clips:
        return np.zeros(0)
    scores = alert_scores(model, torch.cat(clips))
    bounds = np.cumsum([0] + [len(c) for c in clips])
    return np.array([scores[a:b].max() for a, b in zip(bounds[:-1], bounds[1:])])


def top_windows(model: CRNN, clips: list[torch.Tensor]) -> torch.Tensor:
    """``[N, S, 2D]``: each clip's window with the highest p(alert) under ``model``."""
    return torch.stack([c[int(np.argmax(alert_scores(model, c)))] for c in clips])


def retrain(model: CRNN, base: BaseFeatures, site: torch.Tensor, site_labels: np.ndarray,
            share: float = SHARE, seed: int = 0, exclude: np.ndarray | None = None) -> CRNN:
    """Heads trained on the base features (minus ``exclude``, a mask) plus the site windows ``site``."""
    keep = np.ones(len(base.labels), bool) if exclude is None else ~exclude
    pooled = torch.cat([base.pooled[keep], site]) if len(site) else base.pooled[keep]
    labels = np.concatenate([base.labels[keep], np.asarray(site_labels, int)])
    is_site = np.r_[np.zeros(int(keep.sum()), bool), np.ones(len(site), bool)]
    weights = sample_weights(labels, is_site, share)
    return fit_heads(model, pooled, labels, weights, HeadRecipe(epochs=base.epochs), seed)


def choose_threshold(scores: np.ndarray, labels: np.ndarray, default: float = 0.5) -> float:
    """The threshold with the best balanced accuracy on ``scores`` (midpoints between neighbouring
    scores); among equals, the one nearest ``default`` on the logit scale. ``default`` without both
    classes."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if len(set(labels.tolist())) < 2:
        return default
    s = np.unique(scores)
    candidates = np.r_[(s[:-1] + s[1:]) / 2, s[0] - 1e-6, s[-1] + 1e-6, default]
    candidates = np.clip(candidates, 1e-4, 1 - 1e-4)

    def balanced(t: float) -> float:
        pred = scores >= t
        return float(np.mean([np.mean(pred[labels == c] == bool(c)) for c in (0, 1)]))

    def logit(p: float) -> float:
        return float(np.log(p / (1 - p)))

    best = max(balanced(t) for t in candidates)
    return float(min((t for t in candidates if balanced(t) >= best - 1e-12),
                     key=lambda t: abs(logit(t) - logit(default))))


def site_folds(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Stratified folds over a site's clips (as many as the rarer class allows, at most 5): the held-out
    index arrays; none when a class has fewer than two clips."""
    labels = np.asarray(labels, int)
    counts = np.bincount(labels, minlength=2)
    k = int(min(5, counts.min()))
    if k < 2:
        return []
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), int)
    for c in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = np.arange(len(members)) % k
    return [np.flatnonzero(fold == f) for f in range(k)]


@dataclass
class Adaptation:
    """An adapted model, its threshold and what was measured on the site's clips."""

    model: CRNN
    threshold: float
    report: dict = field(default_factory=dict)


def adapt(model: CRNN, base: BaseFeatures, clips: list[torch.Tensor], labels: np.ndarray, *,
          share: float = SHARE, seed: int = 0, default_threshold: float | None = None) -> Adaptation:
    """Adapt ``model`` to a site from its labelled ``clips`` (each ``[W, S, 2D]``): the heads retrained
    on everything, the threshold chosen on out-of-fold scores (each clip scored by heads trained
    without its fold) given ``THRESHOLD_CLIPS`` of each class, else the model's, and the report of
    those scores beside the current model's."""
    labels = np.asarray(labels, int)
    counts = np.bincount(labels, minlength=2)
    current = float(default_threshold if default_threshold is not None
                     else (getattr(model, "extra", None) or {}).get("threshold", 0.5))
    windows = top_windows(model, clips)
    before = clip_scores(model, clips)
    oof = np.full(len(clips), np.nan)
    for f, held in enumerate(site_folds(labels, seed)):
        rest = np.setdiff1d(np.arange(len(clips)), held)
        fold_model = retrain(model, base, windows[rest], labels[rest], share, seed + f)
        oof[held] = clip_scores(fold_model, [clips[i] for i in held])
    have_oof = bool(np.isfinite(oof).all())
    enough = int(counts.min()) >= THRESHOLD_CLIPS
    threshold = choose_threshold(oof, labels, 0.5) if have_oof and enough else current
    adapted = retrain(model, base, windows, labels, share, seed)
    report = {"n_clips": int(len(labels)), "per_class": counts.tolist(),
              "share": share, "seed": seed, "threshold": threshold, "previous_threshold": current,
              "base_clips": int(len(base.labels)), "base_checkpoint_id": base.checkpoint_id, "base_features": base.path,
              "current_on_site": summarise(before, labels, current)}
    if have_oof:
        report["adapted_out_of_fold"] = summarise(oof, labels, threshold)
        report["out_of_fold_note"] = ("each clip scored by heads trained without its fold; the threshold was "
                                      "chosen on these same scores, so their accuracy is optimistic" if enough else
                                      f"each clip scored by heads trained without its fold; with fewer than "
                                      f"{THRESHOLD_CLIPS} clips of a class the threshold stays the model's")
    log.info("adapted on %d clips: threshold %.3f", len(labels), threshold)
    return Adaptation(adapted, threshold, report)


def summarise(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Accuracy, recall, precision and ROC-AUC of clip scores at ``threshold`` (JSON-ready)."""
    proba = np.stack([1 - scores, scores], 1)
    m = classification_metrics(np.asarray(labels, int), proba, ["0", "1"], threshold)
    return {k: m[k] for k in ("n", "accuracy", "recall", "precision", "roc_auc", "threshold", "confusion_matrix")}


def choose_base_epochs(model: CRNN, base: BaseFeatures, exclude: np.ndarray | None = None, folds: int = 3,
                       max_epochs: int = 60, seed: int = 0) -> int:
    """The epoch count for the base heads, chosen by inner group ``folds``-fold CV on the base features
    (minus ``exclude``): the epoch of lowest mean validation loss."""
    keep = np.flatnonzero(np.ones(len(base.labels), bool) if exclude is None else ~exclude)
    data = Dataset([Sample(str(i), int(base.labels[i]), str(base.groups[i])) for i in keep], ["0", "1"], "base")
    curves = []
    for k, (tr, va) in enumerate(group_kfold(data, folds, seed)):
        tr_i, va_i = keep[tr], keep[va]
        weights = sample_weights(base.labels[tr_i], np.zeros(len(tr_i), bool), 0.0)
        curve: list[float] = []

        def record(m: CRNN, va_i: np.ndarray = va_i, curve: list[float] = curve) -> None:
            p = np.clip(alert_scores(m, base.pooled[va_i]).astype(np.float64), 1e-8, 1 - 1e-8)
            y = base.labels[va_i]
            curve.append(float(-np.mean(np.where(y == 1, np.log(p), np.log(1 - p)))))

        fit_heads(model, base.pooled[tr_i], base.labels[tr_i], weights, HeadRecipe(epochs=max_epochs),
                  seed + k, on_epoch=record)
        curves.append(curve)
    return int(np.argmin(np.mean(curves, 0))) + 1
