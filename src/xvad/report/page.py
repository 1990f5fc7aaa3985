"""The report page: gathers what the template shows (alerts, explained windows, pictures, words) and
renders ``templates/report.html.j2`` with autoescaping into one self-contained HTML string."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .. import __version__
from .figures import Contours, frame_panels, importance_plot, timeline_plot
from .select import Alert, AlertView, alert_events, key_frames
from .text import headline, maps_precision, meaning, model_card, stream_votes

if TYPE_CHECKING:
    from ..models import CRNN
    from ..stream import WindowResult

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_env: Environment | None = None


def environment() -> Environment:
    """The Jinja2 environment of the report's templates, autoescaping everything."""
    global _env
    if _env is None:
        _env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                           trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return _env


def section(view: AlertView, contours: Contours, rescored: str) -> dict:
    """One explained window: its heading, sentences, key-frame panels and frame-importance chart."""
    gc = view.explanations["gradcam"]
    key = key_frames(gc.frame_importance)
    until = f"to {view.end:.1f} s" if view.end is not None else "on until the end of the video"
    return {"id": f"alert-{view.alert.id}" if view.alert else "peak-window",
            "alert": view.alert.id if view.alert else "",
            "heading": f"{view.title}: from {view.start:.1f} s, {until}",
            "class_name": view.class_name, "peak_score": f"{view.peak_score:.3f}",
            "window": f"{view.window_times[0]:.1f}-{view.window_times[-1]:.1f} s", "score": f"{gc.score:.3f}",
            "rescored": rescored,
            "votes": stream_votes(view.votes, view.class_name) if view.votes else "",
            "panels": frame_panels(view, key, contours),
            "importance": importance_plot(gc.frame_importance, view.window_times, key)}


def render_html(video: str, model: CRNN, results: Sequence[WindowResult], alerts: Sequence[Alert],
                views: Sequence[AlertView], threshold: float, alert_spec: tuple[int, int], files: dict[str, str],
                contours: Contours, map_precision: str | None = None) -> str:
    """The page for ``video``: every alert counted, shaded and listed; the ``views`` explained in full."""
    times = [r.time for r in results]
    peak = max((r.score for r in results), default=0.0)
    explained = [v for v in views if v.alert is not None]
    plot, shaded = timeline_plot(times, [r.score for r in results], threshold, [(a.start, a.end) for a in alerts])
    maps = maps_precision(model, map_precision)
    rescored = f" when re-scored in {maps}, the maps' precision" if maps != model.precision else ""
    open_ids = [a.id for a in alerts if a.open]
    k, n = alert_spec
    page = {
        "name": os.path.basename(video),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"), "version": __version__,
        "alerts": len(alerts), "explained": len(explained),
        "headline": headline(len(alerts), len(explained), open_ids, peak, threshold),
        "timeline": plot, "shaded": json.dumps([[round(a, 3), round(b, 3)] for a, b in shaded]),
        "rule": "Each point is a window's score at the time of its last frame. "
                f"An alert starts when {k} of the last {n} window scores pass {threshold:.2f}, and ends when "
                "fewer do. Shaded: alert intervals"
                + (", to the end of the video for an alert still on when it ended." if open_ids else "."),
        "sections": [section(v, contours, rescored) for v in views],
        "meaning": meaning(model.config, contours),
        "card": model_card(model, map_precision),
        "events": alert_events(alerts),
        "explained_ids": [v.alert.id for v in views if v.alert is not None],
        "files": list(files.items()),
    }
    return environment().get_template("report.html.j2").render(**page)
