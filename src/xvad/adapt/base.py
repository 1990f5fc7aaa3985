"""The base training data adaptation needs, without the clips: each base clip's pooled features under
the model, its label and its group, in one small ``.npz`` file.

The shipped model's file is built by ``scripts/ship_model.py`` beside the model and installed with the
package, so that ``xvad adapt`` works on a machine that has none of the training footage.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..atomic import atomic_path
from ..data import Dataset, load_dataset
from ..errors import CheckpointError, VideoError
from ..features import extract_features
from ..models import CRNN
from ..video import View
from .pooled import check_pooled, pool_windows

log = logging.getLogger(__name__)
FORMAT = "xvad-base-features/1"


@dataclass
class BaseFeatures:
    """Pooled features ``[N, S, 2D]`` (one window per base clip), labels, groups and clip names, the
    checkpoint they were computed with, and the epoch count its heads train for."""

    pooled: torch.Tensor
    labels: np.ndarray
    groups: np.ndarray
    clips: list[str]
    classes: list[str]
    checkpoint_id: str
    epochs: int

    path: str = ""              # the file they were read from, if any

    def without(self, mask: np.ndarray) -> BaseFeatures:
        """The base set minus the clips in ``mask``."""
        keep = ~np.asarray(mask, bool)
        return BaseFeatures(self.pooled[keep], self.labels[keep], self.groups[keep],
                            [c for c, k in zip(self.clips, keep) if k], self.classes, self.checkpoint_id, self.epochs,
                            self.path)


def save_base(base: BaseFeatures, path: str) -> str:
    """Write ``base`` as a compressed ``.npz`` (features in float16), atomically."""
    meta = {"format": FORMAT, "classes": base.classes, "checkpoint_id": base.checkpoint_id, "epochs": base.epochs,
            "clips": base.clips}
    with atomic_path(path) as part:
        with open(part, "wb") as f:
            np.savez_compressed(f, pooled=base.pooled.numpy().astype(np.float16), labels=base.labels.astype(np.int8),
                                groups=np.asarray(base.groups, dtype=str), meta=np.array(json.dumps(meta)))
    return path


def load_base(path: str) -> BaseFeatures:
    """Read a base features file; a missing or foreign file is a one-line :class:`CheckpointError`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no base features file")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError("not a base features file")
            return BaseFeatures(torch.from_numpy(z["pooled"].astype(np.float32)), z["labels"].astype(int),
                                z["groups"].astype(str), list(meta["clips"]), list(meta["classes"]),
                                str(meta["checkpoint_id"]), int(meta["epochs"]), os.path.abspath(path))
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable base features file ({exc})") from None


def base_path(checkpoint_path: str) -> str:
    """Where a checkpoint's base features live: beside it, ``NAME.base.npz``."""
    root, _ = os.path.splitext(checkpoint_path)
    return root + ".base.npz"


def base_for(model: CRNN, path: str | None = None) -> BaseFeatures:
    """The base features of ``model``: the file ``path``, else the one beside its checkpoint, else (for an
    adapted model) the file it was adapted with, else the shipped model's; checked to belong to it."""
    from ..pretrained import default_checkpoint

    own = getattr(model, "checkpoint_id", None)
    ids = {own, (getattr(model, "extra", None) or {}).get("base_checkpoint_id")} - {None, ""}
    extra = getattr(model, "extra", None) or {}
    candidates = [path] if path else [base_path(getattr(model, "checkpoint_path", "") or "model.pt"),
                                      *([extra["base_features"]] if extra.get("base_features") else []),
                                      base_path(default_checkpoint())]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        raise CheckpointError(f"{candidates[0]}: no base features for checkpoint {own}; build them with "
                              "`xvad adapt --build-base DATA --checkpoint CKPT` on its training data")
    for c in found:
        base = load_base(c)
        if base.checkpoint_id in ids:
            if base.classes != model.classes:
                raise CheckpointError(f"{c}: classes {base.classes} do not match the model's {model.classes}")
            return base
    raise CheckpointError(f"{found[0]}: these base features belong to another checkpoint, not to {own}; build "
                          "them with `xvad adapt --build-base DATA --checkpoint CKPT` on its training data")


def build_base(model: CRNN, source: str, epochs: int, cache_dir: str | None = None,
               progress: bool = True) -> BaseFeatures:
    """Base features of ``model`` for the labelled dataset at ``source``: each clip as the model sees it
    in training (its plain view, through the training feature cache), pooled; unreadable clips are
    left out with a warning."""
    check_pooled(model)
    data = load_dataset(source, model.classes)
    feats, failures = extract_features(model, [s.path for s in data.samples], [View()], cache_dir, progress)
    for path, error in failures.items():
        log.warning("%s: left out of the base features (%s)", path, error)
    kept = [i for i in range(len(data)) if (i, 0) in feats]
    if not kept:
        raise VideoError(f"{source}: none of the {len(data)} videos could be read")
    return base_from_features(model, {i: feats[i, 0] for i in kept}, data, epochs)


def base_from_features(model: CRNN, feats: dict[int, torch.Tensor], data: Dataset, epochs: int) -> BaseFeatures:
    """Base features from per-frame features ``[T, D]`` of the plain view, by clip index in ``data``."""
    kept = sorted(feats)
    window = int(model.config["frames"])
    pooled = torch.cat([pool_windows(feats[i], model.streams, window, window)[:1] for i in kept])
    return BaseFeatures(pooled, data.labels[kept], np.array([data.samples[i].group for i in kept]),
                        [os.path.relpath(data.samples[i].path, data.root) for i in kept], model.classes,
                        getattr(model, "checkpoint_id", ""), epochs)
