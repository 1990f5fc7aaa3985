"""xvad: explainable real-time video anomaly detection with a CNN + RNN clip classifier.

Main entry points: ``CRNN`` (the model), ``load_model`` / ``save_model`` (checkpoints),
``read_clip`` (a video as the tensor a model expects) and, in submodules, training
(``xvad.train``), explanations (``xvad.explain``) and rendering (``xvad.render``).
"""
__version__ = "0.1.0"

from .checkpoint import load_model, save_model  # noqa: E402
from .models import CRNN  # noqa: E402
from .video import VideoError, read_clip  # noqa: E402

__all__ = ["CRNN", "VideoError", "load_model", "read_clip", "save_model", "__version__"]
