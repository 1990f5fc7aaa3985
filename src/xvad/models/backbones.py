"""Per-frame CNN backbones: build one by name, with or without ImageNet weights.

Every backbone maps ``[N, 3, H, W]`` to a feature map ``[N, C, h, w]`` and records what the
model around it needs: channel count, input normalisation and the layer Grad-CAM looks at.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import WeightsError
from .efficientnet import EfficientNetLite0, bundled_weights_path
from .vgg import VGG, last_conv_relu

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's published ImageNet checkpoints; the 8 hex digits in the name are the SHA-256
# prefix that torch.hub checks after download.
VGG_URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
}


@dataclass(frozen=True)
class BackboneInfo:
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cam_layer: str  # module name inside the backbone, for Grad-CAM


class Backbone(nn.Module):
    """Wraps a feature extractor ``body`` and carries its :class:`BackboneInfo`."""

    def __init__(self, body: nn.Module, info: BackboneInfo) -> None:
        super().__init__()
        self.body = body
        self.info = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite0 without its classifier (the ``_fc`` layer is dropped)."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        net._fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def tiny_body(width: int = 16) -> nn.Sequential:
    """A three-conv CNN (stride 4) for tests and the synthetic demo."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(),
    )


BACKBONES = ("vgg19", "vgg16", "efficientnet_lite0", "tiny")


def _read_state_dict(path: str) -> dict:
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say so in one line
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({type(exc).__name__})") from None
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd


def download_weights(url: str) -> dict:
    """Fetch a checkpoint through torch.hub (cached, SHA-256 prefix checked)."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True,
                                                  weights_only=True, progress=True)
    except Exception as exc:
        name = url.rsplit("/", 1)[-1]
        raise WeightsError(
            f"could not download ImageNet weights from {url} ({type(exc).__name__}: {exc}); "
            f"download {name} elsewhere and pass it with --weights /path/to/{name} "
            f"(Python: weights='/path/to/{name}')") from None


def _load_strict(module: nn.Module, sd: dict, source: str) -> None:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise WeightsError(f"{source}: weights do not match {type(module).__name__}: "
                           f"{' '.join(line.strip() for line in first[:3])[:300]}") from None


def build_backbone(name: str, weights: str | None = None) -> Backbone:
    """Build backbone ``name`` with ``weights``: None (random), "imagenet" or a file path."""
    if weights in ("none", ""):
        weights = None
    if name in VGG_URLS:
        vgg = VGG(name)
        if weights is not None:
            sd = download_weights(VGG_URLS[name]) if weights == "imagenet" else _read_state_dict(weights)
            _load_strict(vgg, sd, weights)
        info = BackboneInfo(512, IMAGENET_MEAN, IMAGENET_STD, f"body.{last_conv_relu(vgg.features)}")
        return Backbone(vgg.features, info)
    if name == "efficientnet_lite0":
        lite = EfficientNetLite0()
        if weights is not None:
            path = bundled_weights_path() if weights == "imagenet" else weights
            _load_strict(lite, _read_state_dict(path), path)
        # Trained in TensorFlow on inputs scaled to [-1, 1].
        return Backbone(_LiteFeatures(lite), BackboneInfo(1280, (0.5,) * 3, (0.5,) * 3, "body.net._head_act"))
    if name == "tiny":
        if weights is not None:
            raise WeightsError("backbone 'tiny' has no pretrained weights; use weights=None")
        body = tiny_body()
        return Backbone(body, BackboneInfo(64, IMAGENET_MEAN, IMAGENET_STD, f"body.{len(body) - 1}"))
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
