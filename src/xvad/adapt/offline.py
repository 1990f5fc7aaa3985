"""``xvad adapt SITE_DATA --out RUN``: adapt a checkpoint to a site from a folder (or CSV) of its
labelled clips, and write a checkpoint that ``xvad evaluate``, ``detect`` and ``serve`` take as it is.
"""
from __future__ import annotations

import logging
import os

import torch
from tqdm.auto import tqdm

from ..checkpoint import save_model
from ..data import load_dataset
from ..errors import DatasetError, VideoError
from ..jsonio import write_json
from ..models import CRNN
from .base import BaseFeatures
from .core import SHARE, Adaptation, adapt
from .pooled import check_pooled, clip_windows

log = logging.getLogger(__name__)


def site_clips(model: CRNN, paths: list[str], progress: bool = True) -> tuple[list[torch.Tensor | None], dict]:
    """Each clip's pooled windows (None for a clip that cannot be read) and the failures by path."""
    out: list[torch.Tensor | None] = []
    failures: dict[str, str] = {}
    for path in tqdm(paths, desc="site clips", unit="clip", disable=not progress, leave=False):
        try:
            out.append(clip_windows(model, path))
        except VideoError as exc:
            failures[path] = str(exc)
            out.append(None)
    return out, failures


def save_adapted(a: Adaptation, base_model: CRNN, path: str, source: str) -> str:
    """Write the adapted model with its threshold and what adaptation measured (``extra``)."""
    extra = {k: v for k, v in (getattr(base_model, "extra", None) or {}).items()
             if k in ("dataset", "card")}
    extra.update(threshold=a.threshold, adapt=a.report, adapted_from=getattr(base_model, "checkpoint_id", None),
                 base_checkpoint_id=a.report["base_checkpoint_id"], base_features=a.report["base_features"],
                 site=source)
    frozen_stock = a.model.config.get("weights") == "imagenet" and a.model.config.get("freeze_backbone")
    return save_model(a.model, path, extra=extra, include_backbone=not frozen_stock)


def adapt_folder(model: CRNN, base: BaseFeatures, source: str, out_dir: str, *, share: float = SHARE,
                 seed: int = 0, progress: bool = True) -> dict:
    """Adapt ``model`` to the labelled clips at ``source``; writes ``OUT/model.pt`` and ``OUT/adapt.json``."""
    check_pooled(model)
    if len(model.classes) != 2:
        raise DatasetError(f"{source}: adaptation is for binary models (alert or not); this one has "
                           f"{len(model.classes)} classes")
    data = load_dataset(source, model.classes)
    clips, failures = site_clips(model, [s.path for s in data.samples], progress)
    kept = [i for i, c in enumerate(clips) if c is not None]
    readable = [c for c in clips if c is not None]
    if not kept:
        raise VideoError(f"{source}: none of the {len(data)} videos could be read")
    labels = data.labels[kept]
    if len(set(labels.tolist())) < 2:
        log.warning("%s: only one class among the readable clips; the threshold stays the model's", source)
    a = adapt(model, base, readable, labels, share=share, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    path = save_adapted(a, model, os.path.join(out_dir, "model.pt"), os.path.abspath(source))
    report = {**a.report, "checkpoint": path, "site": os.path.abspath(source),
              "clips": [os.path.relpath(data.samples[i].path, data.root) for i in kept],
              "labels": labels.tolist(), "n_skipped": len(failures),
              "skipped": [{"path": p, "error": e} for p, e in sorted(failures.items())]}
    write_json(os.path.join(out_dir, "adapt.json"), report)
    return report


def describe(report: dict) -> list[str]:
    """The lines ``xvad adapt`` prints: what it learnt from and what it measured."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    n0, n1 = report["per_class"]
    lines = [f"adapted on {report['n_clips']} clips ({n1} alert, {n0} normal) and {report['base_clips']} base clips; "
             f"threshold {report['threshold']:.3f} (was {report['previous_threshold']:.3f})"]
    cur = report["current_on_site"]
    lines.append(f"current model on these clips: accuracy {fmt(cur['accuracy'])}, recall {fmt(cur['recall'])}, "
                 f"ROC-AUC {fmt(cur['roc_auc'])}")
    oof = report.get("adapted_out_of_fold")
    if oof:
        lines.append(f"adapted, out of fold: accuracy {fmt(oof['accuracy'])}, recall {fmt(oof['recall'])}, "
                     f"ROC-AUC {fmt(oof['roc_auc'])} (optimistic: the threshold was chosen on these scores)")
    else:
        lines.append("too few clips of each class (2 needed) for out-of-fold figures")
    for s in report.get("skipped", []):
        lines.append(f"skipped: {s['error']}")
    return lines
