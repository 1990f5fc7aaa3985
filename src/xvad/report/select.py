"""Which windows the decision report explains: every alert of the video, read from the detector's
window results, and the peak windows of the highest-scoring ones with their Grad-CAM and saliency."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..explain_video import Window
    from ..models import CRNN
    from ..stream import WindowResult

log = logging.getLogger(__name__)

METHODS = ("gradcam", "saliency")


@dataclass
class Alert:
    """One alert the detector raised: from the window that started it to the one that ended it."""
    id: int
    first: WindowResult           # the window that raised it
    last: WindowResult            # the window that ended it, else its last one (for an open alert: the video's)
    peak: WindowResult            # its highest-scoring window while it was on
    ended: bool                   # ``last`` ended it: its scores fell below the alert rule
    open: bool                    # still on when the video ended

    @property
    def start(self) -> float:
        return float(self.first.time)

    @property
    def end(self) -> float:
        return float(self.last.time)

    @property
    def peak_score(self) -> float:
        return float(self.peak.score)


@dataclass
class AlertView:
    """One reviewed window: the alert (or the highest-scoring window) with its explanations."""
    title: str
    start: float
    end: float | None             # None: the alert was still on when the video ended
    peak_score: float
    class_name: str
    window_times: np.ndarray
    frames: np.ndarray
    explanations: dict
    votes: list[tuple[str, float]] = field(default_factory=list)   # each stream's own probability of the class
    alert: Alert | None = None    # None: no alert was raised, this is the highest-scoring window
    window: Window | None = None  # the whole frames and where the model looked in them


def alerts_of(results: Sequence[WindowResult]) -> list[Alert]:
    """Every alert in the detector's window results, in the order they were raised. An alert with no
    ending window was still on when the video ended (or was cut by a gap in the stream): it ends at
    its last window, which for an alert open at the end is the video's last window."""
    groups: dict[int, list[WindowResult]] = {}
    for r in results:
        if r.alert_id is not None:
            groups.setdefault(r.alert_id, []).append(r)
    alerts = []
    for aid, rs in groups.items():
        on = [r for r in rs if r.alert_on]
        ended = next((r for r in rs if r.event == "end"), None)
        last = ended or rs[-1]
        alerts.append(Alert(aid, rs[0], last, max(on or rs, key=lambda r: r.score), ended is not None,
                            ended is None and rs[-1] is results[-1]))
    return alerts


def highest(alerts: Sequence[Alert], count: int) -> list[Alert]:
    """The ``count`` alerts with the highest peak scores (the earlier one first on a tie), in time order."""
    if count < 0:
        raise ValueError(f"the number of alerts to explain must be 0 or more, not {count}")
    ranked = sorted(alerts, key=lambda a: (-a.peak_score, a.id))[:count]
    return sorted(ranked, key=lambda a: a.id)


def key_frames(importance: np.ndarray, k: int = 4) -> list[int]:
    """The ``k`` frames that counted most, in time order."""
    return sorted(int(t) for t in np.argsort(-np.asarray(importance))[:k])


def review_windows(model: CRNN, video: str, results: Sequence[WindowResult], chosen: Sequence[Alert],
                   fps: float, window: int, map_precision: str | None = "fp32") -> list[AlertView]:
    """Explain the peak window of each ``chosen`` alert (with no alert in ``results`` at all, the
    highest-scoring window); the maps are computed at ``map_precision`` (None: the model's own),
    since bf16 maps drift from fp32 ones."""
    from ..explain import explain
    from ..explain_video import read_window

    picks: list[tuple[str, float, float | None, WindowResult, Alert | None]] = [
        (f"Alert {a.id}", a.start, None if a.open else a.end, a.peak, a) for a in chosen]
    if not picks and results and not any(r.alert_id is not None for r in results):
        peak = max(results, key=lambda r: r.score)
        picks.append(("Highest-scoring window (no alert raised)", peak.start_time, peak.time, peak, None))
    views, clips = [], []
    own = model.config["precision"]
    try:
        model.set_precision(map_precision or own)
        for title, start, end, peak, alert in picks:
            log.info("explaining %s of %s (window from %.2f s)", title, video, peak.start_time)
            win = read_window(model, video, start=peak.start_time, frames=window, fps=fps)
            clip, target = win.x, peak.class_index
            expl = {m: explain(model, clip, method=m, target=target) for m in METHODS}
            views.append(AlertView(title, start, end, float(peak.score), peak.class_name or str(target), win.times,
                                   win.shown, expl, [], alert, win))
            clips.append((clip, target))
    finally:
        model.set_precision(own)
    if model.stream_heads:   # each stream's vote, at the precision that scored the alert
        for view, (clip, target) in zip(views, clips):
            view.votes = list(zip(model.stream_heads, model.stream_proba(clip)[:, target].tolist()))
    return views


def alert_events(alerts: Sequence[Alert]) -> list[dict]:
    """Each alert's start and end rows for the events table; an alert still on when the video ended
    gets an end row at the video's last window, marked as such."""
    rows = []
    for a in alerts:
        s, e = a.first, a.last
        rows.append({"alert": a.id, "type": "alert start", "time": round(s.time, 2), "frame": s.frame_index,
                     "score": round(s.score, 3), "class": s.class_name, "note": ""})
        note = ("its scores fell below the alert rule" if a.ended else
                "still on when the video ended" if a.open else "cut by a gap in the stream")
        rows.append({"alert": a.id, "type": "alert end", "time": round(e.time, 2), "frame": e.frame_index,
                     "score": round(e.score, 3) if a.ended else "", "class": e.class_name, "note": note})
    return rows
