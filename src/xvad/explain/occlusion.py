"""Temporal occlusion: how much the target's probability drops when frames are blanked out.

Each window of ``span`` consecutive frames (windows start every ``stride`` frames) is replaced by a
neutral frame and the occluded clips go through the model ``batch_size`` at a time (no gradients).
A frame's importance is the drop of the target's softmax probability, ``p(clip) - p(occluded)``,
averaged over the windows that cover it (0 for frames no window covers). Occlusion says nothing
about where inside a frame, so each frame's map is uniform, equal to that frame's drop (``raw`` is
``[T, 1, 1]``); with ``normalize="clip"`` the maps then grade the frames against each other.

Neutral frames (``fill``): "temporal_mean" (the clip's mean frame: the static scene without what
moves or appears; default), "mean" (the normalisation mean colour, i.e. 0 in normalised space) or
"black" (``(0 - mean) / std``).
"""
from __future__ import annotations

import torch

from .base import Explainer, ExplainError, _choice, _Result, auto_chunk, black_frame
from .gradients import _chunks, _positive_int

FILLS = ("temporal_mean", "mean", "black")


def neutral_frames(model: torch.nn.Module, x: torch.Tensor, fill: str) -> torch.Tensor:
    """``[B, T, 3, H, W]`` clips -> ``[B, 1, 3, H, W]`` neutral frame per clip."""
    if fill == "temporal_mean":
        return x.mean(1, keepdim=True)
    if fill == "mean":
        return torch.zeros_like(x[:, :1])
    return black_frame(model, x[:, :1])


class Occlusion(Explainer):
    """Occlusion over time (Zeiler & Fergus 2014, applied to frames)."""

    name = "occlusion"
    defaults = {"span": 1, "stride": 1, "fill": "temporal_mean", "batch_size": None}

    def _check_options(self) -> None:
        _positive_int("span", self.options["span"])
        _positive_int("stride", self.options["stride"])
        _choice("fill", self.options["fill"], FILLS)
        if self.options["batch_size"] is not None:
            _positive_int("batch_size", self.options["batch_size"])

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> _Result:
        b, t = x.shape[:2]
        span, stride = int(self.options["span"]), int(self.options["stride"])
        if span > t:
            raise ExplainError(f"span={span} is longer than the clip ({t} frames)")
        starts = list(range(0, t - span + 1, stride))
        neutral = neutral_frames(self.model, x, self.options["fill"])
        size = self.options["batch_size"] or auto_chunk(t, x.shape[-2], x.shape[-1], budget=64)
        with torch.no_grad():
            logits = self.model(x)
            target = self._resolve_target(target, logits)
            probs = logits.float().softmax(1)
            p0 = probs.gather(1, target.view(-1, 1)).squeeze(1)
            n = len(starts)
            occluded_p = torch.empty(b * n, device=x.device)
            for idx in _chunks(b * n, size):
                idx = idx.to(x.device)
                clip, w = idx // n, idx % n
                xs = x[clip].clone()
                for row, (c, k) in enumerate(zip(clip.tolist(), w.tolist())):
                    s = starts[k]
                    xs[row, s:s + span] = neutral[c]
                p = self.model(xs).float().softmax(1)
                occluded_p[idx] = p.gather(1, target[clip].view(-1, 1)).squeeze(1)
        drops = (p0.view(b, 1) - occluded_p.view(b, n))  # [B, windows]
        cover = torch.zeros(n, t, device=x.device)
        for k, s in enumerate(starts):
            cover[k, s:s + span] = 1
        counts = cover.sum(0)
        importance = (drops @ cover) / counts.clamp(min=1)
        return _Result(importance[:, :, None, None], importance, logits, target,
                       {"windows": n, "window_drops": drops.tolist()})
