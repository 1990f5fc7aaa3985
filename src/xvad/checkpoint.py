"""Checkpoints: one file with the state dict and the full model config, never unpickled as code.

Files are written atomically (``.part`` then rename) and read with ``torch.load(weights_only=True)``,
so a checkpoint can only ever contain tensors and plain Python values.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import fields
from typing import Any

import torch

from . import __version__
from .atomic import atomic_path
from .config import ModelConfig
from .errors import CheckpointError
from .hashing import file_sha256
from .models import CRNN

FORMAT = "xvad-checkpoint"
FORMAT_VERSION = 1
SETTINGS = tuple(f.name for f in fields(ModelConfig))   # config keys that are model settings
# Settings added after checkpoints were already saved, with the behaviour those checkpoints were trained
# with (which is not the new default).
PREDATED = {"shrink": "last", "flow": "medium"}


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path.part``, flush to disk, then rename over ``path``."""
    with atomic_path(path) as part:
        with open(part, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


def save_model(model: CRNN, path: str, extra: dict | None = None, include_backbone: bool = True) -> str:
    """Write ``model`` (weights + config + xvad version + ``extra`` info) to ``path``.

    ``include_backbone=False`` leaves out a frozen backbone's pretrained weights (they are rebuilt from
    their source, e.g. the bundled EfficientNet-Lite0 file, on load): a few MB instead of tens.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    config = dict(model.config)
    if not include_backbone:
        if config["weights"] != "imagenet" or not config["freeze_backbone"]:
            raise CheckpointError(f"{path}: only a frozen ImageNet backbone can be left out of a checkpoint")
        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
        config["backbone_in_checkpoint"] = False
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "xvad_version": __version__,
               "config": config, "extra": dict(extra or {}), "state_dict": state}
    atomic_save(payload, path)
    return path


def file_id(path: str) -> str:
    """Short content hash naming a checkpoint in events and reports."""
    return file_sha256(path)[:12]


def read_checkpoint(path: str) -> dict:
    """Load and validate a checkpoint's payload (no model built)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused, the file holds Python objects beyond tensors and "
                              "plain values (not an xvad checkpoint)") from None
    except Exception as exc:  # zip, EOF, unpickler errors: all mean the file is damaged or foreign
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an xvad checkpoint (a foreign PyTorch file?); "
                              "create one with `xvad train` or xvad.save_model()")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer xvad ({payload.get('xvad_version')}); upgrade xvad")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint is missing its {key}")
    return payload


def model_from_config(config: dict) -> CRNN:
    """Build an untrained CRNN from a saved config (backbone weights come from the state dict, or
    from their pretrained source when the checkpoint left them out). A setting the checkpoint does not
    record (it predates it) takes the behaviour it was saved with (:data:`PREDATED`), else the CRNN
    default; entries that are not settings are kept as they are."""
    config = {**PREDATED, **config}
    kwargs = {k: config[k] for k in SETTINGS if k in config and k != "weights"}
    kwargs.update({k: config[k] for k in ("num_classes", "classes", "freeze_backbone") if k in config})
    weights = None if config.get("backbone_in_checkpoint", True) else config["weights"]
    model = CRNN(weights=weights, **kwargs)
    model.config.update({k: v for k, v in config.items() if k not in model.config or k == "weights"})
    return model


def load_model(path: str | None = None, device: str | torch.device = "cpu") -> CRNN:
    """Read a checkpoint and return a ready model in eval mode on ``device``."""
    if path is None:
        from .pretrained import default_checkpoint
        path = default_checkpoint()
    payload = read_checkpoint(path)
    try:
        model = model_from_config(payload["config"])
        state = payload["state_dict"]
        if not payload["config"].get("backbone_in_checkpoint", True):
            state = {**{f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}, **state}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the saved config "
                              f"({str(exc).splitlines()[0][:160]})") from None
    model.checkpoint_id = file_id(path)
    model.checkpoint_path = os.path.abspath(path)
    model.extra = payload.get("extra", {})
    return model.to(device).eval()
