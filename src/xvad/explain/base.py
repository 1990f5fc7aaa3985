"""What every explanation method shares: input checks, model state, hooks, targets, maps.

An explanation method is a small subclass of :class:`Explainer` that implements ``_attribute``:
given a checked clip batch ``x`` ``[B, T, 3, H, W]`` on the model's device and the requested
target (or None), it returns a :class:`_Result` with the raw maps at the resolution it works at
and the per-frame importance. :meth:`Explainer.attribute` does the rest: it puts the model in
eval mode with gradients off for its parameters (and in-place activations switched off for the
methods that hook a layer), runs the method, removes every hook and restores the model exactly
(try/finally), then upsamples the raw maps to the input size, normalises them and packs an
:class:`Explanation`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExplainError
from ..render.image import gaussian_blur as blur_planes

NORMALIZE = ("clip", "frame", "none")


@dataclass
class Explanation:
    """Maps and scores that explain a clip classifier's decision for one target class.

    Arrays are float32 numpy arrays. For a single clip ``[T, 3, H, W]``:

    - ``maps`` ``[T, H, W]``: the explanation at input resolution, normalised as requested
      ("clip": one min-max over the whole clip, so a frame that mattered little stays faint;
      "frame": per-frame min-max; "none": unnormalised);
    - ``raw`` ``[T, h, w]``: unnormalised maps at the resolution the method works at (the layer's
      resolution for the CAM methods, the input's for gradient methods, ``1 x 1`` for occlusion);
    - ``frame_importance`` ``[T]``: how much each frame counted (see each method);
    - ``score``: softmax probability of ``target``; ``probs``: all class probabilities;
    - ``target``: the class explained; ``class_name``: its name when the model names classes;
    - ``method`` and ``options``: what was run, with every option used (and results such as
      integrated gradients' ``completeness_error``).

    For a batch ``[B, T, 3, H, W]`` every array gains a leading ``B`` axis, and ``score``,
    ``target`` and ``class_name`` become per-clip arrays/lists. :meth:`unbatch` splits it.
    """

    maps: np.ndarray
    raw: np.ndarray
    frame_importance: np.ndarray
    score: Any
    target: Any
    method: str
    options: dict = field(default_factory=dict)
    class_name: Any = None
    probs: np.ndarray | None = None
    normalize: str = "clip"
    batched: bool = False

    def unbatch(self) -> list[Explanation]:
        """One :class:`Explanation` per clip (a single clip's explanation gives a list of one)."""
        if not self.batched:
            return [self]
        out = []
        for i in range(self.maps.shape[0]):
            opts = {k: (v[i] if isinstance(v, list) and len(v) == self.maps.shape[0] and k in _PER_CLIP else v)
                    for k, v in self.options.items()}
            out.append(Explanation(
                self.maps[i], self.raw[i], self.frame_importance[i], float(self.score[i]), int(self.target[i]),
                self.method, opts, None if self.class_name is None else self.class_name[i],
                None if self.probs is None else self.probs[i], self.normalize, False))
        return out

    def __repr__(self) -> str:
        return (f"Explanation(method={self.method!r}, target={self.target!r}, class_name={self.class_name!r}, "
                f"score={self.score!r}, maps={tuple(self.maps.shape)}, raw={tuple(self.raw.shape)}, "
                f"normalize={self.normalize!r})")


# Options that hold one value per clip in a batched explanation.
_PER_CLIP = {"completeness_error", "logit_difference", "window_drops"}


@dataclass
class _Result:
    raw: torch.Tensor               # [B, T, h, w]
    frame_importance: torch.Tensor  # [B, T]
    logits: torch.Tensor            # [B, C] of the clip itself
    target: torch.Tensor            # [B] long
    extra: dict = field(default_factory=dict)


# -- small helpers shared by the methods -------------------------------------------------------
def model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def wide(t: torch.Tensor) -> torch.Tensor:
    """Detached, and at least float32 (bf16 activations are widened; float64 stays float64)."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def normalisation_stats(model: nn.Module) -> tuple[list[float], list[float]]:
    """The per-channel mean and std the model's input was normalised with (from its config)."""
    config = getattr(model, "config", None) or {}
    if "mean" not in config or "std" not in config:
        raise ExplainError("this baseline needs the input normalisation: the model has no config mean/std")
    return list(config["mean"]), list(config["std"])


def black_frame(model: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """A black frame in the model's normalised input space, ``(0 - mean) / std``, shaped like ``like``
    (for a motion or flow stream: no motion)."""
    mean, std = normalisation_stats(model)
    value = -torch.tensor(mean, dtype=like.dtype, device=like.device) / torch.tensor(
        std, dtype=like.dtype, device=like.device)
    value = value.repeat(like.shape[-3] // 3)   # one copy per input stream
    return value.view(-1, 1, 1).expand(like.shape).clone()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of the last two axes of ``x`` (any leading shape), edges replicated
    (OpenCV on the CPU; the result has ``x``'s dtype and device and no gradient)."""
    if sigma <= 0:
        return x.clone()
    planes = x.detach().to("cpu", torch.float32).numpy()
    return torch.from_numpy(blur_planes(planes, sigma)).to(device=x.device, dtype=x.dtype)


def upsample(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, T, h, w]`` -> ``[B, T, H, W]`` by bilinear interpolation (uniform maps are broadcast)."""
    b, t, h, w = raw.shape
    if (h, w) == tuple(size):
        return raw
    if h == 1 and w == 1:
        return raw.expand(b, t, *size).clone()
    up = F.interpolate(raw.reshape(b * t, 1, h, w), size=size, mode="bilinear", align_corners=False)
    return up.reshape(b, t, *size)


def normalise(maps: torch.Tensor, mode: str) -> torch.Tensor:
    """Min-max normalise ``[B, T, H, W]`` maps per clip ("clip"), per frame ("frame") or not ("none")."""
    if mode == "none":
        return maps
    dims = (1, 2, 3) if mode == "clip" else (2, 3)
    lo = maps.amin(dim=dims, keepdim=True)
    hi = maps.amax(dim=dims, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(maps))


def auto_chunk(frames: int, height: int, width: int, budget: int = 32) -> int:
    """Clips per model call so that a call holds about ``budget`` frames of 224 x 224."""
    per_clip = frames * height * width
    return max(1, int(budget * 224 * 224 // max(per_clip, 1)))


def check_clip(clip: Any, model: nn.Module | None = None) -> tuple[torch.Tensor, bool]:
    """Return ``clip`` as a ``[B, T, C, H, W]`` float tensor and whether it came batched; C is 3 per
    input stream of ``model`` (3 for an RGB model, 6 for motion+flow)."""
    channels = 3 * int(getattr(model, "streams", 1))
    if isinstance(clip, np.ndarray):
        clip = torch.from_numpy(clip)
    if not isinstance(clip, torch.Tensor):
        raise ExplainError(f"clip must be a tensor shaped [T, {channels}, H, W] or [B, T, {channels}, H, W], "
                           f"got {type(clip).__name__}")
    shape = tuple(clip.shape)
    if clip.dim() not in (4, 5) or shape[-3] != channels or any(s == 0 for s in shape):
        raise ExplainError(f"clip must be shaped [T, {channels}, H, W] or [B, T, {channels}, H, W] for this "
                           f"model, got {list(shape)}")
    if not clip.is_floating_point():
        raise ExplainError(f"clip must be a preprocessed float tensor (normalised frames), got dtype "
                           f"{str(clip.dtype).replace('torch.', '')}")
    batched = clip.dim() == 5
    return (clip if batched else clip[None]), batched


def _choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ExplainError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")
    return value


# -- model state -------------------------------------------------------------------------------
class _InPlace(Protocol):
    """A module with an ``inplace`` switch (ReLU, ReLU6, Dropout, ...)."""

    inplace: bool


@contextlib.contextmanager
def explaining(model: nn.Module, out_of_place: bool = False) -> Iterator[None]:
    """Eval mode, no parameter gradients, grad enabled, cuDNN off on CUDA; with ``out_of_place``
    also no in-place activations (a hooked layer's output must not be overwritten afterwards).

    Everything is restored on exit, even after an error: each module's train/eval flag, each
    parameter's ``requires_grad`` and each module's ``inplace`` flag.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    switchable = [cast(_InPlace, m) for m in model.modules()
                  if out_of_place and isinstance(getattr(m, "inplace", None), bool)]
    inplace = [(act, act.inplace) for act in switchable]
    device = model_device(model)
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for act, _ in inplace:
            act.inplace = False  # hooks and saved activations must not be overwritten in place
        # cuDNN's RNN refuses backward in eval mode.
        cudnn = torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else contextlib.nullcontext()
        with torch.enable_grad(), cudnn:
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)
        for act, flag in inplace:
            act.inplace = flag


# -- the base class ----------------------------------------------------------------------------
class Explainer:
    """One explanation method bound to a model: ``Method(model, **options).attribute(clip, target)``.

    Subclasses set ``name`` and ``defaults`` (the options they take) and implement ``_attribute``.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # Methods that hook a layer switch in-place activations off for the call (and back on after).
    out_of_place: ClassVar[bool] = False

    def __init__(self, model: nn.Module, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(self.defaults) or "none"
            raise ExplainError(f"{self.name} takes no option {unknown[0]!r}; its options are: {valid}")
        self.model = model
        self.options = {**self.defaults, **options}
        self._handles: list[Any] = []
        self._check_options()

    # Subclasses validate their options here (raising ExplainError).
    def _check_options(self) -> None:
        pass

    @property
    def classes(self) -> list[str] | None:
        classes = getattr(self.model, "classes", None)
        return list(classes) if classes is not None else None

    # -- the public call -----------------------------------------------------------------------
    def attribute(self, clip: Any, target: Any = None, normalize: str = "clip") -> Explanation:
        """Explain ``clip`` (``[T, 3, H, W]`` or ``[B, T, 3, H, W]``) for ``target`` (default: predicted)."""
        _choice("normalize", normalize, NORMALIZE)
        x, batched = check_clip(clip, self.model)
        x = x.detach().to(device=model_device(self.model), dtype=model_dtype(self.model))
        wanted = self._check_target(target, x.shape[0])
        try:
            with explaining(self.model, self.out_of_place):
                result = self._attribute(x, wanted)
        finally:
            self._remove_hooks()
        return self._pack(result, x, batched, normalize)

    __call__ = attribute

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> _Result:
        raise NotImplementedError

    # -- hooks ---------------------------------------------------------------------------------
    def _hook(self, handle: Any) -> Any:
        self._handles.append(handle)
        return handle

    def _remove_hooks(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    # -- targets -------------------------------------------------------------------------------
    def _num_classes(self) -> int | None:
        classes = self.classes
        return len(classes) if classes is not None else None

    def _target_error(self, value: Any, n: int | None) -> ExplainError:
        classes = self.classes
        names = f" ({', '.join(f'{i}={c}' for i, c in enumerate(classes))})" if classes else ""
        valid = f"0..{n - 1}{names}" if n is not None else "a class index"
        return ExplainError(f"target {value!r} does not exist: valid targets are {valid}")

    def _check_target(self, target: Any, batch: int) -> torch.Tensor | None:
        """Validate an explicit target (index, class name, or one per clip) -> ``[B]`` long or None."""
        if target is None:
            return None
        n = self._num_classes()
        items = target.tolist() if isinstance(target, (torch.Tensor, np.ndarray)) else target
        if not isinstance(items, (list, tuple)):
            items = [items]
        if len(items) not in (1, batch):
            raise ExplainError(f"target gives {len(items)} classes for a batch of {batch} clips; "
                               f"give one class, or one per clip")
        out = []
        for item in items:
            if isinstance(item, str):
                if not self.classes or item not in self.classes:
                    raise self._target_error(item, n)
                item = self.classes.index(item)
            if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
                raise self._target_error(item, n)
            if item < 0 or (n is not None and item >= n):
                raise self._target_error(int(item), n)
            out.append(int(item))
        if len(out) == 1:
            out = out * batch
        return torch.tensor(out, dtype=torch.long, device=model_device(self.model))

    def _resolve_target(self, target: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        """The explicit target, or the predicted class of each clip."""
        if target is None:
            return logits.detach().argmax(dim=1)
        if int(target.max()) >= logits.shape[1]:
            raise self._target_error(int(target.max()), logits.shape[1])
        return target

    @staticmethod
    def _select(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each clip's target logit ``[B]``; their sum is what gets differentiated (clips are independent)."""
        return logits.gather(1, target.view(-1, 1)).squeeze(1)

    # -- results -------------------------------------------------------------------------------
    def _shown(self, raw: torch.Tensor) -> torch.Tensor:
        """What ``maps`` show of ``raw`` before upsampling and normalisation (here: all of it)."""
        return raw

    def _pack(self, result: _Result, x: torch.Tensor, batched: bool, normalize: str) -> Explanation:
        raw = wide(result.raw)
        maps = normalise(upsample(self._shown(raw), (x.shape[-2], x.shape[-1])), normalize)
        probs = result.logits.detach().float().softmax(dim=1)
        target = result.target.detach().cpu()
        score = probs.gather(1, result.target.view(-1, 1)).squeeze(1).cpu().numpy()
        classes = self.classes
        names = [classes[int(t)] for t in target] if classes else None
        options = {**self.options, **result.extra}

        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy().astype(np.float32, copy=False)

        maps_np, raw_np, imp_np, probs_np = arr(maps), arr(raw), arr(result.frame_importance), arr(probs)
        if batched:
            return Explanation(maps_np, raw_np, imp_np, score.astype(np.float32), target.numpy(), self.name,
                               options, names, probs_np, normalize, True)
        options = {k: (v[0] if k in _PER_CLIP and isinstance(v, list) else v) for k, v in options.items()}
        return Explanation(maps_np[0], raw_np[0], imp_np[0], float(score[0]), int(target[0]), self.name,
                           options, names[0] if names else None, probs_np[0], normalize, False)
