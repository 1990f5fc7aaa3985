"""Body-pose features of the 16 uniformly sampled frames of every surv-fight clip: the hybrid idea of
adding a spatial analysis of the people to the temporal one. The pose model is the one bundled in
MediaPipe 0.10.14's wheel (BlazePose full, ``mp.solutions.pose`` in video mode); it tracks one person,
the most prominent. Writes ``CACHE/pooled/pose.npy`` [232, 16, 135] for `head_cv.py`, per frame:

  detected (0/1), mean landmark visibility, the person's box area as a share of the frame,
  33 x 3 world landmarks (metres, hip-centred: the body's shape),
  33 landmark speeds to the next sampled frame, in torso lengths per second (image coordinates)

Needs its own environment (MediaPipe 0.10.14 pins protobuf 4 and its own OpenCV), e.g.
``python -m venv mpvenv; mpvenv/bin/pip install torch==2.13.0 mediapipe==0.10.14 av tqdm;
mpvenv/bin/pip install --no-deps -e .``. Usage: mpvenv/bin/python pose.py DATA CACHE
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from xvad.data import load_dataset
from xvad.video import read_frames

DIM = 3 + 99 + 33


def clip_pose(frames: np.ndarray, times: np.ndarray) -> np.ndarray:
    """[16, DIM] pose features of one clip's sampled frames (zeros where nobody is found)."""
    import mediapipe as mp  # in its own environment, see above
    out = np.zeros((len(frames), DIM), np.float32)
    points = np.full((len(frames), 33, 2), np.nan, np.float32)
    torso = np.full(len(frames), np.nan, np.float32)
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1) as pose:
        for k, frame in enumerate(frames):
            r = pose.process(np.ascontiguousarray(frame))
            if r.pose_landmarks is None:
                continue
            lm = np.array([(p.x, p.y, p.visibility) for p in r.pose_landmarks.landmark], np.float32)
            world = np.array([(p.x, p.y, p.z) for p in r.pose_world_landmarks.landmark], np.float32)
            h, w = frame.shape[:2]
            xy = lm[:, :2] * (w, h)
            box = (xy.max(0) - xy.min(0)).clip(0) / (w, h)
            shoulders, hips = xy[[11, 12]].mean(0), xy[[23, 24]].mean(0)
            points[k], torso[k] = xy, max(np.linalg.norm(shoulders - hips), 1.0)
            out[k, :3] = 1.0, lm[:, 2].mean(), min(box[0] * box[1], 1.0)
            out[k, 3:102] = world.ravel()
    for k in range(len(frames)):
        j = k + 1 if k + 1 < len(frames) else k - 1
        if np.isnan(torso[k]) or np.isnan(torso[j]):
            continue
        dt = max(abs(times[j] - times[k]), 1e-3)
        out[k, 102:] = np.linalg.norm(points[j] - points[k], axis=1) / torso[k] / dt
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="the dataset folder")
    ap.add_argument("cache", help="the feature cache (writes pooled/pose.npy)")
    a = ap.parse_args()
    data = load_dataset(a.data)
    out = np.zeros((len(data), 16, DIM), np.float32)
    t0 = time.time()
    for i, sample in enumerate(data.samples):
        frames, times = read_frames(sample.path)
        idx = np.floor(np.linspace(0, len(frames) - 1, 16) + 0.5).astype(int)
        out[i] = clip_pose(frames[idx], np.asarray(times)[idx])
        if i % 20 == 0:
            print(f"{i + 1}/{len(data)} clips, {time.time() - t0:.0f}s, "
                  f"found in {out[:i + 1, :, 0].mean():.0%} of frames", flush=True)
    np.save(os.path.join(a.cache, "pooled", "pose.npy"), out)
    print(f"done in {time.time() - t0:.0f}s; a person found in {out[:, :, 0].mean():.0%} of frames")


if __name__ == "__main__":
    main()
