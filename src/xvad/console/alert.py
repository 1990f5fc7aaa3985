"""The alert page (the clip with its Grad-CAM overlay, the explanation, the verdicts), the verdict form,
and the alert's export: one ZIP with its decision report, record, verdicts and audit entries."""
# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
import io
import json
import logging
import zipfile
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException
from fastapi.responses import RedirectResponse, Response

from ..service import audit, auth, review
from .access import Who
from .explained import explanation, media_path, model_for, model_words, score_chart
from .web import render

log = logging.getLogger(__name__)

__all__ = ["add_routes", "export_zip"]

DECIDERS = ("admin", "reviewer")


def alert_entries(db: Any, alert_id: int) -> list[dict]:
    """The alert's audit entries, oldest first."""
    rows, _ = audit.entries(db, target=f"alert:{alert_id}", limit=100_000)
    return rows[::-1]


def export_zip(db: Any, media_root: str, alert: dict) -> bytes:
    """The alert's record as a ZIP: ``report.html`` (when it was written), ``alert.json`` (with the
    checkpoint id, xvad version, threshold and policy), ``verdicts.json`` and ``audit.jsonl``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        report = media_path(media_root, alert, "report")
        if report is not None:
            z.write(report, "report.html")
        z.writestr("alert.json", json.dumps(alert, indent=2, sort_keys=True) + "\n")
        z.writestr("verdicts.json", json.dumps(review.verdicts(db, alert["id"]), indent=2) + "\n")
        z.writestr("audit.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in alert_entries(db, alert["id"])))
    return buf.getvalue()


def add_routes(router: FastAPI, console: Any) -> None:
    db, access = console.db, console.access
    Page = Annotated[Who, Depends(access.page_user)]

    def alert_for(who: Who, alert_id: int) -> dict:
        a = db.alert(alert_id)
        if a is None or not auth.user_can_see(who.user, a["camera"]):
            raise HTTPException(404, f"no alert {alert_id}")
        history = review.verdicts(db, alert_id)
        a["review"] = history[-1]["verdict"] if history else "unreviewed"
        return a

    def page(who: Who, a: dict, status: int = 200, error: str = "", reason: str = "") -> Response:
        data = explanation(console.media_root, a)
        words = model_words(model_for(console.service, console.settings, a), data)
        files = a.get("files") or {}
        return render("alert.html.j2", who, status, alert=a, data=data, chart=score_chart(data) if data else None,
                      words=words, verdicts=review.verdicts(db, a["id"]), choices=review.VERDICTS,
                      can_decide=who.user.role in DECIDERS, has_clip="clip" in files,
                      has_report="report" in files, error=error, reason=reason)

    @router.get("/alerts/{alert_id}", include_in_schema=False)
    def alert_page(alert_id: int, who: Page) -> Response:
        a = alert_for(who, alert_id)
        audit.record(db, who.user.name, "alert.viewed", f"alert:{alert_id}", {"camera": a["camera"]})
        return page(who, a)

    @router.post("/alerts/{alert_id}/verdict", include_in_schema=False)
    def verdict(alert_id: int, who: Page, verdict: Annotated[str, Form(max_length=32)] = "",
                reason: Annotated[str, Form(max_length=4000)] = "") -> Response:
        a = alert_for(who, alert_id)
        if who.user.role not in DECIDERS:
            raise HTTPException(403, "recording a verdict needs the reviewer or admin role")
        try:
            review.add_verdict(db, alert_id, who.user, verdict, reason)
        except ValueError as exc:
            return page(who, a, 422, str(exc), reason)
        except PermissionError as exc:
            raise HTTPException(403, str(exc)) from None
        except LookupError:
            raise HTTPException(404, f"no alert {alert_id}") from None
        return RedirectResponse(f"/alerts/{alert_id}#verdicts", 303)

    @router.get("/alerts/{alert_id}/export", include_in_schema=False)
    def export(alert_id: int, who: Page) -> Response:
        a = alert_for(who, alert_id)
        audit.record(db, who.user.name, "alert.exported", f"alert:{alert_id}", {"camera": a["camera"]})
        body = export_zip(db, console.media_root, a)
        return Response(body, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="xvad-alert-{alert_id}.zip"', "Cache-Control": "no-store"})
