"""The cameras page (live state, purpose, the stop and start buttons: the overseer's stop) and the audit
log page (admin: entries newest first, filtered by action and target, and whether the chain is intact)."""
# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
import logging
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from ..service import audit, auth, versions
from .access import Who
from .web import render

log = logging.getLogger(__name__)

__all__ = ["add_routes", "control_camera"]

AUDIT_PAGE = 50


def control_camera(db: Any, service: Any, user: auth.AuthUser, name: str, action: str, via: str = "console") -> None:
    """Stop or start camera ``name`` for ``user`` (reviewer or admin), on the record (the API's route and
    the cameras page both come here). The process that watches it follows the database when it is not
    this one."""
    if action not in ("stop", "start"):
        raise HTTPException(404, f"no action {action!r}: use stop or start")
    if not auth.user_can_see(user, name) or name not in {c["name"] for c in db.cameras()}:
        raise HTTPException(404, f"no camera {name!r}")
    if user.role not in ("admin", "reviewer"):
        raise HTTPException(403, "stopping and starting cameras needs the reviewer or admin role")
    if service is not None and name in service.cameras:
        (service.stop_camera if action == "stop" else service.start_camera)(name)
    else:
        db.set_camera_enabled(name, action == "start")
    audit.record(db, user.name, "camera.stopped" if action == "stop" else "camera.started", f"camera:{name}",
                 {"via": via})
    log.info("camera %s: %s by %s", name, action, user.name)


def add_routes(router: FastAPI, console: Any) -> None:
    db, access = console.db, console.access
    Page = Annotated[Who, Depends(access.page_user)]

    @router.get("/cameras", include_in_schema=False)
    def cameras(who: Page) -> Response:
        live = {c["name"]: c for c in (console.service.snapshot() if console.service is not None else [])}
        rows = [{**c, "live": live.get(c["name"])} for c in versions.cameras_with_versions(db)
                if auth.user_can_see(who.user, c["name"])]
        return render("cameras.html.j2", who, cameras=rows, can_control=who.user.role in ("admin", "reviewer"),
                      live_here=console.service is not None)

    @router.post("/cameras/{name}/{action}", include_in_schema=False)
    def control(name: str, action: str, who: Page) -> Response:
        control_camera(db, console.service, who.user, name, action)
        return RedirectResponse("/cameras", 303)

    @router.get("/audit", include_in_schema=False)
    def audit_page(request: Request, who: Page) -> Response:
        if who.user.role != "admin" or not auth.sees_every_camera(who.user):
            raise HTTPException(403, "the audit log is for admins of every camera")
        action = (request.query_params.get("action") or "").strip()
        target = (request.query_params.get("target") or "").strip()[:128]
        page_text = request.query_params.get("page") or "1"
        page = int(page_text) if page_text.isdigit() and int(page_text) >= 1 else 1
        known = not action or action in audit.ACTIONS
        errors = [] if known else [f"action: must be one of {', '.join(audit.ACTIONS)}"]
        rows, total = audit.entries(db, action=action if action in audit.ACTIONS else None, target=target or None,
                                    limit=AUDIT_PAGE, offset=(page - 1) * AUDIT_PAGE)
        state = audit.verify(db)

        def link(p: int) -> str:
            return "/audit?" + urlencode([(k, v) for k, v in (("action", action), ("target", target)) if v]
                                         + [("page", str(p))])

        return render("audit.html.j2", who, 400 if errors else 200, entries=rows, total=total, page=page,
                      pages=max(1, -(-total // AUDIT_PAGE)), action=action, target=target, actions=audit.ACTIONS,
                      errors=errors, state=state, link=link)
