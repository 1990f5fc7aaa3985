"""Scoring videos with a trained model: one video (predict) or a labelled dataset (evaluate)."""
from __future__ import annotations

import csv
import math
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
from .stream.inference import window_scores
from .video import VideoError, load_clip, probe

STRIDE = 2          # frames between windows of a long video, as ``xvad detect`` scores a stream


def window_count(model: CRNN, path: str, fps: float | None = None) -> int:
    """How many frames a video gives at the model's rate (or ``fps``): one window's worth, or more for a
    video longer than one window (a model without a rate always sees one window, spread over the video)."""
    window, fps = int(model.config["frames"]), fps or model.config.get("fps")
    if not fps:
        return window
    duration = probe(path).duration or 0.0
    return max(window, int(math.floor(duration * float(fps) + 1e-6)))


@torch.no_grad()
def score_video(model: CRNN, path: str) -> dict:
    """Class probabilities for one video, sampled as the model expects; for a model with one pooled
    head per stream, also each stream's own (``"streams"``), whose mean is ``"scores"``. A video longer
    than one window is scored as a stream: every window (``STRIDE`` frames apart), the one with the
    highest alert score reported, with its start and end (``"window"``, seconds)."""
    n, window = window_count(model, path), int(model.config["frames"])
    if n < window + STRIDE:
        clip = clip_tensor(path, model.config).to(model.device)
        windows, span = clip[None], None
    else:
        loaded = load_clip(path, model.config, frames=n)
        model.eval()
        feats = model.features(loaded.tensor()[None].to(model.device))[0]
        best = highest_window(model, feats)
        times = loaded.times
        span = (float(times[best]), float(times[best + window - 1]))
        windows = feats[None, best:best + window]
    out = _probabilities(model, windows, from_features=span is not None)
    out = {"video": path, **out}
    if span is not None:
        out["window"] = {"start": round(span[0], 3), "end": round(span[1], 3)}
    return out


@torch.no_grad()
def highest_window(model: CRNN, feats: torch.Tensor) -> int:
    """Where the window with the highest alert score starts among every window of the model's length,
    ``STRIDE`` frames apart, of a video's frame features ``[n, D]`` (n at least one window): how a
    stream scores the video."""
    window = int(model.config["frames"])
    starts = list(range(0, max(1, len(feats) - window + 1), STRIDE))
    score, _ = window_scores(model.eval().classify(torch.stack([feats[s:s + window] for s in starts])))
    return starts[int(score.argmax())]


def model_threshold(model: CRNN) -> float:
    """The alert threshold a checkpoint records (an adapted model carries its camera's), else 0.5."""
    return float((getattr(model, "extra", None) or {}).get("threshold", 0.5))


def _probabilities(model: CRNN, x: torch.Tensor, from_features: bool) -> dict:
    """The result fields for one window: ``x`` is its clip ``[1, T, C, H, W]`` or its features ``[1, T, D]``."""
    model.eval()
    if model.stream_heads:
        feats = x if from_features else model.features(x)
        per_stream = model._stream_log_proba(feats).exp()[0].float().cpu().numpy()
        proba = per_stream.mean(0)   # the model's probabilities: the mean of its streams'
    else:
        logits = model.classify(x) if from_features else model(x)
        proba = logits.softmax(-1)[0].float().cpu().numpy()
    k = int(proba.argmax())
    if len(model.classes) == 2:      # binary: the model's own threshold decides (0.5 unless adapted)
        k = int(proba[1] >= model_threshold(model))
    out = {"predicted": model.classes[k], "score": float(proba[k]),
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
    """Metrics of ``model`` on a labelled dataset; writes ``metrics.json`` and ``predictions.csv``. The
    threshold (binary models) defaults to the model's own (an adapted model carries its camera's)."""
    if threshold is None and len(model.classes) == 2:
        threshold = model_threshold(model)
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
                k = int(p[1] >= threshold) if threshold is not None else int(np.argmax(p))
                w.writerow([s.path, s.group, data.classes[s.label], model.classes[k]]
                           + [f"{x:.4f}" for x in p])
    return metrics
