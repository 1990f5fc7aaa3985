"""xvad's sample footage: five real two-second CCTV clips from two cameras the shipped model never saw
(the Surveillance Camera Fight Dataset, MIT licence; the credit and licence are in ``demo-footage/``).

``demo_footage()`` lists the clips with their label and camera, ``demo_cameras()`` groups them by
camera in the order of ``groups.csv``, and ``camera_video()`` joins one camera's clips into one
video, played again and again (what ``xvad demo`` gives the service as that camera).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from ..errors import VideoError

__all__ = ["FOOTAGE_DIR", "SCENES", "CameraVideo", "SampleClip", "camera_video", "demo_cameras", "demo_footage"]

FOOTAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo-footage")
SCENES = {"g21": "a street at night", "g29": "a night club, infrared"}   # as demo-footage/README.md says


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


@dataclass
class CameraVideo:
    """One camera's clips joined into one video: its file, frame rate, size (height, width), duration
    in seconds, and where each clip lies in it (``(start, end, clip)``, seconds from its start)."""

    path: str
    fps: float
    size: tuple[int, int]
    duration: float
    timeline: list[tuple[float, float, SampleClip]]

    def clips_between(self, start: float, end: float) -> list[SampleClip]:
        """The clips that seconds ``start`` to ``end`` of the video cover, in order (each once)."""
        out: list[SampleClip] = []
        for s, e, clip in self.timeline:
            if s < end and e > start and clip not in out:
                out.append(clip)
        return out


def camera_video(clips: list[SampleClip], path: str, loops: int = 1) -> CameraVideo:
    """Write ``clips`` (one camera's, all of one size and frame rate) one after the other, ``loops``
    times, as the H.264 MP4 ``path``: a camera that shows them at their own rate."""
    from ..render import VideoWriter
    from ..video import iter_frames, probe

    infos = [probe(c.path) for c in clips]
    shapes = {(i.height, i.width, round(i.fps, 3)) for i in infos}
    if len(shapes) != 1:
        raise VideoError(f"{path}: the clips {', '.join(c.name for c in clips)} differ in size or frame rate")
    fps = infos[0].fps
    timeline: list[tuple[float, float, SampleClip]] = []
    with VideoWriter(path, fps) as writer:
        for _ in range(max(1, int(loops))):
            for clip in clips:
                start = writer.frames / fps
                for image, _t in iter_frames(clip.path):
                    writer.write(image)
                timeline.append((start, writer.frames / fps, clip))
    return CameraVideo(path, fps, (infos[0].height, infos[0].width), timeline[-1][1], timeline)
