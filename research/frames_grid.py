"""Save a PNG grid of a few frames per clip (one row each) to look at misclassified clips.

Usage: python frames_grid.py OUT.png CLIP_PATH [CLIP_PATH ...] [--frames 6]
"""
from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xvad.video import read_frames  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--frames", type=int, default=6)
    a = ap.parse_args()
    fig, axes = plt.subplots(len(a.clips), a.frames, figsize=(2.2 * a.frames, 1.7 * len(a.clips)), squeeze=False)
    for r, clip in enumerate(a.clips):
        frames, times = read_frames(clip, frames=a.frames)
        for c in range(a.frames):
            ax = axes[r, c]
            ax.imshow(frames[c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(os.path.basename(clip), fontsize=7)
            ax.set_title(f"{times[c]:.2f}s", fontsize=6)
    fig.tight_layout()
    fig.savefig(a.out, dpi=80)
