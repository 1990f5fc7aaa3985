"""The models the service runs, and the backbones they share.

Cameras may run different models (a camera's adopted version has heads of its own, retrained from its
reviewers' verdicts) on the same backbone. The backbone is nearly all the work, so the service runs it
once per batch for every camera whose model has the same backbone (the same weights and the same
input settings, :data:`xvad.features.FEATURE_KEYS`, at the same precision) and only the heads per
model. :func:`backbone_key` says when two models' backbones give the same features;
:class:`ModelShelf` loads each model file once and keeps one :class:`~xvad.stream.inference.Scorer` per
backbone (for the features) and one per model (for the head).
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..features import FEATURE_KEYS
from ..hashing import module_sha256
from ..stream.inference import FrameFeature, Scorer, WindowScore

log = logging.getLogger(__name__)

__all__ = ["ModelShelf", "backbone_key"]


def backbone_key(model: Any) -> str:
    """What decides a model's frame features: its input settings, its backbone's weights, the precision
    the backbone runs at and the dtype features come out in. Models with equal keys give equal features
    for the same frames, so one backbone call serves them all."""
    cfg: dict[str, Any] = {k: model.config.get(k) for k in FEATURE_KEYS}
    cfg.update(precision=model.precision, dtype=str(model.head_dtype), device=str(model.device),
               backbone_weights=module_sha256(model.backbone))
    return json.dumps(cfg, sort_keys=True, default=str)


class ModelShelf:
    """Models by file (``load(path or None)``, each loaded once), grouped by :func:`backbone_key`.

    :meth:`features` runs one backbone for all the frames of a group; :meth:`score` runs one model's
    head on its windows. Loading may happen in another thread than scoring (a version adopted while the
    service runs): the dictionaries are only added to, under a lock."""

    def __init__(self, load: Callable[[str | None], Any]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self.heads: dict[str | None, Scorer] = {}       # model file (None: the shipped one) -> its scorer
        self.backbones: dict[str, Scorer] = {}          # backbone key -> the scorer whose backbone runs
        self._keys: dict[int, str] = {}                 # id(model) -> its backbone key
        self._by_id: dict[int, Scorer] = {}             # id(model) -> its scorer

    def model(self, path: str | None) -> Any:
        """The model in file ``path`` (None: the shipped model), loaded the first time it is asked for."""
        with self._lock:
            scorer = self.heads.get(path)
            if scorer is not None:
                return scorer.model
        model = self._load(path)                         # outside the lock: it takes a while
        key = backbone_key(model)
        with self._lock:
            if path in self.heads:                       # loaded meanwhile by another thread
                return self.heads[path].model
            self._keys[id(model)] = key
            self.heads[path] = self._by_id.setdefault(id(model), Scorer(model))
            if key not in self.backbones:
                self.backbones[key] = self.heads[path]
                log.info("backbone %d for %s", len(self.backbones), path or "the shipped model")
        return model

    def warm_up(self, batch: int, threads: int) -> None:
        """Run each backbone once at every batch shape it will meet (:meth:`Scorer.warm_up`), on
        ``threads`` torch threads as the inference thread runs it, in a thread of its own: the first
        call at a shape sets up its kernels (oneDNN makes them per shape), which otherwise cost each
        camera its first frames."""
        def work() -> None:
            torch.set_num_threads(threads)
            for scorer in list(self.backbones.values()):
                scorer.warm_up(batch)

        t = threading.Thread(target=work, name="xvad-warm-up")
        t.start()
        t.join()

    def key(self, model: Any) -> str:
        """The backbone key of a model this shelf loaded."""
        return self._keys[id(model)]

    def features(self, key: str, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """``[B, D]`` features of frames from any cameras whose models have backbone ``key``, in one call."""
        return self.backbones[key].features(tensors)

    def score(self, model: Any, windows: Sequence[Sequence[FrameFeature]]) -> list[WindowScore]:
        """``model``'s head on windows of features (from its backbone group), in one call."""
        return self._by_id[id(model)].score(windows)
