"""The HTTP API of ``xvad serve`` (FastAPI): cameras and their live state, alerts with filters and
pages, each alert's media and verdicts, the audit log, health and Prometheus metrics. Every route needs
``Authorization: Bearer TOKEN`` or a console session (:mod:`xvad.console.access`); a user limited to some
cameras gets "not found" for the others' alerts and media. The review console's pages are mounted on
the same app.
"""
# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations at run time.
import os
from datetime import datetime
from typing import Annotated, Any, Optional

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel

from .. import __version__
from ..console import Access, mount
from ..console.admin import control_camera
from . import audit, auth, review, versions
from .metrics import metrics_text

MEDIA_TYPES = {".mp4": "video/mp4", ".html": "text/html; charset=utf-8", ".json": "application/json",
               ".png": "image/png", ".jpg": "image/jpeg", ".npz": "application/octet-stream"}


class VerdictIn(BaseModel):
    """The body of ``POST /api/alerts/{id}/verdicts``."""

    verdict: str
    reason: str


def create_app(db: Any, settings: Any, service: Any = None) -> FastAPI:
    """The app over ``db``; ``service`` is the running :class:`~.runtime.Service` when this process
    watches cameras itself (live figures, stop and start), else None (an API-only process)."""
    app = FastAPI(title="xvad", version=__version__, description="Explainable video anomaly detection: "
                  "cameras, alerts and their explanations.", docs_url=None, redoc_url=None, openapi_url=None)
    media_root = os.path.realpath(os.path.join(str(settings.data), "media"))

    access = Access(db, settings)
    User = Annotated[Any, Depends(access.api_user)]          # a Bearer token or a console session

    def visible(u: Any, camera: str) -> bool:
        return auth.user_can_see(u, camera)

    def alert_for(u: Any, alert_id: int) -> dict:
        a = db.alert(alert_id)
        if a is None or not visible(u, a["camera"]):
            raise HTTPException(404, f"no alert {alert_id}")
        return a

    @app.get("/api/openapi.json")
    def openapi(u: User) -> dict:
        return app.openapi()            # the schema too needs a token (FastAPI's open /docs are off)

    @app.get("/healthz")
    def healthz(u: User) -> dict:
        return {"status": "ok", "version": __version__, "cameras": sum(visible(u, c["name"]) for c in db.cameras()),
                "detecting": service is not None, "media_paused": bool(service and service.media_paused)}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(u: User) -> PlainTextResponse:
        if not auth.sees_every_camera(u):
            raise HTTPException(403, "the metrics cover every camera: they need a user limited to no cameras")
        return PlainTextResponse(metrics_text(db, service, media_root),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/cameras")
    def cameras(u: User) -> list[dict]:
        live = {c["name"]: c for c in (service.snapshot() if service is not None else [])}
        out = []
        for c in versions.cameras_with_versions(db):       # with the model version each runs
            if visible(u, c["name"]):
                out.append({**c, "live": live.get(c["name"])})
        return out

    @app.post("/api/cameras/{name}/{action}")
    def control(name: str, action: str, u: User) -> dict:
        control_camera(db, service, u, name, action, via="api")   # checks, stops or starts, on the record
        return {"camera": name, "action": action, "by": u.name}

    @app.get("/api/alerts")
    def alerts(u: User, camera: Annotated[Optional[list[str]], Query()] = None, state: Optional[str] = None,
               since: Optional[datetime] = None, until: Optional[datetime] = None,
               min_score: Annotated[Optional[float], Query(ge=0, le=1)] = None,
               review: Annotated[Optional[str], Query(pattern="^(unreviewed|confirmed|dismissed|escalated)$")] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0)] = 0) -> dict:
        allowed = [c["name"] for c in db.cameras() if visible(u, c["name"])]
        chosen = allowed if not camera else [c for c in camera if c in allowed]
        rows, total = db.alerts(cameras=chosen, state=state, since=since, until=until, min_score=min_score,
                                review=review, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "alerts": rows}

    @app.get("/api/alerts/{alert_id}")
    def alert(alert_id: int, u: User) -> dict:
        a = alert_for(u, alert_id)
        audit.record(db, u.name, "alert.viewed", f"alert:{alert_id}", {"via": "api"})
        return a

    @app.get("/api/alerts/{alert_id}/verdicts")
    def alert_verdicts(alert_id: int, u: User) -> list[dict]:
        alert_for(u, alert_id)
        return review.verdicts(db, alert_id)

    @app.post("/api/alerts/{alert_id}/verdicts", status_code=201)
    def decide(alert_id: int, body: VerdictIn, u: User) -> dict:
        try:
            return review.add_verdict(db, alert_id, u, body.verdict, body.reason)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except PermissionError as exc:
            raise HTTPException(403, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/api/audit")
    def audit_log(u: User, since: Optional[datetime] = None, until: Optional[datetime] = None,
                  action: Optional[str] = None, target: Optional[str] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0)] = 0) -> dict:
        if u.role != "admin" or not auth.sees_every_camera(u):
            raise HTTPException(403, "the audit log needs the admin role, for every camera")
        rows, total = audit.entries(db, since=since, until=until, action=action, target=target, limit=limit,
                                    offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "entries": rows}

    @app.get("/api/alerts/{alert_id}/{name}")
    def media(alert_id: int, name: str, u: User, request: Request) -> FileResponse:
        a = alert_for(u, alert_id)
        files = a.get("files") or {}
        rel = {"clip.mp4": files.get("clip"), "report.html": files.get("report")}.get(name) \
            or next((f for f in files.values() if f == name), None)
        if not rel or not a.get("media_dir"):
            raise HTTPException(404, f"alert {alert_id} has no {name!r}")
        path = os.path.realpath(os.path.join(media_root, a["media_dir"], rel))
        if not path.startswith(media_root + os.sep) or not os.path.isfile(path):
            raise HTTPException(404, f"alert {alert_id} has no {name!r}")
        ext = os.path.splitext(path)[1]
        if name == "report.html":      # the decision report leaves the service: on the record
            audit.record(db, u.name, "alert.exported", f"alert:{alert_id}", {"file": name})
        # the report is a download (a page of its own, not run under the console's origin)
        return FileResponse(path, media_type=MEDIA_TYPES.get(ext, "application/octet-stream"),
                            filename=name if ext == ".html" else None)

    mount(app, db, settings, service, access)
    return app
