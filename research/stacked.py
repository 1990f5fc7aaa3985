"""Motion over three steps in one image: for each of the 16 uniformly sampled frames t of every
surv-fight clip, R, G and B are the grey differences |I(t+1) − I(t)|, |I(t+2) − I(t+1)| and
|I(t+3) − I(t+2)| (next decoded frames, x4, clipped; the clip's last frames repeat), so that the frozen
ImageNet backbone sees where motion starts and stops as colour. Writes ``CACHE/pooled/stack3__max.npy``
[232, 16, 1280] (Lite0 ImageNet, bf16, max-pooled) for `head_cv.py`.

Usage: python stacked.py DATA CACHE
"""
from __future__ import annotations

import os

import numpy as np
import torch
from common import frozen_lite0, sampled_index, start

from xvad.video import preprocess_as, read_frames


def main() -> None:
    a, data = start(doc=__doc__)
    model = frozen_lite0(data.classes)
    out = np.zeros((len(data), 16, 1280), np.float16)
    for i, sample in enumerate(data.samples):
        frames, _ = read_frames(sample.path)
        grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        n = len(grey)
        idx = sampled_index(n)
        steps = [np.abs(grey[np.minimum(idx + k + 1, n - 1)] - grey[np.minimum(idx + k, n - 1)]) for k in range(3)]
        images = np.clip(np.stack(steps, -1) * 4, 0, 255).astype(np.uint8)
        with torch.no_grad():
            out[i] = model.frame_features(preprocess_as(images, model.config)).float().numpy()
        if i % 40 == 0:
            print(f"{i + 1}/{len(data)}", flush=True)
    np.save(os.path.join(a.cache, "pooled", "stack3__max.npy"), out)


if __name__ == "__main__":
    main()
