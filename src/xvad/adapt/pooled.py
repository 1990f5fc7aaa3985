"""What the heads of a pooled model see: each stream's mean and maximum of the frame features over a
window, ``[streams, 2 * D]`` per window.

Adaptation retrains only the heads, so a clip enters it as these few thousand numbers: the backbone
runs once per frame, and every later fit (one per fold, per draw, per candidate) costs milliseconds.
A clip longer than one window is cut into windows every ``stride`` frames, as a stream is scored.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..evaluate import STRIDE, window_count
from ..models import CRNN
from ..video import load_clip


def check_pooled(model: CRNN) -> None:
    """Adaptation needs a model whose heads sit on pooled features (``temporal="pool"``)."""
    if model.gru is not None:
        raise CheckpointError(f"{getattr(model, 'checkpoint_path', 'this model')}: adaptation retrains the heads "
                              "of a pooled model (temporal \"pool\"); this one has a GRU")


def pool_windows(feats: torch.Tensor, streams: int, window: int, stride: int) -> torch.Tensor:
    """``[T, S * D]`` frame features -> ``[W, S, 2 * D]``: per window of ``window`` frames (every
    ``stride`` frames; one window when T <= window), each stream's mean then maximum over time."""
    t = feats.shape[0]
    starts = [0] if t <= window else list(range(0, t - window + 1, stride))
    out = []
    for s in starts:
        w = feats[s:s + window].float()
        parts = w.chunk(streams, dim=1)
        out.append(torch.stack([torch.cat([p.mean(0), p.amax(0)]) for p in parts]))
    return torch.stack(out)


def heads(model: CRNN) -> list[nn.Module]:
    """The model's heads in stream order (one for a single-stream model)."""
    check_pooled(model)
    return list(model.head) if isinstance(model.head, nn.ModuleList) else [model.head]


def head_log_proba(model: CRNN, pooled: torch.Tensor) -> torch.Tensor:
    """``[N, S, 2D]`` pooled features -> ``[N, classes]``: the log of the streams' mean probability,
    what :meth:`CRNN.classify` gives for the same windows."""
    logp = torch.stack([h(pooled[:, i].to(model.head_dtype)).log_softmax(-1) for i, h in enumerate(heads(model))], 1)
    return torch.logsumexp(logp, 1) - math.log(logp.shape[1])


@torch.no_grad()
def alert_scores(model: CRNN, pooled: torch.Tensor) -> np.ndarray:
    """p(class 1) for each pooled window, in eval mode."""
    was = model.training
    model.eval()
    try:
        return head_log_proba(model, pooled).exp()[:, 1].float().numpy()
    finally:
        model.train(was)


@torch.no_grad()
def clip_windows(model: CRNN, path: str, stride: int = STRIDE) -> torch.Tensor:
    """``[W, S, 2D]`` pooled features of every window of the clip at ``path``, sampled at the model's
    rate (a clip of one window or less gives the one window a model scores), as ``evaluate`` scores it."""
    cfg = model.config
    window = int(cfg["frames"])
    clip = load_clip(path, cfg, frames=window_count(model, path))
    was = model.training
    model.eval()
    try:
        feats = model.frame_features(clip.tensor().to(model.device)).cpu()
    finally:
        model.train(was)
    return pool_windows(feats, model.streams, window, stride)
