"""Motion features of the 16 uniformly sampled frames of every surv-fight clip, for several ways of
choosing the frame each one is subtracted from. Writes ``CACHE/pooled/<name>__max.npy`` [232, 16, 1280]
(frozen Lite0 ImageNet, bf16, max-pooled), the layout `head_cv.py` reads.

  before    the frame decoded just before (what xvad ships; frame 0 is paired with itself)
  gapMS     the latest frame at least MS milliseconds earlier, e.g. gap60
  distinct  the latest earlier frame that is not an exact copy (mean |difference| >= 0.5)
("just after" is the set absdiff16_native of extract.py.)

Usage: python pairings.py DATA CACHE before gap60 distinct
"""
from __future__ import annotations

import os

import numpy as np
import torch
from common import parser, sampled_index, start

from xvad.models import CRNN
from xvad.video import motion_images, preprocess_as, read_frames


def partner(frames: np.ndarray, times: np.ndarray, k: int, rule: str) -> int:
    """Index of the frame that frame ``k`` is subtracted from."""
    if k == 0:
        return 0
    j = k - 1
    if rule == "distinct":
        while j > 0 and np.abs(frames[j].astype(np.int16) - frames[k].astype(np.int16)).mean() < 0.5:
            j -= 1
    elif rule.startswith("gap"):
        gap = float(rule[3:]) / 1000
        while j > 0 and times[j] > times[k] - gap + 1e-6:
            j -= 1
    return j


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("rules", nargs="+")
    a, data = start(ap)
    model = CRNN("efficientnet_lite0", weights="imagenet", input="motion", pooling="max", temporal="pool",
                 classes=data.classes).eval()
    out = {r: np.zeros((len(data), 16, 1280), np.float16) for r in a.rules}
    copies = []
    for i, sample in enumerate(data.samples):
        frames, times = read_frames(sample.path)
        step = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean((1, 2, 3))
        copies.append(float((step < 0.5).mean()))
        idx = sampled_index(len(frames))
        for rule in a.rules:
            prev = [partner(frames, times, k, rule) for k in idx]
            x = preprocess_as(motion_images(frames[idx], frames[prev]), model.config)
            with torch.no_grad():
                out[rule][i] = model.frame_features(x).numpy()
    os.makedirs(os.path.join(a.cache, "pooled"), exist_ok=True)
    for rule, x in out.items():
        np.save(os.path.join(a.cache, "pooled", f"{rule}__max.npy"), x)
    copies = np.array(copies)
    print(f"clips repeating more than 20% of their frames: {(copies > 0.2).sum()} of {len(copies)}")


if __name__ == "__main__":
    main()
