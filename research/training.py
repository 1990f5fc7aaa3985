"""How the research scripts train: the package's own loop (``xvad.train.choose_epochs`` and ``fit``) on
inputs the scripts cached, so that a head in a screen trains as ``xvad train`` trains it.

``fit`` asks of a model what ``CRNN`` has: ``classes``, ``device``, ``temporal_modules()`` (the part it
re-initialises and trains at ``lr``), ``classify`` (the forward pass on cached inputs) and, when
fine-tuning, ``backbone`` (trained at ``backbone_lr``, with the model's ``forward``). :class:`OnCache`
gives a research module those; inputs are ``{(clip, view): tensor}`` as in ``xvad.train``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
from torch import nn

from xvad.data import Dataset
from xvad.train import TrainConfig, choose_epochs, fit, predict_inputs


class OnCache(nn.Module):
    """A module ``xvad.train.fit`` can train: its children other than ``backbone`` are what it trains."""

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__()
        self.classes = list(classes)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def temporal_modules(self) -> list[nn.Module]:
        return [m for name, m in self.named_children() if name != "backbone"]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


def as_inputs(x: torch.Tensor | np.ndarray, view: int = 0) -> dict:
    """``{(clip, view): x[clip]}``: one cached tensor per clip, as ``xvad.train.fit`` reads them."""
    return {(i, view): torch.as_tensor(x[i]) for i in range(len(x))}


def views(inputs: dict, idx, n_views: int = 1) -> list[tuple[int, int]]:
    """The training items of clips ``idx``: every view present, all clips' view 0 first."""
    return [(int(i), v) for v in range(n_views) for i in idx if (int(i), v) in inputs]


def fold_proba(new_model: Callable[[], nn.Module], inputs: dict, data: Dataset, tr: np.ndarray, va: np.ndarray,
               cfg: TrainConfig, seed: int, n_views: int = 1, final_seeds: Sequence[int] | None = None,
               score_inputs: Sequence[dict] = ()) -> tuple[list[np.ndarray], int]:
    """One outer fold as ``xvad.train.train`` runs it: the epoch count chosen inside ``tr``
    (``choose_epochs``), then a model trained on all of ``tr`` for that many epochs (one per final seed,
    default ``seed``) scores ``va`` on ``inputs`` and on each of ``score_inputs``.

    Returns, per scored input set, the ``[len(va), classes]`` probabilities averaged over the final
    models, and the chosen epoch count. ``new_model`` gives a fresh model for every training run, so
    nothing trained in one run (a fine-tuned backbone) carries into the next."""
    def views_of(idx) -> list[tuple[int, int]]:
        return views(inputs, idx, n_views)

    sel = choose_epochs(new_model(), inputs, data, tr, views_of, cfg, seed, "choosing epochs", False)
    epochs = max(int(sel["best_epoch"]), 1)
    items = [(int(i), 0) for i in va]
    probs: list[list[np.ndarray]] = [[] for _ in range(1 + len(score_inputs))]
    for s in final_seeds if final_seeds is not None else [seed]:
        model = new_model()
        fit(model, inputs, views_of(tr), [], data.labels, cfg, epochs, s, "training", False)
        for k, source in enumerate([inputs, *score_inputs]):
            probs[k].append(predict_inputs(model, source, items, cfg).numpy())
    return [np.mean(p, 0) for p in probs], epochs
