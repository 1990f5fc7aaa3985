"""Gradient methods: saliency, SmoothGrad, integrated gradients, guided backprop, guided Grad-CAM.

All differentiate the target class's logit with respect to the input clip ``[B, T, 3, H, W]``
and reduce the colour channels to give ``[B, T, H, W]`` maps at input resolution:

- saliency, SmoothGrad, guided backprop: maximum over channels of the absolute gradient;
- integrated gradients: sum over channels of the signed attribution (``raw``); its ``maps`` show
  the part chosen by ``sign`` ("positive" evidence for the target by default).

Frame importance: per-frame sum of ``|gradient x input|`` (SmoothGrad: averaged over its noisy
samples); integrated gradients: per-frame sum of the attributions, signed, so the frames add up
to ``f(clip) - f(baseline)`` for the target logit.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .base import Explainer, ExplainError, _choice, _Result, auto_chunk, black_frame, gaussian_blur, upsample, wide
from .cam import GradCAM, LayerCapture

IG_RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
IG_BASELINES = ("black", "blurred", "zero")
IG_SIGNS = ("positive", "absolute", "negative", "all")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ExplainError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield torch.arange(start, min(start + size, total))


class _Gradient(Explainer):
    """Input gradients of the target logit, one forward and one backward per call."""

    def _input_gradients(self, xs: torch.Tensor, target: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs = xs.detach().requires_grad_(True)
        logits = self.model(xs)
        target = self._resolve_target(target, logits)
        (grads,) = torch.autograd.grad(self._select(logits, target).sum(), xs)
        return grads, logits, target

    def _batch_size(self, x: torch.Tensor) -> int:
        size = self.options.get("batch_size")
        return int(size) if size else auto_chunk(*x.shape[1:2], *x.shape[-2:])

    def _check_batch_size(self) -> None:
        if self.options.get("batch_size") is not None:
            _positive_int("batch_size", self.options["batch_size"])


class Saliency(_Gradient):
    """Saliency (Simonyan et al. 2014): ``|d logit / d input|``, maximum over colour channels."""

    name = "saliency"

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> _Result:
        grads, logits, target = self._input_gradients(x, target)
        return _Result(grads.abs().amax(2), (grads * x).abs().sum((2, 3, 4)), logits, target)


class SmoothGrad(_Gradient):
    """SmoothGrad (Smilkov et al. 2017): saliency averaged over noisy copies of the clip.

    ``noise`` is the Gaussian noise's standard deviation as a fraction of the clip's value range
    (max - min); the ``n_samples`` noisy clips go through the model ``batch_size`` at a time (one
    forward and one backward per chunk), after one gradient-free forward for the target and score.
    The map is the channel maximum of the mean absolute gradient; ``seed`` fixes the noise.
    """

    name = "smoothgrad"
    defaults = {"n_samples": 16, "noise": 0.15, "seed": 0, "batch_size": None}

    def _check_options(self) -> None:
        _positive_int("n_samples", self.options["n_samples"])
        noise = self.options["noise"]
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
            raise ExplainError(f"noise must be a fraction >= 0 of the input range, not {noise!r}")
        self._check_batch_size()

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> _Result:
        with torch.no_grad():
            logits = self.model(x)
        target = self._resolve_target(target, logits)
        n = int(self.options["n_samples"])
        b = x.shape[0]
        sigma = float(self.options["noise"]) * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
        gen = torch.Generator(device=x.device).manual_seed(int(self.options["seed"]))
        mean_abs = torch.zeros_like(x)
        importance = x.new_zeros(x.shape[:2])
        for idx in _chunks(b * n, self._batch_size(x)):
            clip = (idx // n).to(x.device)
            noise = torch.randn((len(idx), *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
            xs = x[clip] + noise * sigma[clip].view(-1, 1, 1, 1, 1)
            grads, _, _ = self._input_gradients(xs, target[clip])
            mean_abs.index_add_(0, clip, grads.abs())
            importance.index_add_(0, clip, (grads * xs).abs().sum((2, 3, 4)))
        return _Result((mean_abs / n).amax(2), importance / n, logits, target)


def path_points(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] along the straight path and their quadrature weights."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    if rule == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[rule]
    return (np.arange(steps) + offset) / steps, np.full(steps, 1.0 / steps)


class IntegratedGradients(_Gradient):
    """Integrated gradients (Sundararajan et al. 2017) from ``baseline`` to the clip.

    ``baseline``: "black" (a black frame in normalised space, ``(0 - mean) / std`` per channel),
    "blurred" (the clip under a Gaussian blur of ``blur_sigma`` pixels, default a tenth of the
    frame side), "zero", or a tensor broadcastable to the clip. The path integral uses ``steps``
    points of the quadrature ``rule`` ("gausslegendre" by default, or "riemann_trapezoid" / "_left" /
    "_right" / "_middle"); every point of every clip goes through the model ``batch_size`` clips at a time.

    ``options["completeness_error"]`` is ``|sum(attributions) - (f(clip) - f(baseline))|`` for the
    target logit (``logit_difference`` holds the right-hand side): how far the quadrature is from
    exact. ``raw`` is the signed channel sum; ``maps`` show its ``sign`` part ("positive": evidence
    for the target, "negative", "absolute" or "all").
    """

    name = "integrated_gradients"
    defaults = {"steps": 32, "rule": "gausslegendre", "baseline": "black", "blur_sigma": None,
                "batch_size": None, "sign": "positive"}

    def _check_options(self) -> None:
        _choice("rule", self.options["rule"], IG_RULES)
        _positive_int("steps", self.options["steps"], 2 if self.options["rule"] == "riemann_trapezoid" else 1)
        _choice("sign", self.options["sign"], IG_SIGNS)
        baseline = self.options["baseline"]
        if not isinstance(baseline, (torch.Tensor, np.ndarray, float, int)) or isinstance(baseline, bool):
            _choice("baseline", baseline, IG_BASELINES)
        self._check_batch_size()

    def _baseline(self, x: torch.Tensor) -> torch.Tensor:
        baseline = self.options["baseline"]
        if isinstance(baseline, str):
            if baseline == "zero":
                return torch.zeros_like(x)
            if baseline == "black":
                return black_frame(self.model, x)
            sigma = self.options["blur_sigma"]
            sigma = max(x.shape[-2:]) / 10 if sigma is None else float(sigma)
            return gaussian_blur(x, sigma)
        base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
        try:
            return base.expand_as(x).clone()
        except RuntimeError:
            raise ExplainError(f"baseline of shape {list(base.shape)} does not broadcast to the clip "
                               f"{list(x.shape)}") from None

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> _Result:
        base = self._baseline(x)
        b = x.shape[0]
        with torch.no_grad():
            ends = self.model(torch.cat([x, base]))
        logits, base_logits = ends[:b], ends[b:]
        target = self._resolve_target(target, logits)
        steps = int(self.options["steps"])
        points, quadrature = path_points(steps, self.options["rule"])
        alphas = torch.as_tensor(points, dtype=x.dtype, device=x.device)
        weights = torch.as_tensor(quadrature, dtype=x.dtype, device=x.device)
        delta = x - base
        avg = torch.zeros_like(x)
        for idx in _chunks(b * steps, self._batch_size(x)):
            idx = idx.to(x.device)
            clip, k = idx // steps, idx % steps
            xs = base[clip] + alphas[k].view(-1, 1, 1, 1, 1) * delta[clip]
            grads, _, _ = self._input_gradients(xs, target[clip])
            avg.index_add_(0, clip, grads * weights[k].view(-1, 1, 1, 1, 1))
        attr = delta * avg
        diff = (self._select(logits, target) - self._select(base_logits, target)).detach()
        error = (attr.sum((1, 2, 3, 4)) - diff).abs()
        extra: dict[str, Any] = {"completeness_error": [float(e) for e in error],
                                 "logit_difference": [float(d) for d in diff]}
        if not isinstance(self.options["baseline"], str):
            extra["baseline"] = "tensor"
        return _Result(attr.sum(2), attr.sum((2, 3, 4)), logits, target, extra)

    def _shown(self, raw: torch.Tensor) -> torch.Tensor:
        sign = self.options["sign"]
        if sign == "all":
            return raw
        return {"positive": raw.clamp(min=0), "negative": (-raw).clamp(min=0), "absolute": raw.abs()}[sign]


# -- guided backpropagation --------------------------------------------------------------------
class _GuidedReLU(torch.autograd.Function):
    """ReLU (or ReLU6) whose backward also zeroes negative incoming gradients while ``switch.guided``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, upper: float | None, switch: GuidedReLUs) -> torch.Tensor:
        if upper is None:
            mask = x > 0
            out = x.clamp(min=0)
        else:
            mask = (x > 0) & (x < upper)
            out = x.clamp(0, upper)
        ctx.save_for_backward(mask)
        ctx.switch = switch
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        grad = grad * mask
        if ctx.switch.guided:
            grad = grad.clamp(min=0)
        return grad, None, None


_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


class GuidedReLUs(TorchFunctionMode):
    """While active, every ReLU-type call in a forward pass (``nn.ReLU``/``nn.ReLU6`` modules and the
    functional ``relu``/``relu6``/``hardtanh(0, x)`` calls, e.g. inside EfficientNet blocks) becomes a
    :class:`_GuidedReLU`. ``guided`` can be switched between backward passes of the same graph.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.guided = True

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        upper = self._upper(func, args, kwargs)
        if upper is not False:
            self.count += 1
            return _GuidedReLU.apply(args[0], upper, self)
        return func(*args, **kwargs)

    @staticmethod
    def _upper(func: Any, args: tuple, kwargs: dict) -> float | None | bool:
        """None for a ReLU, the cap for ReLU6-like clamps, False for anything else."""
        if func in _RELUS:
            return None
        if func is F.relu6:
            return 6.0
        if func is F.hardtanh:
            lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
            hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
            return float(hi) if lo == 0 else False
        return False


def _no_relus(name: str) -> ExplainError:
    return ExplainError(f"{name} needs ReLU activations (modules or functional relu/relu6); "
                        f"this model's forward pass has none")


class GuidedBackprop(_Gradient):
    """Guided backpropagation (Springenberg et al. 2015): every ReLU's backward also drops negative
    gradients. The map is the channel maximum of the absolute guided gradient."""

    name = "guided_backprop"

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> _Result:
        guided = GuidedReLUs()
        xs = x.detach().requires_grad_(True)
        with guided:
            logits = self.model(xs)
        if guided.count == 0:
            raise _no_relus(self.name)
        target = self._resolve_target(target, logits)
        (grads,) = torch.autograd.grad(self._select(logits, target).sum(), xs)
        return _Result(grads.abs().amax(2), (grads * x).abs().sum((2, 3, 4)), logits, target)


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM: the guided-backprop map times the Grad-CAM map upsampled to the input.

    One forward pass; two backward passes through it (plain ReLU gradients to the layer for
    Grad-CAM, guided ones to the input). Frame importance is Grad-CAM's.
    """

    name = "guided_gradcam"

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> _Result:
        guided = GuidedReLUs()
        guided.guided = False
        capture = LayerCapture(self, self.layer_name, self.layer)
        xs = x.detach().requires_grad_(True)
        with guided:
            logits = self.model(xs)
        if guided.count == 0:
            raise _no_relus(self.name)
        acts = capture.single()
        target = self._resolve_target(target, logits)
        score = self._select(logits, target).sum()
        (layer_grads,) = torch.autograd.grad(score, acts, retain_graph=True)
        guided.guided = True
        (grads,) = torch.autograd.grad(score, xs)
        cam = self._cam_result(acts, layer_grads, logits, target, x.shape[0])
        raw = wide(grads).abs().amax(2) * upsample(cam.raw, (x.shape[-2], x.shape[-1]))
        return _Result(raw, cam.frame_importance, logits, target)
