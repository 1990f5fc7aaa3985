"""The CNN + RNN clip classifier: a CNN on every frame, a GRU over the frames, an MLP head.

Options go beyond that: ``input="motion"`` shows the CNN the difference of consecutive frames
instead of the frames (see :func:`xvad.video.motion_images`), ``input="flow"`` their optical flow, and
``input="motion+flow"`` both, as two streams through the same CNN. ``temporal="pool"`` replaces the
GRU by the mean and maximum of the frame features over time, standardised, then one linear layer
(one per stream; the streams' probabilities are averaged).

Keras' TimeDistributed is done as one reshape: ``[B, T, 3, H, W]`` -> ``[B*T, 3, H, W]``, one
backbone call, and back to ``[B, T, D]`` (with k streams, ``[B, T, 3k, H, W]`` -> ``[B*T*k, 3, H, W]``
-> ``[B, T, k*D]``). One call is faster than a loop over frames and lets
explanation hooks see every frame of the clip at once.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from typing import Any, cast

import torch
from torch import nn

from ..config import ModelConfig
from ..video import input_streams
from .backbones import build_backbone
from .engine import OpenVINOBackbone, resolve_engine
from .fold import FoldedBackbone
from .precision import autocast, resolve_precision

POOLINGS = ("avg", "max", "flatten")
TEMPORALS = ("gru", "pool")
# A CRNN built with no settings: the paper's layout, random backbone weights (nothing to download).
DEFAULTS = ModelConfig.preset("paper", weights=None)
# Inference runs the backbone on at most this many input pixels per call (8 images of 192 x 192). A
# bigger call's activations are too big for the C allocator to reuse (it maps fresh memory for each),
# and first touching that memory cost as much as the convolutions: 16 frames of the shipped model in
# one call took 1.6 times the CPU of 4 calls of 4 frames (bench/bench_backbone_memory.py).
CHUNK_PIXELS = 8 * 192 * 192


def images_per_call(height: int, width: int) -> int:
    """How many ``height`` x ``width`` images one backbone call takes at inference (:data:`CHUNK_PIXELS`)."""
    return max(1, CHUNK_PIXELS // (height * width))


def default_classes(num_classes: int) -> list[str]:
    return ["normal", "alert"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]


class Standardise(nn.BatchNorm1d):
    """Batch norm without learned scale or shift, its output clamped to ``[-bound, bound]`` if a bound is
    given: a feature far outside its training range (unfamiliar footage) then moves the score by a
    bounded amount."""

    def __init__(self, features: int, eps: float = 1e-5, bound: float | None = None) -> None:
        super().__init__(features, eps=eps, affine=False)
        self.bound = bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y if self.bound is None else y.clamp(-self.bound, self.bound)


class CRNN(nn.Module):
    """VGG19 (or another backbone) per frame -> GRU -> MLP; ``forward`` gives ``[B, classes]`` logits.

    ``frames``, ``size``, ``fps``, ``crop`` and ``input`` describe the clips the model expects; they
    travel with the model (and its checkpoint) so that readers prepare input the same way.
    ``fps=None`` samples ``frames`` uniformly over a clip; a number samples at that rate.
    ``temporal="pool"`` swaps the GRU and MLP for pooling over time and a linear layer, after a batch
    norm that divides each feature by at least ``sqrt(norm_eps)`` (a floor for features nearly
    constant in training) and, with ``norm_clamp``, bounds the result (see :class:`Standardise`).
    """

    # Set by xvad.checkpoint.load_model only (a model built in memory has none of them).
    checkpoint_id: str
    checkpoint_path: str
    extra: dict[str, Any]

    def __init__(self, backbone: str | None = None, num_classes: int = 2, classes: Sequence[str] | None = None,
                 freeze_backbone: bool = True, **settings: Any) -> None:
        """``settings``: any :class:`~xvad.config.ModelConfig` field (``weights``, ``frames``, ``input``,
        ``temporal``...); those not given are the paper's layout with random weights (``DEFAULTS``)."""
        super().__init__()
        if backbone is not None:
            settings["backbone"] = backbone
        cfg = replace(DEFAULTS, **settings)
        if not cfg.norm_eps > 0:
            raise ValueError(f"norm_eps must be positive, not {cfg.norm_eps!r}")
        if cfg.norm_clamp is not None and not cfg.norm_clamp > 0:
            raise ValueError(f"norm_clamp must be positive or None, not {cfg.norm_clamp!r}")
        cfg.check()
        self.streams = len(input_streams(cfg.input))
        classes = list(classes) if classes is not None else default_classes(num_classes)
        if len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names given for num_classes={num_classes}")
        if num_classes < 2:
            raise ValueError("num_classes must be at least 2 (binary models use 2: normal, alert)")
        self.backbone = build_backbone(cfg.backbone, cfg.weights)
        info = self.backbone.info
        # The settings, then what the data and the backbone add: what a checkpoint records.
        self.config: dict[str, Any] = dict(
            asdict(cfg), weights=weights_id(cfg.weights), num_classes=num_classes, classes=classes,
            freeze_backbone=freeze_backbone, mean=list(info.mean), std=list(info.std))
        self.feature_dim = self._pooled_dim(cfg.size) * self.streams   # the streams' features side by side
        self.gru: nn.GRU | None = None
        self.head: nn.Module
        hidden, dropout = cfg.hidden, cfg.dropout
        if cfg.temporal == "gru":
            self.gru = nn.GRU(self.feature_dim, hidden, num_layers=cfg.layers, batch_first=True,
                              bidirectional=cfg.bidirectional, dropout=dropout if cfg.layers > 1 else 0.0)
            out = hidden * (2 if cfg.bidirectional else 1)
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(out, hidden // 2), nn.ReLU(),
                                      nn.Dropout(dropout), nn.Linear(hidden // 2, num_classes))
        else:  # mean and max over time; the batch norm standardises them (as for a logistic regression)
            d = 2 * self.feature_dim // self.streams
            heads = [nn.Sequential(Standardise(d, cfg.norm_eps, cfg.norm_clamp), nn.Dropout(dropout),
                                   nn.Linear(d, num_classes)) for _ in range(self.streams)]
            self.head = heads[0] if self.streams == 1 else nn.ModuleList(heads)
        self._folded = FoldedBackbone()   # for inference: batch norms folded (see .fold)
        self._openvino = OpenVINOBackbone()
        self.engine = "torch"             # what runs the frozen backbone at inference (see set_engine)
        self.freeze_backbone(freeze_backbone)

    @classmethod
    def from_config(cls, config: ModelConfig, num_classes: int = 2, classes: Sequence[str] | None = None,
                    freeze_backbone: bool = True) -> CRNN:
        """The model ``config`` (a ModelConfig or TrainConfig) describes, for ``num_classes`` classes."""
        return cls(num_classes=num_classes, classes=classes, freeze_backbone=freeze_backbone, **config.kwargs())

    # -- configuration -------------------------------------------------------------------------
    @property
    def settings(self) -> ModelConfig:
        """The model's settings as they stand (precision and the rest can be changed after building)."""
        return ModelConfig(**{f.name: self.config[f.name] for f in fields(ModelConfig)})

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def precision(self) -> str:
        """The precision the backbone runs at on this model's device ("fp32" or "bf16")."""
        return resolve_precision(self.config["precision"], self.device)

    @property
    def stream_heads(self) -> list[str]:
        """The streams that have a head of their own (several streams pooled over time), by name, in
        :meth:`stream_proba`'s order; empty otherwise (one stream, or a GRU that mixes them)."""
        return input_streams(self.config["input"]) if self.streams > 1 and self.gru is None else []

    @property
    def head_dtype(self) -> torch.dtype:
        """The dtype of the GRU and head weights (float32 unless the model was converted)."""
        return next(self.head.parameters()).dtype

    def temporal_modules(self) -> list[nn.Module]:
        """What turns frame features into logits: the GRU (if any) and the head."""
        return [m for m in (self.gru, self.head) if m is not None]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_precision(self, precision: str) -> CRNN:
        resolve_precision(precision, "cpu")  # validates
        self.config["precision"] = precision
        return self

    def set_engine(self, engine: str) -> CRNN:
        """Run the frozen backbone at inference with "torch", "openvino" (on the CPU, fp32) or "auto"
        (OpenVINO when installed and the model is on the CPU; :mod:`xvad.models.engine`). With OpenVINO, a
        model whose precision is "auto" scores in fp32: OpenVINO's fp32 is the faster there, and exact."""
        self.engine = resolve_engine(engine, self.device)
        if self.engine == "openvino" and self.config["precision"] == "auto":
            self.config["precision"] = "fp32"
        return self

    def freeze_backbone(self, frozen: bool = True) -> CRNN:
        """Freeze (no gradients, BatchNorm statistics fixed) or unfreeze the backbone."""
        self.config["freeze_backbone"] = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)
        return self

    def train(self, mode: bool = True) -> CRNN:
        super().train(mode)
        if self.config["freeze_backbone"]:
            self.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics
        return self

    # -- computation ---------------------------------------------------------------------------
    def _pooled_dim(self, size: int) -> int:
        channels = self.backbone.info.channels
        if self.config["pooling"] != "flatten":
            return channels
        with torch.no_grad():
            h, w = self.backbone(torch.zeros(1, 3, size, size)).shape[-2:]
        return channels * h * w

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """``[N, C, h, w]`` feature maps -> ``[N, D]`` frame features."""
        mode = self.config["pooling"]
        if mode == "avg":
            return fmap.mean((2, 3))
        if mode == "max":
            return fmap.amax((2, 3))
        return fmap.flatten(1)

    def feature_maps(self, frames: torch.Tensor) -> torch.Tensor:
        """Backbone on a batch of frames ``[N, 3, H, W]`` -> ``[N, C, h, w]`` at the model's precision
        (a frozen backbone with no gradient wanted runs its batch-norm-folded copy: the same function,
        faster)."""
        precision = self.precision
        if precision == "bf16":
            frames = frames.contiguous(memory_format=torch.channels_last)
        fold = self.config["freeze_backbone"] and not self.backbone.training and not torch.is_grad_enabled()
        if fold and precision == "fp32" and self.engine == "openvino" and frames.device.type == "cpu":
            return self._openvino(self.backbone, frames)
        with autocast(precision, frames.device):
            return self._folded(self.backbone, frames) if fold else self.backbone(frames)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, 3 * streams, H, W]`` frames -> ``[N, D]`` features in the GRU's dtype (float32 unless
        the model was converted), whatever precision the backbone ran at."""
        n = frames.shape[0]
        images = frames.reshape(n * self.streams, 3, *frames.shape[2:])   # every stream's image in one call
        if torch.is_grad_enabled():      # training and explanations: one call (their hooks see every frame)
            return self.pool(self.feature_maps(images)).to(self.head_dtype).reshape(n, -1)
        per_call = images_per_call(images.shape[-2], images.shape[-1])
        pooled = [self.pool(self.feature_maps(part)) for part in images.split(per_call)]
        return torch.cat(pooled).to(self.head_dtype).reshape(n, -1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3 * streams, H, W]`` clips -> ``[B, T, D]`` features: the TimeDistributed step."""
        b, t = x.shape[:2]
        return self.frame_features(x.reshape(b * t, *x.shape[2:])).reshape(b, t, -1)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` frame features -> ``[B, classes]`` logits (GRU's last state then MLP, or
        mean and max over time then the linear head; with several streams, one head each and the
        log of their mean probability)."""
        feats = feats.to(self.head_dtype)
        if self.gru is None:
            if self.streams == 1:
                return self.head(torch.cat([feats.mean(1), feats.amax(1)], dim=1))
            logp = self._stream_log_proba(feats)
            return torch.logsumexp(logp, 1) - math.log(self.streams)
        _, h = self.gru(feats)
        if self.gru.bidirectional:
            last = torch.cat([h[-2], h[-1]], dim=1)
        else:
            last = h[-1]
        return self.head(last)

    def _stream_log_proba(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` features of a multi-stream pooled model -> ``[B, streams, classes]``: each
        stream's head on the mean and max over time of that stream's features, as log-probabilities."""
        heads = cast(nn.ModuleList, self.head)   # several streams: one head each
        return torch.stack([head(torch.cat([f.mean(1), f.amax(1)], dim=1)).log_softmax(-1)
                            for head, f in zip(heads, feats.chunk(self.streams, dim=2))], dim=1)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[2] != 3 * self.streams:
            raise ValueError(f"this CRNN ({self.config['input']} input) expects clips shaped "
                             f"[B, T, {3 * self.streams}, H, W], got {list(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.classify(self.features(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities for ``[B, T, C, H, W]`` (or one ``[T, C, H, W]`` clip), in eval mode."""
        was = self.training
        self.eval()
        try:
            single = x.dim() == 4
            p = self(x[None] if single else x).softmax(-1)
            return p[0] if single else p
        finally:
            self.train(was)

    @torch.no_grad()
    def stream_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Each stream's own class probabilities, ``[B, streams, classes]`` (``[streams, classes]`` for
        one clip), in eval mode. With ``temporal="pool"`` the clip's probabilities are their mean, so a
        reviewer can see which stream drove a score and whether the streams agree. A GRU mixes the
        streams before its head, so a multi-stream GRU model has no per-stream probabilities."""
        if self.streams == 1:
            return self.predict_proba(x).unsqueeze(-2)
        if self.gru is not None:
            raise ValueError("a GRU model mixes its streams before the head: no per-stream probabilities")
        single = x.dim() == 4
        x = x[None] if single else x
        self._check(x)
        was = self.training
        self.eval()
        try:
            p = self._stream_log_proba(self.features(x)).exp()
            return p[0] if single else p
        finally:
            self.train(was)


def weights_id(weights: str | None) -> str:
    """What the backbone weights were, as recorded in the config: "none", "imagenet" or a file name."""
    if weights in (None, "", "none"):
        return "none"
    if weights == "imagenet":
        return "imagenet"
    return os.path.basename(str(weights))
