"""Scoring videos with a trained model: one video (predict) or a labelled dataset (evaluate)."""
from __future__ import annotations

import csv
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_path
from .data import load_dataset
from .features import clip_tensor
from .jsonio import write_json
from .metrics import classification_metrics
from .models import CRNN
from .video import VideoError


@torch.no_grad()
def score_video(model: CRNN, path: str) -> dict:
    """Class probabilities for one video, sampled as the model expects; for a model with one pooled
    head per stream, also each stream's own (``"streams"``), whose mean is ``"scores"``."""
    clip = clip_tensor(path, model.config).to(model.device)
    if model.stream_heads:
        per_stream = model.stream_proba(clip).float().cpu().numpy()
        proba = per_stream.mean(0)   # the model's probabilities: the mean of its streams'
    else:
        proba = model.predict_proba(clip).float().cpu().numpy()
    k = int(proba.argmax())
    out = {"video": path, "predicted": model.classes[k], "score": float(proba[k]),
           "scores": {c: round(float(p), 6) for c, p in zip(model.classes, proba)}}
    if model.stream_heads:
        out["streams"] = {name: {c: round(float(p), 6) for c, p in zip(model.classes, row)}
                          for name, row in zip(model.stream_heads, per_stream)}
    return out


def predict(model: CRNN, paths: list[str], progress: bool = False):
    """Yield one result dict per video; unreadable ones yield ``{"video", "error"}``."""
    for path in tqdm(paths, desc="predict", unit="video", disable=not progress, leave=False):
        try:
            yield score_video(model, path)
        except VideoError as exc:
            yield {"video": path, "error": str(exc)}


def evaluate(model: CRNN, source: str, out_dir: str | None = None, threshold: float | None = None,
             progress: bool = True) -> dict:
    """Metrics of ``model`` on a labelled dataset; writes ``metrics.json`` and ``predictions.csv``."""
    data = load_dataset(source, classes=model.classes)
    rows, failures = [], {}
    for s, r in zip(data.samples, predict(model, [s.path for s in data.samples], progress)):
        if "error" in r:
            failures[s.path] = r["error"]
        else:
            rows.append((s, [r["scores"][c] for c in model.classes]))
    if not rows:
        raise VideoError(f"{source}: none of the {len(data)} videos could be read")
    proba = np.array([p for _, p in rows])
    metrics = classification_metrics(np.array([s.label for s, _ in rows]), proba, model.classes, threshold)
    metrics.update(n_skipped=len(failures), skipped=[{"path": p, "error": e} for p, e in sorted(failures.items())],
                   checkpoint=getattr(model, "checkpoint_id", None), dataset=os.path.abspath(source))
    if out_dir:
        write_json(os.path.join(out_dir, "metrics.json"), metrics)
        with atomic_path(os.path.join(out_dir, "predictions.csv")) as part, open(part, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "group", "label", "predicted"] + [f"p_{c}" for c in model.classes])
            for (s, p) in rows:
                w.writerow([s.path, s.group, data.classes[s.label], model.classes[int(np.argmax(p))]]
                           + [f"{x:.4f}" for x in p])
    return metrics
