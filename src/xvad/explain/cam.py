"""Class activation maps at a layer of the per-frame CNN: Grad-CAM, Grad-CAM++ and LayerCAM.

The backbone runs on all ``B * T`` frames of a clip batch in one call, so the hooked layer's
output is ``[B*T, C, h, w]``: one forward pass and one backward pass explain every frame.

Grad-CAM's channel weights are gradients averaged over space. With frames there is a choice,
named by ``pooling``:

- ``"frame"`` (default): each frame's weights are the mean of its own gradients over ``h, w``,
  the per-frame (TimeDistributed) adaptation: every frame is explained as the image it is;
- ``"clip"``: the weights are the mean over ``T, h, w``, shared by all frames of a clip, as a 3-D
  CNN's Grad-CAM would pool over its spatio-temporal feature volume.

Frame importance for the CAM methods is the per-frame sum of gradient x activation at the layer:
the first-order contribution of that frame's features to the target logit.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Explainer, ExplainError, _choice, _Result, wide

POOLINGS = ("frame", "clip")


def layer_names(model: nn.Module, limit: int = 6) -> list[str]:
    """The last few convolution/activation module names, for error messages."""
    kinds = (nn.Conv2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Hardswish)
    names = [n for n, m in model.named_modules() if isinstance(m, kinds) and n]
    inside = [n for n in names if n.startswith("backbone.")]
    names = inside or names
    return names[-limit:]


def resolve_layer(model: nn.Module, layer: Any) -> tuple[str, nn.Module]:
    """``layer`` (a module, its name in the model, or its name inside the backbone) -> (name, module).

    None means the backbone's default CAM layer (``"backbone." + backbone.info.cam_layer``).
    """
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer and name:
                return name, module
        raise ExplainError(f"layer {type(layer).__name__} is not a module of this model")
    if layer is None:
        info = getattr(getattr(model, "backbone", None), "info", None)
        if info is None:
            raise ExplainError("the model names no default CAM layer (backbone.info.cam_layer); pass layer=")
        layer = f"backbone.{info.cam_layer}"
    if not isinstance(layer, str):
        raise ExplainError(f"layer must be a module name, got {type(layer).__name__}")
    for name in (layer, f"backbone.{layer}"):
        if name and name in modules:
            return name, modules[name]
    raise ExplainError(f"layer {layer!r} does not exist in the model; valid conv/activation layers include: "
                       f"{', '.join(layer_names(model))}")


class LayerCapture:
    """Forward hook keeping a layer's output, made differentiable when nothing upstream needs grad.

    With a frozen backbone and an input that needs no gradient the layer output has no graph; the
    hook then swaps in a detached copy that requires grad, so the backward pass stops at the layer.
    """

    def __init__(self, explainer: Explainer, name: str, module: nn.Module) -> None:
        self.name = name
        self.outputs: list[torch.Tensor] = []
        explainer._hook(module.register_forward_hook(self))

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ExplainError(f"layer {self.name!r} gives {shape}; CAM methods need a per-frame "
                               f"convolutional layer with output [frames, C, h, w]")
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
            self.outputs.append(output)
            return output
        self.outputs.append(output)
        return None

    def single(self) -> torch.Tensor:
        if len(self.outputs) != 1:
            raise ExplainError(f"layer {self.name!r} ran {len(self.outputs)} times in one forward pass; "
                               f"pick a layer that runs once")
        return self.outputs[0]


class _CAM(Explainer):
    """Shared mechanics: hook the layer, one forward, one backward, then ``cam(acts, grads)``."""

    defaults = {"layer": None, "pooling": "frame"}
    out_of_place = True

    def _check_options(self) -> None:
        if "pooling" in self.options:
            _choice("pooling", self.options["pooling"], POOLINGS)
        self.layer_name, self.layer = resolve_layer(self.model, self.options["layer"])
        self.options["layer"] = self.layer_name

    def _dims(self) -> tuple[int, ...]:
        """Axes of ``[B, T, C, h, w]`` that channel weights pool over."""
        return (3, 4) if self.options.get("pooling", "frame") == "frame" else (1, 3, 4)

    def _forward(self, x: torch.Tensor, target: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        capture = LayerCapture(self, self.layer_name, self.layer)
        logits = self.model(x)
        return capture.single(), logits, self._resolve_target(target, logits)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor | None) -> _Result:
        acts, logits, target = self._forward(x, target)
        (grads,) = torch.autograd.grad(self._select(logits, target).sum(), acts)
        return self._cam_result(acts, grads, logits, target, x.shape[0])

    def _cam_result(self, acts: torch.Tensor, grads: torch.Tensor, logits: torch.Tensor,
                    target: torch.Tensor, batch: int) -> _Result:
        a, g = wide(acts), wide(grads)
        # [B*T*streams, C, h, w] -> [B, T, streams*C, h, w]: a frame's streams share one pixel grid, so
        # their channels count as the frame's channels and its map sums over them
        frames = acts.shape[0] // (batch * int(getattr(self.model, "streams", 1)))
        a = a.reshape(batch, frames, -1, *a.shape[2:])
        g = g.reshape(batch, frames, -1, *g.shape[2:])
        return _Result(self.cam(a, g), (a * g).sum((2, 3, 4)), logits, target)

    def cam(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, h, w]`` activations and gradients -> ``[B, T, h, w]`` map."""
        return torch.relu((self.weights(acts, grads) * acts).sum(2))

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GradCAM(_CAM):
    """Grad-CAM (Selvaraju et al. 2017): ReLU of the channel sum of activations weighted by mean gradients."""

    name = "gradcam"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(self._dims(), keepdim=True)


class GradCAMPlusPlus(_CAM):
    """Grad-CAM++ (Chattopadhyay et al. 2018): weights sum positive gradients, each scaled by alpha.

    ``alpha = g^2 / (2 g^2 + sum(A) g^3)`` with the sum over the pooled axes (the closed form for an
    exponentiated score, written with the score's own gradient powers); 0 where undefined.
    """

    name = "gradcam++"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        dims = self._dims()
        g2 = grads.pow(2)
        denom = 2 * g2 + acts.sum(dims, keepdim=True) * grads.pow(3)
        ok = denom != 0
        alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g2))
        return (alpha * torch.relu(grads)).sum(dims, keepdim=True)


class LayerCAM(_CAM):
    """LayerCAM (Jiang et al. 2021): ReLU of the channel sum of activations times positive gradients.

    Its weights are per location, so it has no pooling choice.
    """

    name = "layercam"
    defaults = {"layer": None}

    def cam(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return torch.relu((torch.relu(grads) * acts).sum(2))
