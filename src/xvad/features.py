"""Per-frame backbone features, extracted once and cached on disk.

With a frozen backbone the CNN is the only real cost of training, and it gives the same output
every epoch; so each clip (and each augmented view of it) goes through the CNN once. The cache
key covers the file's content, the backbone, its weights, the precision and the preprocessing.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_path
from .hashing import file_sha256
from .models import CRNN
from .video import MOTION_RULE, VideoError, View, flow_rule, input_streams, load_clip
from .video.crop import MOTION_CROP_RULE

# Config entries that change what the backbone sees or computes.
FEATURE_KEYS = ("backbone", "weights", "pooling", "frames", "size", "fps", "crop", "shrink", "mean", "std", "input")


def make_views(n: int) -> list[View]:
    """The plain view plus ``n - 1`` augmented ones (mirror, jitter, mirror + jitter, ...)."""
    views = [View()]
    k = 1
    while len(views) < n:
        views.append(View(flip=True, jitter=0 if k == 1 else k))
        if len(views) < n:
            views.append(View(flip=False, jitter=k))
        k += 1
    return views


_hash_memo: dict[tuple, str] = {}


def content_hash(path: str) -> str:
    """SHA-256 of a file's bytes (memoised by path, size and mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _hash_memo:
        _hash_memo[key] = file_sha256(path)
    return _hash_memo[key]


def load_frames(path: str, config: dict, view: View = View()) -> np.ndarray:
    """The uint8 images ``[T, H, W, 3 * streams]`` the backbone of a model with ``config`` sees for
    ``view`` of a clip (see :func:`xvad.video.load_clip`)."""
    return load_clip(path, config, view=view).images


def clip_tensor(path: str, config: dict, view: View = View()) -> torch.Tensor:
    """The preprocessed ``[T, 3 * streams, size, size]`` tensor for ``view`` of a clip."""
    return load_clip(path, config, view=view).tensor()


class FeatureCache:
    """Directory of ``<key>.pt`` files, each a float16 ``[T, D]`` tensor."""

    def __init__(self, root: str, model: CRNN, config: dict | None = None) -> None:
        """``config``: the frames' settings, if not ``model.config`` (frames at a stream's rate)."""
        self.root = root
        os.makedirs(root, exist_ok=True)
        config = config or model.config
        cfg: dict[str, Any] = {k: config.get(k) for k in FEATURE_KEYS}
        cfg["precision"] = model.precision
        cfg["batch_norm"] = "folded"      # the frozen backbone runs with its batch norms folded (models.fold)
        streams = input_streams(cfg["input"])
        if "motion" in streams:
            cfg["motion"] = MOTION_RULE
        if "flow" in streams:
            cfg["flow"] = flow_rule(config)
        if cfg["crop"] == "motion":
            cfg["motion_crop"] = MOTION_CROP_RULE
        self.fingerprint = json.dumps(cfg, sort_keys=True)

    def path(self, clip: str, view: View) -> str:
        key = hashlib.sha256(f"{content_hash(clip)}|{self.fingerprint}|{view.name}".encode()).hexdigest()
        return os.path.join(self.root, key[:2], f"{key}.pt")

    def get(self, clip: str, view: View) -> torch.Tensor | None:
        path = self.path(clip, view)
        if not os.path.isfile(path):
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True).float()
        except Exception:
            return None  # a damaged entry is recomputed

    def put(self, clip: str, view: View, feats: torch.Tensor) -> None:
        with atomic_path(self.path(clip, view)) as part:
            torch.save(feats.detach().to(torch.float16).cpu().clone(), part)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xvad", "features")


def cached_features(model: CRNN, cache: FeatureCache, path: str, view: View, config: dict) -> torch.Tensor:
    """The backbone features ``[T, D]`` of ``view`` of a clip, as ``config`` reads it: from ``cache``, else
    computed and stored (VideoError for an unreadable clip). The values are a cache hit's either way."""
    cached = cache.get(path, view)
    if cached is not None:
        return cached
    out = model.frame_features(load_clip(path, config, view=view).tensor().to(model.device)).cpu()
    cache.put(path, view, out)
    return out.to(torch.float16).float()


@torch.no_grad()
def extract_features(model: CRNN, paths: list[str], views: list[View], cache_dir: str | None = None,
                     progress: bool = True) -> tuple[dict[tuple[int, int], torch.Tensor], dict[str, str]]:
    """Features ``[T, D]`` for every (clip index, view index); unreadable clips are reported, not fatal.

    Returns ``(features, failures)`` with ``failures`` mapping a path to its one-line error.
    """
    cache = FeatureCache(cache_dir or default_cache_dir(), model)
    was_training = model.training
    model.eval()
    feats: dict[tuple[int, int], torch.Tensor] = {}
    failures: dict[str, str] = {}
    jobs = [(i, v) for i in range(len(paths)) for v in range(len(views))]
    try:
        for i, v in tqdm(jobs, desc="features", unit="clip", disable=not progress, leave=False):
            if paths[i] in failures:
                continue
            try:
                feats[i, v] = cached_features(model, cache, paths[i], views[v], model.config)
            except VideoError as exc:
                failures[paths[i]] = str(exc)
    finally:
        model.train(was_training)
    return feats, failures


@torch.no_grad()
def stream_features(model: CRNN, paths: list[str], fps: float, cache_dir: str | None = None,
                    progress: bool = True) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    """Per clip index, the features ``[n, D]`` of every frame a stream at ``fps`` samples from the clip's
    start to its end (at least one window: a short clip's last frame repeats, as ``xvad evaluate`` reads
    it), for scoring it as a stream (:func:`xvad.evaluate.highest_window`); cached like
    :func:`extract_features`. Unreadable clips are reported in ``failures``, not fatal."""
    from .evaluate import window_count

    root = cache_dir or default_cache_dir()
    was_training = model.training
    model.eval()
    feats: dict[int, torch.Tensor] = {}
    failures: dict[str, str] = {}
    try:
        for i, path in enumerate(tqdm(paths, desc=f"features at {fps:g} fps", unit="clip", disable=not progress,
                                      leave=False)):
            try:
                config = dict(model.config, fps=float(fps), frames=window_count(model, path, fps))
                feats[i] = cached_features(model, FeatureCache(root, model, config), path, View(), config)
            except VideoError as exc:
                failures[path] = str(exc)
    finally:
        model.train(was_training)
    return feats, failures
