"""The users page (admin): every user with role, cameras and state; add one; change a role, the cameras
or the password, disable or enable. Every change is on the record, and a changed user's sessions end."""
# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
import logging
from typing import Annotated, Any, Optional

from fastapi import Depends, FastAPI, Form, HTTPException
from fastapi.responses import RedirectResponse, Response

from ..errors import ConfigError
from ..service import auth
from . import sessions
from .access import Who
from .web import render

log = logging.getLogger(__name__)

__all__ = ["add_routes"]


def add_routes(router: FastAPI, console: Any) -> None:
    db, access = console.db, console.access

    async def admin(who: Annotated[Who, Depends(access.page_user)]) -> Who:
        if who.user.role != "admin" or not auth.sees_every_camera(who.user):
            raise HTTPException(403, "managing users is for admins of every camera")
        return who

    Admin = Annotated[Who, Depends(admin)]
    Text = Annotated[str, Form(max_length=1000)]

    def page(who: Who, status: int = 200, error: str = "", done: str = "") -> Response:
        names = [c["name"] for c in db.cameras()]
        return render("users.html.j2", who, status, users=auth.users(db), roles=auth.ROLES, camera_names=names,
                      error=error, done=done)

    def cameras_of(text: str) -> Optional[list[str]]:
        chosen = auth.parse_cameras(text)
        known = {c["name"] for c in db.cameras()}
        unknown = [c for c in chosen or [] if c not in known]
        if unknown:
            raise ConfigError(f"cameras: {unknown[0]!r} is not a camera of this service")
        return chosen

    @router.get("/users", include_in_schema=False)
    def users(who: Admin) -> Response:
        return page(who)

    @router.post("/users", include_in_schema=False)
    def add(who: Admin, name: Text = "", role: Text = "viewer", cameras: Text = "", password: Text = "") -> Response:
        try:
            auth.create_user(db, name.strip(), role, password, cameras_of(cameras), actor=who.user.name)
        except ConfigError as exc:
            return page(who, 422, str(exc))
        return RedirectResponse("/users", 303)

    @router.post("/users/{name}", include_in_schema=False)
    def change(name: str, who: Admin, role: Text = "", cameras: Text = "", disabled: Text = "",
               password: Text = "") -> Response:
        if name == who.user.name and (role != "admin" or disabled):
            return page(who, 422, "you cannot take the admin role from yourself or disable yourself")
        if name not in {u["name"] for u in auth.users(db)}:
            raise HTTPException(404, f"no user {name!r}")
        try:
            before = next(u for u in auth.users(db) if u["name"] == name)
            after = auth.update_user(db, name, role=role, cameras=cameras_of(cameras), disabled=bool(disabled),
                                     password=password or None, actor=who.user.name)
        except ConfigError as exc:
            return page(who, 422, str(exc))
        if (before["role"], before["cameras"], before["disabled"]) != (after.role, after.cameras, bool(disabled)) \
                or password:
            sessions.end_user_sessions(db, after.id)      # a new role, fewer cameras or a new password: log in again
        return RedirectResponse("/users", 303)
