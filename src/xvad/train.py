"""Training: features once (frozen backbone) or clips end to end, group-wise validation, early stopping.

Read top to bottom: ``train()`` loads the data, prepares inputs (cached features or clips), runs
either one group-wise hold-out or group k-fold cross-validation with ``fit()`` (the epoch count
chosen on an inner group split of each training part), trains the final model on every clip, and
writes ``model.pt``, ``metrics.json``, ``predictions.csv`` and ``curves.png`` into the
run folder. ``state.json`` there lets an interrupted cross-validation resume at its next fold.
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import os
from dataclasses import asdict, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .atomic import atomic_path
from .checkpoint import save_model
from .config import TrainConfig
from .data import Dataset, group_kfold, group_split, load_dataset
from .evaluate import STRIDE, highest_window
from .features import clip_tensor, extract_features, make_views, stream_features
from .jsonio import write_json
from .metrics import classification_metrics, summarize_folds
from .models import CRNN
from .video import VideoError

log = logging.getLogger(__name__)


# -- inputs ------------------------------------------------------------------------------------
def prepare_inputs(model: CRNN, data: Dataset, cfg: TrainConfig, progress: bool):
    """Per (clip, view): cached features ``[T, D]`` (frozen) or preprocessed clips (fine-tuning)."""
    views = make_views(cfg.augment)
    paths = [s.path for s in data.samples]
    if not cfg.finetune:
        return extract_features(model, paths, views, cfg.cache_dir, progress=progress)
    inputs, failures = {}, {}
    for i, path in enumerate(tqdm(paths, desc="decoding", unit="clip", disable=not progress, leave=False)):
        for v, view in enumerate(views):
            try:
                inputs[i, v] = clip_tensor(path, model.config, view).to(torch.bfloat16)
            except VideoError as exc:
                failures[path] = str(exc)
                break
    return inputs, failures


def stack(inputs: dict, items: list[tuple[int, int]]) -> torch.Tensor:
    return torch.stack([inputs[k] for k in items]).float()


# -- one training run --------------------------------------------------------------------------
def reset_head(model: CRNN, seed: int) -> None:
    """Fresh random GRU and head weights (the backbone is kept)."""
    torch.manual_seed(seed)
    for m in [m for part in model.temporal_modules() for m in part.modules()]:
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


def fit(model: CRNN, inputs: dict, train_items: list, val_items: list, labels: np.ndarray,
        cfg: TrainConfig, epochs: int, seed: int, desc: str, progress: bool, start: dict | None = None) -> dict:
    """Train the GRU + head (and the backbone when fine-tuning); keep the state with the best
    validation loss. Without validation items, train for exactly ``epochs``. ``start``: a state dict
    to begin from (fine-tuning: the pretrained backbone, so that no run inherits another's training)."""
    if start is not None:
        model.load_state_dict(start)
    reset_head(model, seed)
    forward = model if cfg.finetune else model.classify
    head_params = [p for part in model.temporal_modules() for p in part.parameters()]
    groups = [{"params": head_params, "lr": cfg.lr}]
    if cfg.finetune:
        groups.append({"params": list(model.backbone.parameters()), "lr": cfg.backbone_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    counts = np.bincount(labels[[i for i, _ in train_items]], minlength=len(model.classes))
    weight = torch.tensor(len(train_items) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(model.device))
    rng = np.random.default_rng(seed)
    y_val = torch.tensor(labels[[i for i, _ in val_items]])
    history, best, best_loss, bad = [], None, float("inf"), 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = rng.permutation(len(train_items))
        total = 0.0
        for first in range(0, len(order), cfg.batch_size):
            batch = [train_items[j] for j in order[first:first + cfg.batch_size]]
            if len(batch) == 1 < len(order):
                continue  # a lone leftover clip: batch statistics need two
            x = stack(inputs, batch).to(model.device)
            y = torch.tensor(labels[[i for i, _ in batch]], device=model.device)
            loss = loss_fn(forward(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        row = {"epoch": epoch + 1, "train_loss": total / len(train_items)}
        if val_items:
            proba = predict_inputs(model, inputs, val_items, cfg)
            row["val_loss"] = float(nn.functional.nll_loss(torch.log(proba.clamp_min(1e-8)), y_val))
            m = classification_metrics(y_val.numpy(), proba.numpy(), model.classes)
            row.update(val_accuracy=m["accuracy"], val_roc_auc=m["roc_auc"])
            if row["val_loss"] < best_loss - 1e-4:
                best_loss, bad = row["val_loss"], 0
                best = {"epoch": epoch + 1, "state": copy.deepcopy(trainable_state(model, cfg)), "proba": proba}
            else:
                bad += 1
        history.append(row)
        bar.set_postfix({k: round(v, 3) for k, v in row.items() if isinstance(v, float)})
        if val_items and bad >= cfg.patience:
            break
    if best is not None:
        model.load_state_dict(best["state"], strict=False)
    return {"history": history, "best_epoch": best["epoch"] if best else epochs,
            "proba": best["proba"] if best else None}


def choose_epochs(model: CRNN, inputs: dict, data: Dataset, train_idx: np.ndarray, views_of,
                  cfg: TrainConfig, seed: int, name: str, progress: bool, start: dict | None = None) -> dict:
    """The epoch count for training on ``train_idx``, chosen inside it: early stopping on one inner
    group split, or (``cfg.inner_folds`` = k > 1) the minimum of the validation loss averaged over k
    inner group folds, each trained for the full ``cfg.epochs`` (steadier on small datasets)."""
    part = data.subset(train_idx)
    if cfg.inner_folds <= 1:
        inner_tr, inner_va = group_split(part, cfg.val_fraction, seed)
        return fit(model, inputs, views_of(train_idx[inner_tr]), [(int(i), 0) for i in train_idx[inner_va]],
                   data.labels, cfg, cfg.epochs, seed, f"{name}: choosing epochs", progress, start)
    full = replace(cfg, patience=cfg.epochs + 1)
    runs = []
    for k, (inner_tr, inner_va) in enumerate(group_kfold(part, cfg.inner_folds, seed)):
        runs.append(fit(model, inputs, views_of(train_idx[inner_tr]), [(int(i), 0) for i in train_idx[inner_va]],
                        data.labels, full, cfg.epochs, seed, f"{name}: choosing epochs {k + 1}/{cfg.inner_folds}",
                        progress, start)["history"])
    history = [{key: float(np.mean([r[e][key] if r[e][key] is not None else np.nan for r in runs]))
                for key in ("train_loss", "val_loss", "val_accuracy", "val_roc_auc")} | {"epoch": e + 1}
               for e in range(cfg.epochs)]
    best = int(np.nanargmin([h["val_loss"] for h in history])) + 1
    return {"history": history, "best_epoch": best}


@torch.no_grad()
def stream_proba(model: CRNN, videos: list[torch.Tensor]) -> torch.Tensor:
    """``[N, classes]`` probabilities of N videos scored as a stream scores them: of each one's highest
    window (:func:`~xvad.evaluate.highest_window`) among its frame features ``[n, D]``."""
    window = int(model.config["frames"])
    model.eval()
    rows = []
    for feats in videos:
        start = highest_window(model, feats)
        rows.append(model.classify(feats[None, start:start + window].to(model.device)).softmax(-1)[0].float().cpu())
    return torch.stack(rows) if rows else torch.zeros(0, len(model.classes))


def trainable_state(model: CRNN, cfg: TrainConfig) -> dict:
    """The part of the state dict that training changes (all of it when fine-tuning)."""
    sd = model.state_dict()
    return sd if cfg.finetune else {k: v for k, v in sd.items() if not k.startswith("backbone.")}


@torch.no_grad()
def predict_inputs(model: CRNN, inputs: dict, items: list, cfg: TrainConfig) -> torch.Tensor:
    model.eval()
    forward = model if cfg.finetune else model.classify
    out = [forward(stack(inputs, items[s:s + cfg.batch_size]).to(model.device)).softmax(-1).float().cpu()
           for s in range(0, len(items), cfg.batch_size)]
    return torch.cat(out)


# -- the whole run -----------------------------------------------------------------------------
def train(source: str, out_dir: str, cfg: TrainConfig | None = None, progress: bool = True) -> dict:
    """Train on the dataset at ``source`` and write the run into ``out_dir``; returns metrics."""
    cfg = cfg or TrainConfig()
    cfg.check()              # settings that cannot work fail before any data is read
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = load_dataset(source, cfg.classes)
    model = CRNN.from_config(cfg, len(data.classes), data.classes, freeze_backbone=not cfg.finetune)
    inputs, failures = prepare_inputs(model, data, cfg, progress)
    start = copy.deepcopy(model.state_dict()) if cfg.finetune else None   # every fold fine-tunes from here
    ok = [i for i in range(len(data)) if (i, 0) in inputs]
    good = data.subset(ok)
    labels = good.labels
    remap = {i: j for j, i in enumerate(ok)}
    inputs = {(remap[i], v): x for (i, v), x in inputs.items() if i in remap}
    n_views = max(cfg.augment, 1)

    def views_of(idx) -> list[tuple[int, int]]:
        return [(int(i), v) for i in idx for v in range(n_views) if (int(i), v) in inputs]

    streams: dict[int, torch.Tensor] = {}
    unstreamed: dict[str, str] = {}
    if cfg.stream_fps and cfg.finetune:   # each fold's backbone differs: there are no shared features to score
        log.info("--finetune: the held-out clips are not scored as a stream (only with a frozen backbone)")
    elif cfg.stream_fps:     # every clip at the stream's rate, for scoring the held-out ones as a stream would
        streams, unstreamed = stream_features(model, [s.path for s in good.samples], cfg.stream_fps, cfg.cache_dir,
                                              progress)

    resume = RunState(out_dir, cfg)
    splits = (group_kfold(good, cfg.folds, cfg.seed) if cfg.folds > 1
              else [group_split(good, cfg.val_fraction, cfg.seed)])
    fold_results = resume.folds
    for f, (tr, va) in enumerate(splits):
        if f < len(fold_results):
            continue  # finished before an interruption
        # The epoch count is chosen on an inner group split of the training part, so the clips a
        # fold is scored on never shape the model scored on them (no early stopping on them).
        name = f"fold {f + 1}/{len(splits)}"
        sel = choose_epochs(model, inputs, good, tr, views_of, cfg, cfg.seed + f, name, progress, start)
        fit(model, inputs, views_of(tr), [], labels, cfg, sel["best_epoch"], cfg.seed + f, f"{name}: training",
            progress, start)
        proba = predict_inputs(model, inputs, [(int(i), 0) for i in va], cfg)
        m = classification_metrics(labels[va], proba.numpy(), good.classes)
        fold_results.append({"fold": f + 1, "val_index": va.tolist(), "proba": proba.tolist(),
                             "best_epoch": sel["best_epoch"], "metrics": m, "history": sel["history"]})
        if streams:
            scored = [int(i) for i in va if int(i) in streams]
            as_stream = stream_proba(model, [streams[i] for i in scored])
            fold_results[-1]["stream"] = {"index": scored, "proba": as_stream.tolist(), "metrics":
                                          classification_metrics(labels[scored], as_stream.numpy(), good.classes)}
        resume.save(fold_results)

    # The model that is saved trains on every usable clip for the median chosen epoch count.
    epochs = int(np.median([r["best_epoch"] for r in fold_results]))
    fit(model, inputs, views_of(np.arange(len(good))), [], labels, cfg, epochs, cfg.seed, "final model", progress,
        start)

    metrics = run_metrics(good, fold_results, cfg, failures, len(data), epochs)
    if "as_stream" in metrics:
        metrics["as_stream"]["n_skipped"] = len(unstreamed)      # read as clips, not at the stream's rate
    if cfg.stream_fps and not cfg.fps:
        model.config["fps"] = float(cfg.stream_fps)     # a model that spreads its frames samples streams at this rate
    save_model(model, os.path.join(out_dir, "model.pt"),
               extra={"metrics": {k: metrics["summary"].get(k) for k in ("accuracy", "roc_auc", "f1")},
                      "train_config": json.loads(json.dumps(asdict(cfg))), "threshold": 0.5})
    if not cfg.finetune and model.gru is None and len(good.classes) == 2:     # what `xvad adapt` needs
        write_base(os.path.join(out_dir, "model.pt"), {i: inputs[i, 0] for i in range(len(good))}, good, epochs)
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    write_predictions(os.path.join(out_dir, "predictions.csv"), good, fold_results)
    plot_curves(os.path.join(out_dir, "curves.png"), fold_results)
    resume.clear()
    return metrics


def write_base(checkpoint: str, feats: dict, data: Dataset, epochs: int) -> None:
    """The base features of the saved model beside it (``model.base.npz``), for ``xvad adapt``; the
    heads' epoch count chosen on them by inner group CV (``epochs`` with fewer than two groups)."""
    from .adapt.base import base_from_features, base_path, save_base
    from .adapt.core import choose_base_epochs
    from .checkpoint import load_model

    saved = load_model(checkpoint)
    base = base_from_features(saved, feats, data, epochs)
    groups = len({s.group for s in data.samples})
    if groups >= 2:
        base.epochs = choose_base_epochs(saved, base, folds=min(3, groups))
    save_base(base, base_path(checkpoint))


def run_metrics(data: Dataset, folds: list[dict], cfg: TrainConfig, failures: dict, n_total: int,
                final_epochs: int) -> dict:
    """metrics.json: per-fold metrics, their mean and spread, pooled out-of-fold metrics, skips."""
    idx = np.concatenate([r["val_index"] for r in folds]).astype(int)
    proba = np.concatenate([np.array(r["proba"]) for r in folds])
    pooled = classification_metrics(data.labels[idx], proba, data.classes)
    per_fold = [r["metrics"] for r in folds]
    summary = {k: pooled[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc")}
    as_stream = None
    if folds and all("stream" in r for r in folds):
        sidx = np.concatenate([r["stream"]["index"] for r in folds]).astype(int)
        sproba = np.concatenate([np.array(r["stream"]["proba"]).reshape(len(r["stream"]["index"]), -1)
                                 for r in folds])
        spooled = classification_metrics(data.labels[sidx], sproba, data.classes)
        sfolds = [r["stream"]["metrics"] for r in folds]
        as_stream = {"fps": cfg.stream_fps, "window": cfg.frames, "stride": STRIDE,
                     "summary": {k: spooled[k] for k in summary}, "pooled_validation": spooled, "folds": sfolds,
                     "cross_validation": summarize_folds(sfolds) if len(folds) > 1 else None}
    return {
        "split": f"group {cfg.folds}-fold" if cfg.folds > 1 else f"group hold-out ({cfg.val_fraction:.0%})",
        "classes": data.classes, "n_clips": n_total, "n_used": len(data),
        "n_groups": len({s.group for s in data.samples}),
        "summary": summary, "pooled_validation": pooled,
        "folds": per_fold, "cross_validation": summarize_folds(per_fold) if len(folds) > 1 else None,
        "best_epochs": [r["best_epoch"] for r in folds], "final_epochs": final_epochs,
        "n_skipped": len(failures), "skipped": [{"path": p, "error": e} for p, e in sorted(failures.items())],
        "config": asdict(cfg),
        **({"as_stream": as_stream} if as_stream is not None else {}),
    }


def write_predictions(path: str, data: Dataset, folds: list[dict]) -> None:
    """Out-of-fold (validation) prediction for every clip: one row each; with ``--stream-fps``, also the
    clip's probabilities scored as a stream (``stream_p_<class>``)."""
    streamed = bool(folds) and all("stream" in r for r in folds)
    with atomic_path(path) as part, open(part, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "group", "label", "fold", "predicted"] + [f"p_{c}" for c in data.classes]
                   + ([f"stream_p_{c}" for c in data.classes] if streamed else []))
        for r in folds:
            as_stream = dict(zip(r["stream"]["index"], r["stream"]["proba"])) if streamed else {}
            for i, p in zip(r["val_index"], r["proba"]):
                s = data.samples[i]
                extra = [f"{x:.4f}" for x in as_stream[i]] if i in as_stream else [""] * len(p) if streamed else []
                w.writerow([s.path, s.group, data.classes[s.label], r["fold"], data.classes[int(np.argmax(p))]]
                           + [f"{x:.4f}" for x in p] + extra)


def plot_curves(path: str, folds: list[dict]) -> None:
    """Per fold, the epoch-choosing run: training and inner-validation loss, accuracy and ROC-AUC."""
    from matplotlib.figure import Figure  # drawn on its own canvas: no backend, no global state

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for r in folds:
        h = r["history"]
        ep = [row["epoch"] for row in h]
        label = f"fold {r['fold']}" if len(folds) > 1 else ""
        line, = axes[0].plot(ep, [row["train_loss"] for row in h], "--", alpha=0.7)
        axes[0].plot(ep, [row["val_loss"] for row in h], color=line.get_color(), label=label or "validation")
        axes[1].plot(ep, [row["val_accuracy"] for row in h], color=line.get_color(), label=label or "accuracy")
        axes[1].plot(ep, [row["val_roc_auc"] or np.nan for row in h], ":", color=line.get_color())
        axes[0].axvline(r["best_epoch"], color=line.get_color(), lw=0.5)
    axes[0].set(title="loss (dashed: training, solid: inner validation)", xlabel="epoch")
    axes[1].set(title="inner-validation accuracy (solid), ROC-AUC (dotted)", xlabel="epoch", ylim=(0, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        if len(folds) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as part:
        fig.savefig(part, dpi=110, format="png")


class RunState:
    """Finished folds saved after each fold, so a killed run resumes where it stopped."""

    def __init__(self, out_dir: str, cfg: TrainConfig) -> None:
        self.path = os.path.join(out_dir, "state.json")
        self.key = json.dumps(asdict(cfg), sort_keys=True, default=str)
        self.folds: list[dict] = []
        if os.path.isfile(self.path):
            try:
                with open(self.path) as f:
                    saved = json.load(f)
                if saved.get("config") == self.key:
                    self.folds = saved["folds"]
            except (OSError, ValueError, KeyError):
                pass  # unreadable state: start over

    def save(self, folds: list[dict]) -> None:
        write_json(self.path, {"config": self.key, "folds": folds})

    def clear(self) -> None:
        if os.path.isfile(self.path):
            os.remove(self.path)
