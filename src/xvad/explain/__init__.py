"""Explanations of the CNN + RNN clip classifier: where in each frame, and which frames.

``explain(model, clip, method="gradcam")`` returns an :class:`Explanation` with ``[T, H, W]`` maps
(``[B, T, H, W]`` for a batch of clips), per-frame importance and the target's score. Each method
is also a class with Captum's shape of API: ``GradCAM(model, layer=...).attribute(clip, target=1)``.

Methods (``METHODS``): gradcam, gradcam++, layercam (class activation maps at a backbone layer);
saliency, smoothgrad, integrated_gradients, guided_backprop, guided_gradcam (input gradients);
occlusion (blanking frames out). Checks of the explanations themselves live beside them:
:func:`sanity_check` (model randomisation), :func:`faithfulness` (deletion / insertion) and
:mod:`.localisation` (pointing game, energy in a known box).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .base import NORMALIZE, Explainer, ExplainError, Explanation
from .cam import POOLINGS, GradCAM, GradCAMPlusPlus, LayerCAM
from .faithfulness import Faithfulness, faithfulness
from .gradients import GuidedBackprop, GuidedGradCAM, IntegratedGradients, Saliency, SmoothGrad
from .localisation import box_area_share, energy_in_box, localisation, pointing_game
from .occlusion import Occlusion
from .sanity import sanity_check, spearman

METHODS: dict[str, type[Explainer]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, LayerCAM, Saliency, SmoothGrad, IntegratedGradients,
                              GuidedBackprop, GuidedGradCAM, Occlusion)
}


def get_method(method: str) -> type[Explainer]:
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[method]


def explain(model: nn.Module, clip: Any, method: str = "gradcam", target: Any = None, normalize: str = "clip",
            **options: Any) -> Explanation:
    """Explain ``model``'s output for ``target`` on ``clip`` (``[T, 3, H, W]`` or ``[B, T, 3, H, W]``).

    ``target``: class index or name (default: the predicted class; for binary models 1 = alert).
    ``normalize``: "clip" (one min-max over the clip), "frame" (per frame) or "none".
    ``options`` go to the method (e.g. ``layer``, ``pooling``, ``n_samples``, ``steps``, ``baseline``).
    """
    return get_method(method)(model, **options).attribute(clip, target=target, normalize=normalize)


__all__ = [
    "METHODS", "NORMALIZE", "POOLINGS", "Explainer", "ExplainError", "Explanation", "Faithfulness", "GradCAM",
    "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM", "IntegratedGradients", "LayerCAM", "Occlusion",
    "Saliency", "SmoothGrad", "box_area_share", "energy_in_box", "explain", "faithfulness", "get_method",
    "localisation", "pointing_game", "sanity_check", "spearman",
]
