"""What the alert page shows of an alert's explanation: the artifacts the report worker wrote beside the
clip (``explanation.json``, ``maps.png``, key frames), the score over time as an SVG chart, and the
model card and the plain words of the decision report (:mod:`xvad.report.text`)."""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from ..service.media import media_path

log = logging.getLogger(__name__)

__all__ = ["explanation", "media_path", "model_for", "model_words", "score_chart"]

CHART_W, CHART_H, PAD = 640, 140, 28
_models: dict[str, Any] = {}
_lock = threading.Lock()


def explanation(media_root: str, alert: dict) -> dict | None:
    """The alert's explanation (the overlay's data), or None while it is pending or if it is unreadable."""
    path = media_path(media_root, alert, "explanation")
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        log.warning("alert %s: cannot read %s: %s", alert["id"], path, exc)
        return None
    return data if isinstance(data, dict) and data.get("version") == 1 else None


def score_chart(data: dict) -> dict:
    """The windows' scores over the clip as SVG coordinates: a polyline, the threshold line, the axes."""
    windows = data.get("windows") or []
    duration = float((data.get("clip") or {}).get("duration") or 0) or max((w["time"] for w in windows), default=1.0)
    duration = max(duration, 1e-6)

    def x(t: float) -> float:
        return round(PAD + (CHART_W - 2 * PAD) * min(max(t / duration, 0.0), 1.0), 1)

    def y(p: float) -> float:
        return round(CHART_H - PAD - (CHART_H - 2 * PAD) * min(max(p, 0.0), 1.0), 1)

    threshold = float(data.get("threshold", 0.5))
    ticks = [round(duration * i / 4, 1) for i in range(5)]
    return {"width": CHART_W, "height": CHART_H, "points": " ".join(f"{x(w['time'])},{y(w['score'])}" for w in windows),
            "threshold": threshold, "threshold_y": y(threshold), "left": PAD, "right": CHART_W - PAD,
            "top": y(1.0), "bottom": y(0.0), "ticks": [{"x": x(t), "label": f"{t:g} s"} for t in ticks],
            "peak": data.get("peak") or {}, "windows": len(windows)}


def model_for(service: Any, settings: Any, alert: dict) -> Any:
    """The model that raised ``alert`` (the running service's, or loaded from the camera's checkpoint
    once and kept), or None when the checkpoint it was raised with is not at hand any more."""
    wanted = alert.get("checkpoint_id")
    for scorer in (getattr(service, "scorers", None) or {}).values():
        if getattr(scorer.model, "checkpoint_id", None) == wanted:
            return scorer.model
    try:
        path = settings.camera(alert["camera"]).model
    except Exception:   # noqa: BLE001 - a camera no longer configured: the shipped model may still be it
        path = None
    version = alert.get("model_version") or ""
    if version.startswith("v") and version[1:].isdigit():   # raised by an adopted version: its own file
        from ..service.versions import version_file
        path = os.path.join(str(settings.data), version_file(alert["camera"], int(version[1:])))
    key = path or "(shipped)"
    with _lock:
        if key not in _models:
            from ..checkpoint import load_model
            try:
                _models[key] = load_model(path)
            except Exception as exc:   # noqa: BLE001 - the page shows the alert without the card
                log.warning("cannot load the model %s for the model card: %s", key, exc)
                _models[key] = None
        model = _models[key]
    return model if model is not None and getattr(model, "checkpoint_id", None) == wanted else None


def model_words(model: Any, data: dict | None) -> dict:
    """The model card rows, what the maps mean, what each stream said, what the model sees."""
    from ..report.figures import Contours
    from ..report.text import meaning, model_card, stream_votes

    out: dict[str, Any] = {"card": [], "meaning": [], "votes": ""}
    if model is not None:
        out["card"] = model_card(model, "fp32")
        out["meaning"] = meaning(model.config, Contours())
    if data and data.get("votes"):
        out["votes"] = stream_votes([(v["stream"], float(v["p"])) for v in data["votes"]],
                                    data.get("class_name") or "the alert's class")
    return out
