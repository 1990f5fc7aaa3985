"""What the research scripts share: their ``DATA CACHE`` arguments (paths come only from arguments or
the environment: ``XVAD_DATA`` for the dataset folder), the frozen Lite0 they run, and the frames they
sample (16, uniformly, each with the frame decoded just after it)."""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from xvad.data import Dataset, load_dataset
from xvad.models import CRNN
from xvad.video import read_frames


def parser(doc: str | None = None) -> argparse.ArgumentParser:
    """An argument parser (described by the first paragraph of ``doc``) that starts with ``DATA CACHE``;
    scripts add their own arguments after."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    ap.add_argument("data", help="the dataset folder (class folders of clips, groups.csv)")
    ap.add_argument("cache", help="the feature cache folder (features go to CACHE/pooled/)")
    return ap


def data_option(ap: argparse.ArgumentParser) -> None:
    """``--data DATA``, the dataset folder, by default ``$XVAD_DATA`` (checked by :func:`need`)."""
    ap.add_argument("--data", default=os.environ.get("XVAD_DATA"),
                    help="the dataset folder (class folders of clips; default: $XVAD_DATA)")


def need(ap: argparse.ArgumentParser, a: argparse.Namespace, name: str = "data") -> None:
    """Stop with one line when ``--data`` was neither given nor set in the environment."""
    if not getattr(a, name):
        ap.error(f"--{name}: give the dataset folder (e.g. surv-fight) or set XVAD_DATA")


def start(ap: argparse.ArgumentParser | None = None,
          doc: str | None = None) -> tuple[argparse.Namespace, Dataset]:
    """Parse the arguments (``DATA CACHE`` alone by default), run on 2 threads, load the dataset."""
    a = (ap or parser(doc)).parse_args()
    torch.set_num_threads(2)
    return a, load_dataset(a.data)


def frozen_lite0(classes: list[str], precision: str = "bf16") -> CRNN:
    """Frozen EfficientNet-Lite0 (ImageNet; bf16 unless told) whose ``frame_features`` max-pool the
    last map."""
    return CRNN("efficientnet_lite0", weights="imagenet", pooling="max", temporal="pool",
                classes=classes).set_precision(precision).eval()


def sampled_index(n: int, k: int = 16) -> np.ndarray:
    """``k`` frame indices spread uniformly over ``n`` frames."""
    return np.floor(np.linspace(0, n - 1, k) + 0.5).astype(int)


def next_index(idx: np.ndarray, n: int) -> np.ndarray:
    """The frame decoded just after each of ``idx`` (just before, for the last frame)."""
    return np.where(idx + 1 < n, idx + 1, np.maximum(idx - 1, 0))


def sampled_pairs(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A clip's 16 sampled frames and the frame decoded just after each: what the shipped model sees."""
    frames, _ = read_frames(path)
    idx = sampled_index(len(frames))
    return frames[idx], frames[next_index(idx, len(frames))]
