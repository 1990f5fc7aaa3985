"""VGG16/VGG19 built from a config list, with torchvision's parameter names.

The names (``features.N``, ``classifier.{0,3,6}``) match torchvision's, so its ImageNet
checkpoints (e.g. ``vgg19-dcbb9e9d.pth``) load with ``strict=True``.
"""
from __future__ import annotations

import torch
from torch import nn

# Numbers are conv output channels, "M" is a 2x2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(config: list[int | str]) -> nn.Sequential:
    """Conv 3x3 + ReLU layers and max-pools, in the order the config lists them."""
    layers: list[nn.Module] = []
    channels = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """The full ImageNet classifier: ``features`` -> 7x7 average pool -> three linear layers."""

    def __init__(self, arch: str = "vgg19", num_classes: int = 1000) -> None:
        super().__init__()
        self.features = make_features(CONFIGS[arch])
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def last_conv_relu(features: nn.Sequential) -> str:
    """Name of the ReLU after the last conv (VGG19: conv5_4 + ReLU = ``features.35``)."""
    last = max(i for i, m in enumerate(features) if isinstance(m, nn.Conv2d))
    return str(last + 1)
