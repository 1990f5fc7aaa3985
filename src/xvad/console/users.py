"""The users page (admin): every user with role, cameras and state; add one; change a role, the cameras
or the password, disable or enable. Every change is on the record, and a changed user's sessions end."""
# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
import logging
from typing import Annotated, Any, Optional

from argon2 import PasswordHasher
from fastapi import Depends, FastAPI, Form, HTTPException
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from ..errors import ConfigError
from ..service import audit, auth
from ..service.store.schema import User
from . import sessions
from .access import Who
from .web import render

log = logging.getLogger(__name__)

__all__ = ["add_routes", "change_user"]


def change_user(db: Any, name: str, *, role: str, cameras: Optional[list[str]], disabled: bool,
                password: Optional[str] = None) -> dict:
    """Set user ``name``'s role, cameras (None: all), disabled flag and (when given) password; returns
    what changed, ``{field: [before, after]}`` (passwords only as "changed")."""
    if role not in auth.ROLES:
        raise ConfigError(f"role {role!r}: must be one of {', '.join(auth.ROLES)}")
    if password is not None and len(password) < 8:
        raise ConfigError("password: must have at least 8 characters")
    with db.transaction() as s:
        u = s.scalar(select(User).where(User.name == name))
        if u is None:
            raise LookupError(f"no user {name!r}")
        after = {"role": role, "cameras": ",".join(cameras) if cameras else None, "disabled": bool(disabled)}
        changed = {k: [getattr(u, k), v] for k, v in after.items() if getattr(u, k) != v}
        for k, v in after.items():
            setattr(u, k, v)
        if password is not None:
            u.password_hash = PasswordHasher().hash(password)
            changed["password"] = ["", "changed"]
        user_id = u.id
    if changed:
        sessions.end_user_sessions(db, user_id)      # a new role or fewer cameras hold from now on
    return changed


def add_routes(router: FastAPI, console: Any) -> None:
    db, access = console.db, console.access

    async def admin(who: Annotated[Who, Depends(access.page_user)]) -> Who:
        if who.user.role != "admin":
            raise HTTPException(403, "managing users is for admins")
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
            u = auth.create_user(db, name.strip(), role, password, cameras_of(cameras))
        except ConfigError as exc:
            return page(who, 422, str(exc))
        audit.record(db, who.user.name, "user.added", f"user:{u.name}",
                     {"role": u.role, "cameras": list(u.cameras) if u.cameras else None})
        return RedirectResponse("/users", 303)

    @router.post("/users/{name}", include_in_schema=False)
    def change(name: str, who: Admin, role: Text = "", cameras: Text = "", disabled: Text = "",
               password: Text = "") -> Response:
        if name == who.user.name and (role != "admin" or disabled):
            return page(who, 422, "you cannot take the admin role from yourself or disable yourself")
        try:
            changed = change_user(db, name, role=role, cameras=cameras_of(cameras), disabled=bool(disabled),
                                  password=password or None)
        except LookupError:
            raise HTTPException(404, f"no user {name!r}") from None
        except ConfigError as exc:
            return page(who, 422, str(exc))
        if changed:
            audit.record(db, who.user.name, "user.changed", f"user:{name}", {"changed": changed})
        return RedirectResponse("/users", 303)
