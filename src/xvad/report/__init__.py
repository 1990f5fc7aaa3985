"""The decision report: one self-contained HTML file a person reviews an automated alert with.

GDPR Article 22 asks that an automated decision affecting a person be open to human review. The
report shows the video's score over time and every alert, and for the highest-scoring alerts the key
frames with Grad-CAM (where the model looked, with contours) and saliency (which pixels moved the
score), how much each frame counted, what the model is, and what these pictures do and do not mean.

:mod:`.select` finds the alerts and explains the chosen windows, :mod:`.figures` draws the pictures,
:mod:`.text` writes the words and :mod:`.page` renders the Jinja2 template.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from ..atomic import atomic_path
from .figures import Contours
from .select import Alert, AlertView, alert_events, alerts_of, highest, key_frames, review_windows
from .text import architecture, meaning, model_card, seeing, stream_votes

if TYPE_CHECKING:
    from ..models import CRNN

log = logging.getLogger(__name__)

__all__ = ["Alert", "AlertView", "Contours", "alert_events", "alerts_of", "architecture", "highest", "key_frames",
           "meaning", "model_card", "review_windows", "seeing", "stream_votes", "write_report"]


def write_report(model: CRNN, video: str, out_html: str, threshold: float = 0.5, alert: str = "3/5",
                 stride: int = 2, fps: float | None = None, max_alerts: int = 5, events: str | None = None,
                 results: list | None = None, map_precision: str | None = "fp32",
                 contours: Contours = Contours()) -> dict:
    """Score ``video`` as a stream (unless ``results`` are given), explain its ``max_alerts`` highest
    alerts and write the report; returns a summary. Scores use the model's precision, maps
    ``map_precision`` (default fp32: the maps are evidence), outlined by the ``contours`` rule."""
    from ..stream import Detector
    from .page import render_html

    det = Detector(model, fps=fps, stride=stride, threshold=threshold, alert=alert, events=events)
    if results is None:
        results = list(det.run(video))
    if not results:
        from ..video import VideoError
        raise VideoError(f"{video}: too short for one window of {det.window} frames at {det.fps:g} fps")
    alerts = alerts_of(results)
    chosen = highest(alerts, max_alerts)
    views = review_windows(model, video, results, chosen, det.fps, det.window, map_precision)
    files = {"video": os.path.abspath(video), "checkpoint": getattr(model, "checkpoint_path", "in memory")}
    if events:
        files["events"] = os.path.abspath(events)
    page = render_html(video, model, results, alerts, views, threshold, (det.k, det.n), files, contours,
                       map_precision)
    with atomic_path(out_html) as part, open(part, "w", encoding="utf-8") as f:
        f.write(page)
    log.info("wrote %s: %d alert(s), %d explained", out_html, len(alerts), len(chosen))
    return {"report": out_html, "windows": len(results), "alerts": len(alerts), "explained": len(chosen),
            "peak_score": max(r.score for r in results), "views": views, "results": results}
