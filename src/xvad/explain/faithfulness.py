"""Faithfulness of a map: deletion and insertion curves (Petsiuk et al. 2018, RISE) over space-time.

Deletion: remove the clip's voxels ``(t, y, x)`` (all three channels) most important first,
replacing them by a baseline, in ``n_steps`` equal steps, and record the target's softmax
probability; a faithful map makes it fall fast (low area under the curve). Insertion: start from
the baseline and put the most important voxels back first; the probability should rise fast (high
area). The same curves for a random voxel order (same seed) are reported side by side: a map is
informative only if it beats random. Temporal deletion removes whole frames (replaced by a neutral
frame) in the order of the explanation's ``frame_importance``, against a random frame order.

All perturbed clips of one curve go through the model in batches, without gradients.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import (
    ExplainError,
    Explanation,
    _choice,
    auto_chunk,
    black_frame,
    check_clip,
    explaining,
    gaussian_blur,
    model_device,
    model_dtype,
)
from .occlusion import FILLS, neutral_frames

BASELINES = ("blurred", "mean", "black")


@dataclass
class Faithfulness:
    """Areas under the deletion / insertion curves (x axis: fraction removed/inserted, 0..1)."""

    method: str
    target: int
    score: float                       # target probability on the untouched clip
    deletion_auc: float                # lower is better
    deletion_auc_random: float
    insertion_auc: float               # higher is better
    insertion_auc_random: float
    temporal_deletion_auc: float       # lower is better
    temporal_deletion_auc_random: float
    options: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)  # name -> (fractions, probabilities)

    def __str__(self) -> str:
        rows = [("deletion (lower is better)", self.deletion_auc, self.deletion_auc_random),
                ("insertion (higher is better)", self.insertion_auc, self.insertion_auc_random),
                ("temporal deletion (lower is better)", self.temporal_deletion_auc,
                 self.temporal_deletion_auc_random)]
        lines = [f"{self.method}, target {self.target} (p={self.score:.3f}): AUC     map  random"]
        lines += [f"  {name:<36} {a:6.3f}  {r:6.3f}" for name, a, r in rows]
        return "\n".join(lines)


def auc(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area under ``values`` over ``fractions``."""
    f, v = np.asarray(fractions, np.float64), np.asarray(values, np.float64)
    return float(((v[1:] + v[:-1]) / 2 * np.diff(f)).sum())


def _order(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices from the largest value down; ties in random order (so flat regions carry no bias)."""
    values = np.asarray(values, np.float64).ravel()
    return np.lexsort((rng.random(values.size), -values))


def _probabilities(model: nn.Module, clips: torch.Tensor, target: int, batch: int) -> np.ndarray:
    out = []
    for start in range(0, clips.shape[0], batch):
        logits = model(clips[start:start + batch])
        out.append(logits.float().softmax(1)[:, target])
    return torch.cat(out).cpu().numpy()


def faithfulness(model: nn.Module, clip: Any, explanation: Explanation | None = None, method: str = "gradcam",
                 target: Any = None, n_steps: int = 16, baseline: str = "blurred", fill: str = "temporal_mean",
                 seed: int = 0, blur_sigma: float | None = None, batch_size: int | None = None,
                 **options: Any) -> Faithfulness:
    """Deletion, insertion and temporal-deletion AUCs of ``explanation`` (computed with ``method`` and
    ``options`` if not given) on one clip ``[T, 3, H, W]``, each beside the same curve in random order.

    ``baseline`` replaces removed voxels: "blurred" (the clip under a Gaussian blur of ``blur_sigma``
    pixels, default a tenth of the frame side), "mean" (0 in normalised space) or "black". ``fill``
    is the neutral frame for temporal deletion (see :mod:`.occlusion`).
    """
    from . import explain

    _choice("baseline", baseline, BASELINES)
    _choice("fill", fill, FILLS)
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ExplainError(f"n_steps must be an integer >= 1, not {n_steps!r}")
    x, batched = check_clip(clip, model)
    if batched and x.shape[0] != 1:
        raise ExplainError(f"faithfulness takes one clip [T, 3, H, W]; got a batch of {x.shape[0]}")
    if explanation is None:
        explanation = explain(model, x[0], method, target=target, normalize="none", **options)
    elif explanation.batched:
        raise ExplainError("faithfulness takes the explanation of one clip; use Explanation.unbatch()")
    x = x.detach().to(device=model_device(model), dtype=model_dtype(model))
    t, _, h, w = x.shape[1:]
    if explanation.maps.shape != (t, h, w):
        raise ExplainError(f"explanation maps are {list(explanation.maps.shape)}, the clip is {[t, h, w]}")
    tgt = int(explanation.target)
    batch = batch_size or auto_chunk(t, h, w, budget=64)

    if baseline == "blurred":
        base = gaussian_blur(x, max(h, w) / 10 if blur_sigma is None else float(blur_sigma))
    elif baseline == "mean":
        base = torch.zeros_like(x)
    else:
        base = black_frame(model, x)
    neutral = neutral_frames(model, x, fill)

    n = t * h * w
    counts = np.round(np.linspace(0, n, n_steps + 1)).astype(np.int64)
    fractions = counts / n
    rng = np.random.default_rng(seed)
    orders = {"map": _order(explanation.maps, rng), "random": rng.permutation(n)}
    frame_orders = {"map": _order(explanation.frame_importance, rng), "random": rng.permutation(t)}

    def voxel_clips(order: np.ndarray, insert: bool) -> torch.Tensor:
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        position = torch.from_numpy(rank).to(x.device).view(1, t, 1, h, w)
        steps = torch.from_numpy(counts).to(x.device).view(-1, 1, 1, 1, 1)
        chosen = position < steps  # [steps+1, T, 1, H, W]: the voxels removed (or inserted) so far
        if insert:
            return torch.where(chosen, x, base)
        return torch.where(chosen, base, x)

    def frame_clips(order: np.ndarray) -> torch.Tensor:
        clips = x.repeat(t + 1, 1, 1, 1, 1)
        for k in range(1, t + 1):
            clips[k, order[:k]] = neutral[0]
        return clips

    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with explaining(model), torch.no_grad():
        score = float(_probabilities(model, x, tgt, 1)[0])
        for kind in ("map", "random"):
            suffix = "" if kind == "map" else "_random"
            for name, clips in (("deletion", voxel_clips(orders[kind], False)),
                                ("insertion", voxel_clips(orders[kind], True))):
                curves[name + suffix] = (fractions, _probabilities(model, clips, tgt, batch))
            curves["temporal_deletion" + suffix] = (
                np.arange(t + 1) / t, _probabilities(model, frame_clips(frame_orders[kind]), tgt, batch))
    areas = {name: auc(*curve) for name, curve in curves.items()}
    return Faithfulness(
        method=explanation.method, target=tgt, score=score,
        deletion_auc=areas["deletion"], deletion_auc_random=areas["deletion_random"],
        insertion_auc=areas["insertion"], insertion_auc_random=areas["insertion_random"],
        temporal_deletion_auc=areas["temporal_deletion"],
        temporal_deletion_auc_random=areas["temporal_deletion_random"],
        options={"n_steps": int(n_steps), "baseline": baseline, "fill": fill, "seed": seed,
                 "explanation_options": dict(explanation.options)},
        curves=curves)
