"""A frozen backbone with its batch norms folded into the convolutions before them, for inference.

In eval mode a batch norm is a fixed per-channel scale and shift, so it can be merged into the
preceding convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``): the same
function, one pass over memory fewer per layer. On EfficientNet-Lite0 in bf16 this makes the
backbone 1.2 to 1.5 times faster on the CPU, by run (``bench/bench_frame_cost.py``); in fp32 the
features agree to 1e-5 of their range. :meth:`xvad.models.CRNN.feature_maps` runs the folded copy
whenever no gradient is wanted, and the original modules (whose parameters checkpoints and
explanations use) otherwise.

On the CPU the copy also fuses each folded convolution with the ReLU6 after it
(:class:`ConvReLU6`): oneDNN clamps the output as the convolution writes it, where the clamp was a
pass of its own over every activation (in bf16 a quarter of the backbone's time; with the calls
of at most 8 images and the allocator setting, the backbone takes half the CPU it took before:
``bench/bench_backbone_memory.py``).
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .efficientnet import EfficientNetLite0, MBConv, SameConv2d

# oneDNN's convolution with an activation applied to its output: the op torch's own compiler fuses
# convolutions and activations into on the CPU. None where torch was built without oneDNN.
_FUSED = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None) \
    if torch.backends.mkldnn.is_available() else None


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (in eval mode) in which every batch norm that directly follows a
    convolution is merged into it and replaced by ``nn.Identity``: in ``nn.Sequential`` containers
    (VGG, the tiny test backbone) and in EfficientNet-Lite0's named pairs."""
    folded = copy.deepcopy(module).eval()
    for sub in list(folded.modules()):
        for conv, bn in _pairs(sub):
            merged = fuse_conv_bn_eval(getattr(sub, conv), getattr(sub, bn))
            setattr(sub, conv, merged)
            setattr(sub, bn, nn.Identity())
        for conv, act in _activated(sub):
            if isinstance(getattr(sub, act), nn.ReLU6) and type(getattr(sub, conv)) is SameConv2d:
                setattr(sub, conv, ConvReLU6(getattr(sub, conv)))
                setattr(sub, act, nn.Identity())
    return folded


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Names of the (convolution, batch norm) children of ``module`` that can be folded."""
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        return [(a, b) for a, b in zip(names, names[1:])
                if isinstance(module._modules[a], nn.Conv2d) and isinstance(module._modules[b], nn.BatchNorm2d)]
    if isinstance(module, MBConv):
        return ([("_expand_conv", "_bn0")] if module.expand else []) + [("_depthwise_conv", "_bn1"),
                                                                        ("_project_conv", "_bn2")]
    if isinstance(module, EfficientNetLite0):
        return [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")]
    return []


def _activated(module: nn.Module) -> list[tuple[str, str]]:
    """Names of the (convolution, activation) children of ``module`` whose batch norm between them
    was folded away (the convolution's output goes straight into the activation)."""
    if isinstance(module, MBConv):
        return ([("_expand_conv", "_act0")] if module.expand else []) + [("_depthwise_conv", "_act1")]
    if isinstance(module, EfficientNetLite0):
        return [("_conv_stem", "_stem_act"), ("_conv_head", "_head_act")]
    return []


class ConvReLU6(nn.Module):
    """``relu6(conv(x))`` for a SAME convolution, in one oneDNN call on the CPU (at autocast's dtype
    when autocast is on, as the convolution alone would run); the two ops elsewhere."""

    def __init__(self, conv: SameConv2d) -> None:
        super().__init__()
        self.conv = conv
        self._cast: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor | None]] = {}   # weights per dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _FUSED is None or x.device.type != "cpu" or torch.is_grad_enabled() or torch.jit.is_tracing():
            return F.relu6(self.conv(x))
        if torch.is_autocast_enabled("cpu"):
            x = x.to(torch.get_autocast_dtype("cpu"))
        x, padding = self.conv.padded(x)
        c = self.conv
        if x.dtype not in self._cast:    # the copy is remade when the weights change (FoldedBackbone)
            self._cast[x.dtype] = (c.weight.detach().to(x.dtype),
                                   None if c.bias is None else c.bias.detach().to(x.dtype))
        weight, bias = self._cast[x.dtype]
        return _FUSED(x, weight, bias, list(padding), list(c.stride), list(c.dilation), c.groups,
                      "hardtanh", [0.0, 6.0], "")


class Derived:
    """Something made from a backbone when first asked for (:meth:`made`) and made again when the
    backbone, its weights, device or dtype change (a checkpoint loaded into it, ``.to()``); thread-safe.
    A copied or pickled model makes its own when it first needs it."""

    def __init__(self) -> None:
        self._made: Any = None
        self._stamp: tuple | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> Derived:
        return type(self)()

    def __getstate__(self) -> dict:
        return {}                   # a pickled model (torch.save of the module) makes it again when loaded

    def __setstate__(self, state: dict) -> None:
        self.__init__()             # type: ignore[misc]

    def made(self, backbone: nn.Module, make: Callable[[], Any], *also: Any) -> Any:
        """What ``make()`` made for ``backbone`` as it stands (and for ``also``), made now if new."""
        stamp = (*also, *_stamp(backbone))
        with self._lock:
            if self._made is None or stamp != self._stamp:
                self._made = make()
                self._stamp = stamp
            return self._made


class FoldedBackbone(Derived):
    """The folded copy of a frozen backbone (:func:`fold_batch_norms`), made when first called."""

    def __call__(self, backbone: nn.Module, frames: torch.Tensor) -> torch.Tensor:
        """``backbone(frames)``, computed by its folded copy (by the backbone itself when it has no
        batch norm to fold, as VGG: no copy of its weights)."""
        def fold() -> nn.Module:
            if not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules()):
                return backbone
            with torch.inference_mode(False), torch.no_grad():
                return fold_batch_norms(backbone)

        return self.made(backbone, fold)(frames)


def _stamp(backbone: nn.Module) -> tuple:
    """What a folded copy depends on: the backbone and each of its tensors' identity, storage,
    version (changed by in-place writes such as ``load_state_dict``), device and dtype."""
    return (id(backbone), *((id(t), t.data_ptr(), _version(t), t.device, t.dtype)
                            for t in (*backbone.parameters(), *backbone.buffers())))


def _version(t: torch.Tensor) -> int:
    """A tensor's in-place write counter (inference tensors, made under ``torch.inference_mode``, keep
    none: their storage address stands for them)."""
    return -1 if t.is_inference() else t._version
