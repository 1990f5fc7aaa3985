"""Content hashes of files and of modules' weights (checkpoint ids, feature-cache keys, shared backbones,
converted backbones)."""
from __future__ import annotations

import hashlib
import os

import torch


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def module_sha256(module: torch.nn.Module) -> str:
    """Hex SHA-256 of a module's state (names, dtypes, shapes and bytes of every tensor, in order)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
