"""xvad's sample footage: five real two-second CCTV clips from two cameras the shipped model never saw
(the Surveillance Camera Fight Dataset, MIT licence; the credit and licence are in ``demo-footage/``).

``demo_footage()`` lists the clips with their label and camera, ``demo_cameras()`` groups them by
camera in the order of ``groups.csv`` (what ``xvad demo`` plays).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from ..errors import VideoError

__all__ = ["FOOTAGE_DIR", "SampleClip", "demo_cameras", "demo_footage"]

FOOTAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo-footage")


@dataclass(frozen=True)
class SampleClip:
    """One sample clip: its file, its name (``fi089``), its label (``fight`` or ``noFight``) and the
    camera it was filmed by (``g21``: the source video's group)."""

    path: str
    name: str
    label: str
    camera: str


def demo_footage() -> list[SampleClip]:
    """The five clips of ``demo-footage/groups.csv``, in its order, each file checked to exist."""
    with open(os.path.join(FOOTAGE_DIR, "groups.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    clips = [SampleClip(os.path.join(FOOTAGE_DIR, r["label"], r["clip"] + ".mp4"), r["clip"], r["label"], r["group"])
             for r in rows]
    missing = [c.path for c in clips if not os.path.isfile(c.path)]
    if missing:
        raise VideoError(f"{missing[0]}: sample clip missing from the installed package")
    return clips


def demo_cameras() -> dict[str, list[SampleClip]]:
    """The sample clips by camera (``{"g21": [...], "g29": [...]}``), cameras and clips in file order."""
    out: dict[str, list[SampleClip]] = {}
    for c in demo_footage():
        out.setdefault(c.camera, []).append(c)
    return out
