"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

An explanation that explains the model must change when the model's weights are destroyed. The
check re-initialises a deep copy of the model cumulatively from the top down, the MLP head first,
then the GRU, then the backbone's convolution blocks from the last to the first, and after each
stage compares every method's maps with the trained model's maps by Spearman rank correlation
(1: same ranking of voxels, 0: unrelated). The trained model's target class is explained
throughout. Maps that stay highly correlated with the trained ones while the weights are random
are reading the input (edges, contrast), not the model.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import check_clip, model_device, model_dtype


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, len(values)])
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = (starts + (counts - 1) / 2.0 + 1.0)[group]
    return ranks


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two equally sized arrays (NaN when either is constant)."""
    ra, rb = rank(np.asarray(a, dtype=np.float64)), rank(np.asarray(b, dtype=np.float64))
    if ra.shape != rb.shape:
        raise ValueError(f"arrays differ in size: {ra.size} and {rb.size}")
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


# -- stages ------------------------------------------------------------------------------------
def _units(module: nn.Module) -> list[nn.Module]:
    """Modules that own parameters or buffers directly, in registration order."""
    return [m for m in module.modules()
            if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))]


def backbone_stages(backbone: nn.Module, frame: torch.Tensor, granularity: str = "block"
                    ) -> list[tuple[str, list[nn.Module]]]:
    """The backbone's layers in groups, last first: one group per convolution ("layer") or per run of
    convolutions with the same output resolution ("block", i.e. between downsamplings). Normalisation
    layers go with the convolution before them."""
    names = {m: n for n, m in backbone.named_modules()}
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return [("backbone", _units(backbone))] if _units(backbone) else []
    sizes: dict[nn.Module, tuple[int, int]] = {}

    def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        sizes.setdefault(module, (output.shape[-2], output.shape[-1]))

    handles = [c.register_forward_hook(record) for c in convs]
    try:
        with torch.no_grad():
            backbone(frame)
    finally:
        for handle in handles:
            handle.remove()
    owner: dict[nn.Module, nn.Module] = {}
    current = convs[0]
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            current = m
        owner[m] = current
    groups: list[list[nn.Module]] = []
    for conv in convs:
        same = groups and granularity == "block" and sizes.get(groups[-1][-1]) == sizes.get(conv)
        if same:
            groups[-1].append(conv)
        else:
            groups.append([conv])
    stages = []
    for group in groups:
        members = set(group)
        units = [u for u in _units(backbone) if owner.get(u) in members]
        h, w = sizes.get(group[0], (0, 0))
        first, last = names[group[0]], names[group[-1]]
        label = f"backbone {first}" if first == last else f"backbone {first}..{last}"
        stages.append((f"{label} ({h}x{w})", units))
    return stages[::-1]


def randomisation_stages(model: nn.Module, frame: torch.Tensor, granularity: str = "block"
                         ) -> list[tuple[str, list[nn.Module]]]:
    """Cumulative randomisation order, top down: the model's non-backbone parts in reverse order
    (for the CRNN: head, gru), then the backbone's groups from :func:`backbone_stages`."""
    stages = []
    for name, child in reversed(list(model.named_children())):
        if name != "backbone" and _units(child):
            stages.append((name, _units(child)))
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        stages += [(f"+ {name}", units) for name, units in backbone_stages(backbone, frame, granularity)]
    return stages


def reinitialise(modules: Sequence[nn.Module], seed: int) -> None:
    """Fresh random weights: each module's own ``reset_parameters``, else Gaussian with the old std."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in modules:
            reset, reset_stats = getattr(m, "reset_parameters", None), getattr(m, "reset_running_stats", None)
            if callable(reset):
                reset()
                if callable(reset_stats):
                    reset_stats()
            else:
                for p in m.parameters(recurse=False):
                    p.normal_(0.0, float(p.std()) if p.numel() > 1 else 1.0)


# -- the check ---------------------------------------------------------------------------------
def sanity_check(model: nn.Module, clip: Any, methods: Sequence[str] = ("gradcam", "saliency"),
                 target: Any = None, granularity: str = "block", seed: int = 0,
                 options: dict[str, dict] | None = None) -> dict[str, Any]:
    """Spearman correlation between trained and cumulatively randomised models' maps, per method and stage.

    Returns ``{"stages": [...], "spearman": {method: [one value per stage]}, "target": int,
    "methods": [...], "table": str}`` (print ``result["table"]``). ``options`` maps a method to its
    options. For a batch of clips the value is the mean of the per-clip correlations.
    """
    from . import explain

    if granularity not in ("block", "layer"):
        from .base import ExplainError

        raise ExplainError(f"granularity must be 'block' or 'layer', not {granularity!r}")
    options = options or {}
    x, _ = check_clip(clip, model)

    def maps(m: nn.Module, method: str, tgt: Any) -> Any:
        return explain(m, clip, method, target=tgt, normalize="none", **options.get(method, {}))

    reference = {method: maps(model, method, target) for method in methods}
    first = reference[methods[0]]
    fixed = first.target.tolist() if isinstance(first.target, np.ndarray) else first.target

    randomised = copy.deepcopy(model)
    frame = x[0, :1].to(device=model_device(randomised), dtype=model_dtype(randomised))
    was = randomised.training
    randomised.eval()
    stages = randomisation_stages(randomised, frame, granularity)
    randomised.train(was)
    table: dict[str, list[float]] = {method: [] for method in methods}
    for i, (_, units) in enumerate(stages):
        reinitialise(units, seed + i)
        for method in methods:
            ours = maps(randomised, method, fixed).maps
            ref = reference[method].maps
            if ref.ndim == 4:  # batch: mean of per-clip correlations
                value = float(np.nanmean([spearman(r, o) for r, o in zip(ref, ours)]))
            else:
                value = spearman(ref, ours)
            table[method].append(value)
    names = [name for name, _ in stages]
    return {"stages": names, "spearman": table, "target": fixed, "methods": list(methods),
            "table": format_table(names, table)}


def format_table(stages: Sequence[str], values: dict[str, list[float]]) -> str:
    """Stages down, methods across: Spearman correlation with the trained model's maps."""
    width = max([len("randomised (cumulative)")] + [len(s) for s in stages])
    cols = list(values)
    lines = ["randomised (cumulative)".ljust(width) + "".join(f"  {c:>12}" for c in cols)]
    for i, stage in enumerate(stages):
        lines.append(stage.ljust(width) + "".join(f"  {values[c][i]:>12.3f}" for c in cols))
    return "\n".join(lines)
