"""The alert lifecycle: window scores in, alert starts and ends out, with each alert's peak.

:class:`AlertTracker` applies the k-of-n policy (:mod:`.policy`) and keeps the open alert; it writes
nothing itself, so the detector, the service and the report can each decide what an alert produces.
"""
from __future__ import annotations

from dataclasses import dataclass

from .policy import AlertPolicy


@dataclass
class Alert:
    """One alert: when and at which frame it started, its class, its peak score so far, how many windows."""

    id: int
    start_time: float
    start_frame: int
    class_name: str | None
    class_index: int
    score: float                   # the score of the window that started it
    peak: float
    peak_class: str | None
    windows: int = 1


class AlertTracker:
    """Turns window scores into alerts: :meth:`update` says "start", "end" or None for each window."""

    def __init__(self, threshold: float, k: int, n: int) -> None:
        self.policy = AlertPolicy(threshold, k, n)
        self.open: Alert | None = None
        self.count = 0                    # alerts started so far

    @property
    def on(self) -> bool:
        return self.policy.on

    def update(self, score: float, class_index: int, class_name: str | None, time: float,
               frame: int) -> str | None:
        """Record the window ending at ``time`` (frame ``frame``); "start" opens :attr:`open`, "end"
        leaves it for the caller to :meth:`close`."""
        change = self.policy.update(score)
        if change == "start":
            self.count += 1
            self.open = Alert(self.count, time, frame, class_name, class_index, score, score, class_name)
        elif self.open is not None and change is None:
            a = self.open
            a.windows += 1
            if score > a.peak:
                a.peak, a.peak_class = score, class_name
        return change

    def close(self) -> Alert | None:
        """End the open alert (scores fell, the source went away or the run ended) and return it."""
        alert, self.open = self.open, None
        return alert

    def reset(self) -> None:
        """Forget the score history (after a gap); the caller closes an open alert first."""
        self.policy.reset()
