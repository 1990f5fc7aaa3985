"""The report's plain words: what the model is, what its pictures mean, what the streams said, and the
headline; every figure in them comes from the values the page was drawn with."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import __version__
from ..models.precision import resolve_precision
from ..video import input_streams

if TYPE_CHECKING:
    from ..models import CRNN
    from .figures import Contours

SEEN = {"rgb": "frame", "motion": "frame differences", "flow": "optical flow"}   # what the backbone sees
SHOWN = {"rgb": "frames", "motion": "motion images", "flow": "optical-flow images"}

VIEWS = {"rgb": "the frames themselves",
         "motion": "what changed between each frame and the one just after it",
         "flow": "where each part of the picture moved to in the next frame (optical flow)"}


def seeing(streams: list[str]) -> str:
    """What a model that does not look at frames alone sees, in plain words."""
    views = [VIEWS[s] for s in streams]
    listed = views[0] if len(views) == 1 else ", ".join(views[:-1]) + " and " + views[-1]
    adds = {1: "", 2: " Each map adds up both.", 3: " Each map adds up all three."}[len(streams)]
    if "rgb" not in streams:
        return (f"This model does not look at the pictures themselves but at {listed}.{adds} The maps are "
                "drawn on the frames a person would see, but they point at movement: a still person in a "
                "bright region did not move the score.")
    return (f"This model looks at {listed}.{adds} The maps are drawn on the frames a person would see; "
            "they can point at movement or at still parts of the scene.")


def contour_words(contours: Contours) -> str:
    """What the white contours enclose, said from the rule that drew them."""
    if contours.mode == "top":
        return f"The white contours enclose the top {contours.q:g} % of that map over the whole window."
    return ("The white contours enclose the part of that map above Otsu's threshold, one threshold for "
            "the whole window.")


def meaning(config: dict, contours: Contours) -> list[str]:
    """What the pictures mean, in plain words, for a model with ``config`` and maps outlined by ``contours``."""
    streams = input_streams(config.get("input", "rgb"))
    text = [
        "Grad-CAM (red = strong) shows the regions of each frame whose features pushed the score of the "
        "reported class up, at the resolution of the network's last convolutional layer (coarse by design). "
        + contour_words(contours),
        "Saliency shows the pixels whose small changes would change the score the most. It is finer but noisier.",
    ]
    if streams != ["rgb"]:
        text.append(seeing(streams))
    if config.get("temporal") == "pool":
        text.append("Frame importance says how much each frame contributed to the score (Grad-CAM's gradient "
                    "x activation summed over the frame). The model averages the frames and also keeps, for "
                    "each feature, its strongest frame, so one or two frames can carry most of the score.")
    else:
        text.append("Frame importance says how much each frame contributed to the score (Grad-CAM's gradient "
                    "x activation summed over the frame). The model reads frames in order through a recurrent "
                    "layer, so later frames often weigh more.")
    text.append("These maps show what the model used, not what happened. A bright region is not proof of an "
                "incident, and a faint one does not prove its absence. The model can be wrong, and it can be "
                "right for the wrong reason, such as a camera or a scene that looked like the training "
                "footage. A person must watch the footage before acting.")
    return text


def architecture(config: dict) -> str:
    """One line: what the network is."""
    streams = input_streams(config.get("input", "rgb"))
    seen = " and ".join(SEEN[s] for s in streams)
    heads = "linear head" if len(streams) == 1 else "a linear head per stream, probabilities averaged"
    over = (f"mean and max over {config['frames']} frames, {heads}" if config.get("temporal") == "pool"
            else f"GRU({config['hidden']}) over {config['frames']} frames, MLP head")
    where = " of each frame's square around what moved" if config.get("crop") == "motion" else ""
    return (f"{config['backbone']} per {seen}{where} ({config['weights']} weights), {config['pooling']}-pooled, "
            f"{over}")


LEAN = 0.5   # a stream leans towards the class when its own probability passes this


def stream_votes(votes: list[tuple[str, float]], class_name: str) -> str:
    """One sentence on what each stream's head said about a window, whose score is their mean."""
    said = ", ".join(f"{SHOWN[name]} {p:.2f}" for name, p in votes)
    above = [SHOWN[name] for name, p in votes if p > LEAN]
    if 0 < len(above) < len(votes):
        verdict = (f"They disagree: only the {' and '.join(above)} lean towards {class_name}, "
                   "so weigh this alert with care.")
    else:
        verdict = "They agree."
    return (f"Each stream's own probability of {class_name} in the peak window: {said}. The peak window score is "
            f"their mean. {verdict}")


def headline(alerts: int, explained: int, open_ids: Sequence[int], peak: float, threshold: float) -> str:
    """The verdict at the top: how many alerts the video raised and how many are explained below."""
    if not alerts:
        return f"No alert raised. Peak score {peak:.2f}, threshold {threshold:.2f}."
    counted = f"{alerts} alert{'s' if alerts != 1 else ''} raised"
    if explained == alerts:
        shown = "explained below" if alerts == 1 else f"all {alerts} explained below"
    elif explained == 0:
        shown = "none explained below"
    else:
        shown = f"the {explained} highest explained below" if explained > 1 else "the highest explained below"
    still = "".join(f" Alert {i} was still on when the video ended." for i in open_ids)
    return f"{counted}; {shown}. Peak score {peak:.2f}.{still}"


def maps_precision(model: CRNN, map_precision: str | None) -> str:
    """The precision the maps are drawn at ("fp32" or "bf16"): ``map_precision``, else the model's own."""
    return resolve_precision(map_precision or model.config["precision"], model.device)


def model_card(model: CRNN, map_precision: str | None = None) -> list[tuple[str, str]]:
    """The model's rows for the page: checkpoint, version, architecture, input, classes, precision, metrics."""
    cfg, extra = model.config, getattr(model, "extra", {}) or {}
    metrics = extra.get("metrics") or {}
    maps = maps_precision(model, map_precision)
    rows = [("checkpoint", f"{os.path.basename(getattr(model, 'checkpoint_path', '') or 'in memory')} "
                           f"(id {getattr(model, 'checkpoint_id', 'n/a')})"),
            ("xvad version", __version__),
            ("architecture", architecture(cfg)),
            ("input", f"{cfg['frames']} {' + '.join(SHOWN[s] for s in input_streams(cfg.get('input', 'rgb')))} "
                      f"at {cfg['size']} px, "
                      + (f"{cfg['fps']:g} fps" if cfg.get('fps') else "spread over the clip")
                      + (", each frame's square around what moved in its last frames (motion crop)"
                         if cfg.get("crop") == "motion" else f", crop {cfg.get('crop')}")),
            ("classes", ", ".join(cfg["classes"])),
            ("precision", f"{model.precision} for the scores, {maps} for the maps")]
    if metrics:
        rows.append(("validation", ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))))
    if extra.get("card"):
        rows.append(("model card", str(extra["card"])))
    return rows
