"""Models: backbones (VGG, EfficientNet-Lite0, tiny) and the CNN + RNN clip classifier."""
from .backbones import BACKBONES, Backbone, WeightsError, build_backbone
from .crnn import CRNN
from .precision import resolve_precision

__all__ = ["BACKBONES", "Backbone", "CRNN", "WeightsError", "build_backbone", "resolve_precision"]
