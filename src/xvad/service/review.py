"""Verdicts: a person's decision on an alert (confirmed, dismissed as a false alarm, or escalated) with
the reason they give. Verdicts are append-only: changing one adds a row, and the alert's current
verdict is its newest. Each is written in one transaction with its ``alert.decided`` audit entry."""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from . import audit
from .auth import AuthUser, user_can_see
from .store.database import VERDICTS
from .store.schema import Alert, Verdict, utcnow

log = logging.getLogger(__name__)

__all__ = ["DECIDERS", "VERDICTS", "add_verdict", "verdict_dict", "verdicts"]

DECIDERS = ("admin", "reviewer")     # the roles that may decide; viewers only see
MAX_REASON = 4000


def verdict_dict(v: Verdict) -> dict:
    return {"id": v.id, "alert_id": v.alert_id, "verdict": v.verdict, "reason": v.reason, "user": v.user,
            "at": audit.iso(v.at)}


def add_verdict(db: Any, alert_id: int, user: AuthUser, verdict: str, reason: str) -> dict:
    """Record ``user``'s ``verdict`` on alert ``alert_id`` with its ``reason`` and audit it, together.

    LookupError when the alert does not exist or ``user`` may not see its camera (the same "no alert
    N" either way), PermissionError for a role that may not decide, ValueError for a verdict that is not
    one of :data:`VERDICTS` or an empty reason."""
    with db.transaction() as s:
        a = s.get(Alert, alert_id)
        if a is None or not user_can_see(user, a.camera):
            raise LookupError(f"no alert {alert_id}")
        if user.role not in DECIDERS:
            raise PermissionError(f"user {user.name!r} is a {user.role}: deciding on alerts needs the reviewer "
                                  "or admin role")
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        reason = (reason or "").strip() if isinstance(reason, str) else ""
        if not reason:
            raise ValueError("reason: a verdict needs a reason, in words")
        if len(reason) > MAX_REASON:
            raise ValueError(f"reason: at most {MAX_REASON} characters ({len(reason)} given)")
        v = Verdict(alert_id=alert_id, verdict=verdict, reason=reason, user=user.name, at=utcnow())
        s.add(v)
        s.flush()
        audit.record(db, user.name, "alert.decided", f"alert:{alert_id}",
                     {"verdict": verdict, "reason": reason, "verdict_id": v.id, "camera": a.camera}, session=s)
        out = verdict_dict(v)
    log.info("alert %d: %s by %s", alert_id, verdict, user.name)
    return out


def verdicts(db: Any, alert_id: int) -> list[dict]:
    """Every verdict on alert ``alert_id``, oldest first (the last is the current one)."""
    with db.session() as s:
        return [verdict_dict(v) for v in s.scalars(select(Verdict).where(Verdict.alert_id == alert_id)
                                                   .order_by(Verdict.id))]
