"""Extract frozen EfficientNet-Lite0 feature maps for the surv-fight clips, once, into .npy caches.

Every set is stored as float16 ``[n_clips, T, 1280, 7, 7]`` (the backbone's last map at 224, before
pooling) so that every pooling / grid / head variant in ``cv.py`` runs on the same cached arrays.

Sets (name -> what goes through the backbone; all frames chosen like ``xvad.video.read_frames(path,
frames=N)``: N indices spread evenly over the decoded frames, nearest index):

  rgb16_center        16 uniformly sampled frames, crop="center"
  rgb16_full          same frames, crop="full" (whole frame squeezed to 224x224)
  rgb16_pad           same frames, crop="pad" (letterboxed)
  rgb32_center        32 uniformly sampled frames, crop="center"
  absdiff16_native    |I(t+1) - I(t)| * 4 (clipped to 255) with t each of the 16 sampled frames and
                      t+1 the NEXT NATIVE frame of the video (the previous one for the last frame)
  absdiff16_sampled   |I(s_k) - I(s_k-1)| * 2 between consecutive SAMPLED frames (k=0 reuses k=1)
  absdiff16_native_full  as absdiff16_native with crop="full"
  signdiff16_native   128 + 2 * (I(t+1) - I(t)), clipped: the signed native difference in image range
  *_flip              the same set on horizontally mirrored frames (augmentation views)

Usage: python extract.py DATA OUT_DIR --sets rgb16_center absdiff16_native ...
Clips are decoded once per call; all requested sets are computed from the same decoded frames.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from xvad.data import load_dataset
from xvad.models import CRNN
from xvad.video import preprocess, read_frames

SETS = {
    # name: (frames, crop, stream)
    "rgb16_center": (16, "center", "rgb"),
    "rgb16_full": (16, "full", "rgb"),
    "rgb16_pad": (16, "pad", "rgb"),
    "rgb32_center": (32, "center", "rgb"),
    "absdiff16_native": (16, "center", "absdiff_native"),
    "absdiff16_sampled": (16, "center", "absdiff_sampled"),
    "signdiff16_native": (16, "center", "signdiff_native"),
    "absdiff16_native_full": (16, "full", "absdiff_native"),
}


def uniform_index(n: int, frames: int) -> np.ndarray:
    """The indices xvad.video.read_frames(path, frames=N) picks among n decoded frames."""
    return np.floor(np.linspace(0, n - 1, frames) + 0.5).astype(int)


def images_for(all_frames: np.ndarray, name: str) -> np.ndarray:
    """uint8 [T, H, W, 3] images that set ``name`` feeds to the backbone (before the crop)."""
    flip = name.endswith("_flip")
    base = name[:-5] if flip else name
    frames, _, stream = SETS[base]
    n = len(all_frames)
    idx = uniform_index(n, frames)
    if stream == "rgb":
        out = all_frames[idx]
    elif stream in ("absdiff_native", "signdiff_native"):
        nxt = np.where(idx + 1 < n, idx + 1, np.maximum(idx - 1, 0))
        d = all_frames[nxt].astype(np.int16) - all_frames[idx].astype(np.int16)
        if stream == "absdiff_native":
            out = np.clip(np.abs(d) * 4, 0, 255).astype(np.uint8)
        else:
            out = np.clip(128 + 2 * d, 0, 255).astype(np.uint8)
    elif stream == "absdiff_sampled":
        prev = np.concatenate([[idx[1]], idx[:-1]]) if len(idx) > 1 else idx
        d = all_frames[idx].astype(np.int16) - all_frames[prev].astype(np.int16)
        out = np.clip(np.abs(d) * 2, 0, 255).astype(np.uint8)
    else:
        raise ValueError(stream)
    if flip:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--sets", nargs="+", required=True)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    data = load_dataset(args.data)
    meta = {"classes": data.classes, "paths": [s.path for s in data.samples],
            "labels": data.labels.tolist(), "groups": [s.group for s in data.samples]}
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f)
    model = CRNN("efficientnet_lite0", weights="imagenet", classes=data.classes).set_precision("bf16").eval()
    cfg = model.config
    todo = [s for s in args.sets if not os.path.isfile(os.path.join(args.out, f"{s}.npy"))]
    arrays, tmp = {}, {}
    for s in todo:
        base = s[:-5] if s.endswith("_flip") else s
        frames = SETS[base][0]
        tmp[s] = os.path.join(args.out, f"{s}.part.npy")
        if os.path.isfile(tmp[s]):   # resume an interrupted run: rows already written are kept
            arrays[s] = np.lib.format.open_memmap(tmp[s], mode="r+")
        else:
            arrays[s] = np.lib.format.open_memmap(tmp[s], mode="w+", dtype=np.float16,
                                                  shape=(len(data), frames, 1280, 7, 7))
    t0, n_img = time.time(), 0
    timing = {s: 0.0 for s in todo}
    for i, sample in enumerate(data.samples):
        if not todo:
            break
        need = [s for s in todo if not np.any(arrays[s][i, -1])]   # a row is written whole
        if not need:
            continue
        all_frames, _ = read_frames(sample.path)   # every decoded frame, once per clip
        for s in need:
            t1 = time.time()
            base = s[:-5] if s.endswith("_flip") else s
            x = preprocess(images_for(all_frames, s), cfg["size"], cfg["mean"], cfg["std"], crop=SETS[base][1])
            with torch.no_grad():
                maps = torch.cat([model.feature_maps(x[j:j + args.batch]).float()
                                  for j in range(0, len(x), args.batch)])
            arrays[s][i] = maps.numpy().astype(np.float16)
            n_img += len(x)
            timing[s] += time.time() - t1
        if i % 20 == 0:
            el = time.time() - t0
            print(f"{i + 1}/{len(data)} clips, {n_img} images, {el:.0f}s, {n_img / el:.1f} img/s", flush=True)
        del all_frames
    for s in todo:
        arrays[s].flush()
        del arrays[s]
        os.replace(tmp[s], os.path.join(args.out, f"{s}.npy"))
    with open(os.path.join(args.out, "timings.jsonl"), "a") as f:
        f.write(json.dumps({"sets": todo, "seconds_per_set": timing, "total": time.time() - t0}) + "\n")
    print("done", {k: round(v) for k, v in timing.items()}, f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
