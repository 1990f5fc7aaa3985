"""Earlier layers and a larger input for the two shipped streams. For the 16 uniformly sampled frames of
every surv-fight clip, each paired with the next decoded frame (the shipped rule), the motion image and
the flow image (``xvad.video.motion_images`` / ``flow_images``) go through frozen Lite0 (ImageNet,
bf16). Writes into ``CACHE/pooled/`` for `head_cv.py`:

  {motion,flow}__max.npy       [232, 16, 1280]  last map, max-pooled, at 224 (as the package does)
  {motion,flow}_mid__max.npy   [232, 16, 704]   outputs of Lite0's stages 4 to 7 (80 + 112 + 192 + 320
                                                channels, 14x14 and 7x7 at 224), each max-pooled: motion
                                                images are not photographs, and earlier layers describe
                                                texture and edges rather than ImageNet objects
  {motion,flow}<S>__max.npy    [232, 16, 1280]  last map with the shorter side resized to S instead of
                                                224 (``--sizes``, default 320: a 10x10 grid in which
                                                small, distant fights cover more cells)

With ``--precision fp32`` the backbone runs in fp32 and every name gains ``_fp32`` before ``__max``
(e.g. ``flow_fp32__max.npy``), to measure how much bf16 moves the features and the heads' scores.

Usage: python layers.py DATA CACHE [--sizes 160 320] [--precision fp32]
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from common import frozen_lite0, parser, sampled_pairs, start

from xvad.models.efficientnet import STAGES
from xvad.video import flow_images, motion_images, preprocess_as

STAGE_ENDS = np.cumsum([repeats for *_, repeats, _ in STAGES]) - 1
MID = STAGE_ENDS[3:]   # stages 4 to 7


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=[320])
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    a, data = start(ap)
    model = frozen_lite0(data.classes, a.precision)
    tag = "" if a.precision == "bf16" else f"_{a.precision}"
    blocks = model.backbone.body.net._blocks
    caught: list[torch.Tensor] = []
    for i in MID:
        blocks[int(i)].register_forward_hook(lambda m, inp, out: caught.append(out.float().amax((2, 3))))
    n = len(data)
    out = {f"{s}{v}": np.zeros((n, 16, 704 if v == "_mid" else 1280), np.float16)
           for s in ("motion", "flow") for v in ("", "_mid", *map(str, a.sizes))}
    t0 = time.time()
    for i, sample in enumerate(data.samples):
        frames, partners = sampled_pairs(sample.path)
        for name, make in (("motion", motion_images), ("flow", flow_images)):
            images = make(frames, partners)
            with torch.no_grad():
                caught.clear()
                out[name][i] = model.frame_features(preprocess_as(images, model.config)).float().numpy()
                out[name + "_mid"][i] = torch.cat(caught, 1).numpy()
                for size in a.sizes:
                    resized = preprocess_as(images, {**model.config, "size": size})
                    out[f"{name}{size}"][i] = model.frame_features(resized).float().numpy()
        if i % 20 == 0:
            print(f"{i + 1}/{n} clips, {time.time() - t0:.0f}s", flush=True)
    os.makedirs(os.path.join(a.cache, "pooled"), exist_ok=True)
    for k, x in out.items():
        np.save(os.path.join(a.cache, "pooled", f"{k}{tag}__max.npy"), x)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
