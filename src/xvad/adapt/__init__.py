"""Adapting a model to one camera from a few labelled clips (its reviewers' verdicts, or a folder):
the heads retrained on the base clips' pooled features plus the camera's, weighted, with the camera's
own threshold. :mod:`.pooled` is what the heads see, :mod:`.heads` how they train, :mod:`.base` the
base clips' features, :mod:`.core` the adaptation, :mod:`.offline` the command on a folder of clips."""
from .base import BaseFeatures, base_for, build_base, load_base, save_base
from .core import Adaptation, adapt, choose_threshold, clip_scores, retrain

__all__ = ["Adaptation", "BaseFeatures", "adapt", "base_for", "build_base", "choose_threshold", "clip_scores",
           "load_base", "retrain", "save_base"]
