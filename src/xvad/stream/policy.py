"""The alert policy: an alert starts when k of the last n window scores pass the threshold and
ends when fewer than k do (hysteresis), so one noisy window neither raises nor drops an alert."""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import StreamError


def parse_alert(spec: str | tuple[int, int]) -> tuple[int, int]:
    """``"3/5"`` (or ``(3, 5)``) -> ``(k, n)`` with ``1 <= k <= n``."""
    if isinstance(spec, (tuple, list)):
        parts: Sequence[int | str] = list(spec)
    else:
        parts = str(spec).replace(" ", "").split("/")
        if len(parts) == 1 and parts[0]:
            parts = [parts[0], parts[0]]          # "1" means 1/1
    try:
        k, n = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise StreamError(f"alert policy must look like K/N (e.g. 3/5), not {spec!r}") from None
    if not 1 <= k <= n:
        raise StreamError(f"alert policy {k}/{n}: need 1 <= K <= N")
    return k, n


@dataclass
class AlertPolicy:
    """k-of-n hysteresis on window scores. ``update(score)`` returns "start", "end" or None."""

    threshold: float = 0.5
    k: int = 3
    n: int = 5

    def __post_init__(self) -> None:
        parse_alert((self.k, self.n))
        self._passes: deque[bool] = deque(maxlen=self.n)
        self.on = False

    @classmethod
    def from_spec(cls, threshold: float, spec: str | tuple[int, int]) -> AlertPolicy:
        k, n = parse_alert(spec)
        return cls(float(threshold), k, n)

    @property
    def count(self) -> int:
        """How many of the last n windows passed the threshold."""
        return sum(self._passes)

    def passes(self, score: float) -> bool:
        return score >= self.threshold

    def update(self, score: float) -> str | None:
        self._passes.append(self.passes(score))
        count = self.count
        if not self.on and count >= self.k:
            self.on = True
            return "start"
        if self.on and count < self.k:
            self.on = False
            return "end"
        return None

    def reset(self) -> None:
        """Forget the history (after a gap in the stream); the caller ends an open alert itself."""
        self._passes.clear()
        self.on = False


def alert_spans(scores, threshold: float = 0.5, alert: str | tuple[int, int] = "3/5") -> list[tuple[int, int | None]]:
    """Alerts over a sequence of window scores: ``(start, end)`` window indices, where ``start`` is
    the window that raised the alert and ``end`` the first window at which it was off again (None
    if still on at the end)."""
    policy = AlertPolicy.from_spec(threshold, alert)
    spans: list[tuple[int, int | None]] = []
    for i, s in enumerate(scores):
        change = policy.update(float(s))
        if change == "start":
            spans.append((i, None))
        elif change == "end":
            spans[-1] = (spans[-1][0], i)
    return spans
