"""The login page, the login itself (throttled, audited) and logout.

The login form is protected from cross-site posting by a token bound to a short pre-session cookie
(``xvad_login``): the form's hidden ``csrf`` must equal it.
"""
# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
import hmac
import logging
import math
import secrets
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response

from ..service import audit, auth
from . import sessions
from .access import COOKIE, Who, safe_next
from .web import render

log = logging.getLogger(__name__)

LOGIN_COOKIE = "xvad_login"
LOGIN_SECONDS = 1800            # the login form is good for half an hour


def add_routes(router: FastAPI, console: Any) -> None:
    db, access = console.db, console.access
    limit = console.settings.console.login_failures

    def form(request: Request, next_: str, error: str = "", status: int = 200, **headers: str) -> Response:
        token = secrets.token_urlsafe(32)
        page = render("login.html.j2", None, status, csrf=token, next=safe_next(next_), error=error)
        page.set_cookie(LOGIN_COOKIE, token, max_age=LOGIN_SECONDS, path="/login", httponly=True,
                        samesite="strict", secure=access.secure(request))
        page.headers.update(headers)
        return page

    @router.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> Response:
        if access.identify(request) is not None:
            return RedirectResponse(safe_next(next), 303)
        return form(request, next)

    @router.post("/login", include_in_schema=False)
    def login(request: Request, username: Annotated[str, Form(max_length=200)] = "",
              password: Annotated[str, Form(max_length=1000)] = "", csrf: Annotated[str, Form()] = "",
              next: Annotated[str, Form()] = "/") -> Response:
        address = access.address(request)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not csrf or not cookie or not hmac.compare_digest(csrf.encode(), cookie.encode()):
            return form(request, next, "This login form has expired or did not come from this site; try again.",
                        403)
        name = username.strip()
        wait, attempt = sessions.claim_attempt(db, name, address, limit)
        if attempt is None:
            seconds = math.ceil(wait)
            return form(request, next, f"too many failed logins; try again in {seconds} s", 429,
                        **{"Retry-After": str(seconds)})
        user = auth.check_password(db, name, password) if name and password else None
        sessions.settle_attempt(db, attempt, user is not None)
        if user is None:
            audit.record(db, name[:64] or "(none)", "user.login_failed", f"user:{name[:59]}", {"address": address})
            log.info("failed login for %r from %s", name[:64], address)
            return form(request, next, "Wrong user name or password.", 401)
        prior = sessions.find_session(db, request.cookies.get(COOKIE), console.settings.console.idle_minutes,
                                      touch=False)
        if prior is not None:           # a new login replaces the browser's old session, never keeps it alive
            sessions.end_session(db, prior.id)
        secret, session = sessions.new_session(db, user, address, console.settings.console.session_hours)
        audit.record(db, user.name, "user.login", f"user:{user.name}", {"address": address, "via": "password"})
        out = RedirectResponse(safe_next(next), 303)
        out.set_cookie(COOKIE, secret, max_age=int(console.settings.console.session_hours * 3600), path="/",
                       httponly=True, samesite="strict", secure=access.secure(request))
        out.delete_cookie(LOGIN_COOKIE, path="/login")
        return out

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request, who: Annotated[Who, Depends(access.page_user)]) -> Response:
        if who.session is not None:
            sessions.end_session(db, who.session.id)
            audit.record(db, who.user.name, "user.logout", f"user:{who.user.name}",
                         {"address": access.address(request)})
        out = RedirectResponse("/login", 303)
        out.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=access.secure(request))
        return out
