"""The queue of alerts: unreviewed first, then newest; filters by camera, state, review, time and score
(every one a bound parameter); counts per camera; a fragment the page polls for live updates."""
# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Optional
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from ..service import auth
from ..service.store.database import ALERT_STATES, REVIEWS, alert_dict
from ..service.store.schema import Alert, Verdict
from .access import Who
from .web import environment, render

__all__ = ["REVIEWS", "Filters", "add_routes", "parse_filters", "queue_page"]

PAGE = 25


@dataclass
class Filters:
    """The queue's filters as given (``text``, to put back in the form) and as values."""

    cameras: list[str] = field(default_factory=list)
    state: Optional[str] = None
    review: Optional[str] = None
    since: Optional[datetime] = None
    until: Optional[datetime] = None
    min_score: Optional[float] = None
    page: int = 1
    text: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def query(self, **change: Any) -> str:
        """The query string of these filters (with ``change`` applied), for links."""
        pairs = [("camera", c) for c in self.cameras] + [(k, v) for k, v in self.text.items() if v]
        pairs = [(k, v) for k, v in pairs if k not in change] + [(k, str(v)) for k, v in change.items()]
        return urlencode(pairs)


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


def parse_filters(params: Any, allowed: list[str]) -> Filters:
    """The filters from the query ``params``; a value that is not valid is named in ``errors`` and unused."""
    f = Filters()
    f.cameras = [c for c in params.getlist("camera") if c]
    unknown = [c for c in f.cameras if c not in allowed]
    if unknown:
        f.errors.append(f"camera: no camera {unknown[0]!r}")
    for key in ("state", "review", "since", "until", "min_score", "page"):
        f.text[key] = (params.get(key) or "").strip()[:64]
    choices = {"state": ALERT_STATES, "review": REVIEWS}
    for key, allowed_values in choices.items():
        if f.text[key] and f.text[key] not in allowed_values:
            f.errors.append(f"{key}: must be one of {', '.join(allowed_values)}")
        elif f.text[key]:
            setattr(f, key, f.text[key])
    for key in ("since", "until"):
        if f.text[key]:
            try:
                setattr(f, key, _time(f.text[key]))
            except ValueError:
                f.errors.append(f"{key}: {f.text[key]!r} is not a date and time (2026-12-01T10:00)")
    if f.text["min_score"]:
        try:
            f.min_score = float(f.text["min_score"])
            if not 0 <= f.min_score <= 1:
                raise ValueError
        except ValueError:
            f.min_score = None
            f.errors.append("min_score: must be a number from 0 to 1")
    if f.text["page"]:
        f.page = int(f.text["page"]) if f.text["page"].isdigit() and int(f.text["page"]) >= 1 else 1
    return f


def _latest_verdicts() -> Any:
    """Each alert's newest verdict id (``alert_id``, ``vid``): its current review."""
    return select(Verdict.alert_id, func.max(Verdict.id).label("vid")).group_by(Verdict.alert_id).subquery()


def queue_page(db: Any, cameras: list[str], f: Filters, limit: int = PAGE) -> tuple[list[dict], int]:
    """One page of the alerts of ``cameras`` matching ``f``, unreviewed first then newest, and the total."""
    newest = _latest_verdicts()
    conditions: list[Any] = [Alert.camera.in_(list(cameras))]
    if f.state is not None:
        conditions.append(Alert.state == f.state)
    if f.since is not None:
        conditions.append(Alert.started_at >= f.since)
    if f.until is not None:
        conditions.append(Alert.started_at < f.until)
    if f.min_score is not None:
        conditions.append(Alert.peak_score >= f.min_score)
    if f.review == "unreviewed":
        conditions.append(Verdict.verdict.is_(None))
    elif f.review is not None:
        conditions.append(Verdict.verdict == f.review)
    base = (select(Alert, Verdict.verdict).outerjoin(newest, newest.c.alert_id == Alert.id)
            .outerjoin(Verdict, Verdict.id == newest.c.vid).where(*conditions))
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(base.subquery()))
        rows = s.execute(base.order_by(Verdict.verdict.is_not(None), Alert.started_at.desc(), Alert.id.desc())
                         .limit(limit).offset((f.page - 1) * limit)).all()
        return [alert_dict(a, v or "unreviewed") for a, v in rows], int(total or 0)


def counts(db: Any, cameras: list[str]) -> list[dict]:
    """Per camera: its alerts, how many of them are unreviewed."""
    newest = _latest_verdicts()
    with db.session() as s:
        rows = s.execute(select(Alert.camera, func.count(), func.count(newest.c.vid))
                         .outerjoin(newest, newest.c.alert_id == Alert.id)
                         .where(Alert.camera.in_(list(cameras))).group_by(Alert.camera)).all()
    found = {camera: (int(total), int(total) - int(reviewed)) for camera, total, reviewed in rows}
    return [{"camera": c, "total": found.get(c, (0, 0))[0], "unreviewed": found.get(c, (0, 0))[1]} for c in cameras]


def add_routes(router: FastAPI, console: Any) -> None:
    db, access = console.db, console.access
    Page = Annotated[Who, Depends(access.page_user)]

    def context(request: Request, who: Who) -> dict:
        allowed = [c["name"] for c in db.cameras() if auth.user_can_see(who.user, c["name"])]
        f = parse_filters(request.query_params, allowed)
        chosen = [c for c in f.cameras if c in allowed] if f.cameras else allowed
        rows, total = queue_page(db, chosen, f) if not f.errors else ([], 0)   # nothing shown for a bad filter
        pages = max(1, -(-total // PAGE))
        return {"filters": f, "alerts": rows, "total": total, "pages": pages, "cameras": allowed,
                "counts": counts(db, allowed), "states": ALERT_STATES, "reviews": REVIEWS}

    @router.get("/", include_in_schema=False)
    def queue(request: Request, who: Page) -> Response:
        ctx = context(request, who)
        return render("queue.html.j2", who, 400 if ctx["filters"].errors else 200, **ctx)

    @router.get("/queue/live", include_in_schema=False)
    def live(request: Request, who: Page) -> Response:
        """The counts and the table of the queue as they are now (the page polls this)."""
        html = environment().get_template("queue_live.html.j2").render(who=who, **context(request, who))
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})
