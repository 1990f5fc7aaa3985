"""Who makes a request, for every route of ``xvad serve``: an API token (``Authorization: Bearer``), a
console session cookie, or, when configured, a trusted reverse proxy's user header (single sign-on).

API and media routes answer 401 without one; pages redirect to the login page. A request that changes
something and came with a session (not a token) must carry the session's CSRF token, as the form field
``csrf`` or the header ``X-CSRF-Token``.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from sqlalchemy import select

from ..service import audit, auth
from ..service.store.schema import User
from . import sessions
from .sessions import Session

log = logging.getLogger(__name__)

__all__ = ["COOKIE", "SAFE_METHODS", "Access", "Who", "safe_next"]

COOKIE = "xvad_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Who:
    """The user of a request, and their session when they came through the browser."""

    user: auth.AuthUser
    session: Session | None
    via: str                       # "token", "session" or "proxy"

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""


def safe_next(target: str | None) -> str:
    """``target`` if it is a path of this site (``/...``, not ``//host`` nor ``/\\host``), else ``/``."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or any(
            c in target for c in "\r\n\\"):
        return "/"
    return target


class Access:
    """The one way every route learns its user (see the module's text)."""

    def __init__(self, db: Any, settings: Any) -> None:
        self.db = db
        self.console = settings.console
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in self.console.trusted_proxies]

    # -- finding the user ---------------------------------------------------------------------
    @staticmethod
    def address(request: Request) -> str:
        return request.client.host if request.client else ""

    def trusted(self, request: Request) -> bool:
        """Whether the request came straight from one of the trusted proxies."""
        try:
            ip = ipaddress.ip_address(self.address(request))
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    def identify(self, request: Request) -> Who | None:
        """The request's user, or None; worked out once per request."""
        if "who" in request.scope:
            return request.scope["who"]
        who = self._identify(request)
        request.scope["who"] = who
        return who

    def _identify(self, request: Request) -> Who | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found = auth.check_token(self.db, token.strip())
            return Who(found, None, "token") if found is not None else None
        session = sessions.find_session(self.db, request.cookies.get(COOKIE), self.console.idle_minutes,
                                        touch=request.url.path != "/queue/live")
        header = self.console.trusted_proxy_header
        if header and request.headers.get(header) is not None:
            if not self.trusted(request):
                log.debug("%s header from untrusted %s ignored", header, self.address(request))
            else:
                return self._proxy_user(request, request.headers[header].strip(), session)
        return Who(session.user, session, "session") if session is not None else None

    def _proxy_user(self, request: Request, name: str, session: Session | None) -> Who | None:
        """The existing, enabled user a trusted proxy names, in a session of their own (for CSRF)."""
        if session is not None and session.user.name == name:
            return Who(session.user, session, "proxy")
        with self.db.session() as s:
            u = s.scalar(select(User).where(User.name == name))
            user = sessions.auth_user(u) if u is not None and not u.disabled else None
        if user is None:
            log.info("proxy named unknown or disabled user %r", name[:64])
            return None
        secret, session = sessions.new_session(self.db, user, self.address(request), self.console.session_hours)
        self.set_cookie(request, secret)
        audit.record(self.db, user.name, "user.login", f"user:{user.name}",
                     {"address": self.address(request), "via": "proxy"})
        return Who(user, session, "proxy")

    # -- cookies ------------------------------------------------------------------------------
    def secure(self, request: Request) -> bool:
        return bool(self.console.secure_cookies) or request.url.scheme == "https"

    def set_cookie(self, request: Request, secret: str | None) -> None:
        """Have the response set (``secret``) or clear (None) the session cookie (see :mod:`.web`)."""
        request.scope.setdefault("xvad_cookies", []).append(
            (COOKIE, secret, int(self.console.session_hours * 3600), self.secure(request)))

    # -- dependencies -------------------------------------------------------------------------
    async def check_csrf(self, request: Request, who: Who) -> None:
        if request.method in SAFE_METHODS or who.session is None:
            return
        sent = request.headers.get("x-csrf-token")
        if sent is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            field = (await request.form()).get("csrf")
            sent = field if isinstance(field, str) else None
        if not sent or not hmac.compare_digest(sent.encode(), who.session.csrf.encode()):
            raise HTTPException(403, "this form has expired or did not come from this site (CSRF token "
                                     "missing or wrong): reload the page and try again")

    async def api_user(self, request: Request) -> auth.AuthUser:
        """For API and media routes: the user, or 401."""
        who = self.identify(request)
        if who is None:
            raise HTTPException(401, "a valid API token (Authorization: Bearer TOKEN) or a console session is "
                                     "needed", headers={"WWW-Authenticate": "Bearer"})
        await self.check_csrf(request, who)
        return who.user

    async def page_user(self, request: Request) -> Who:
        """For console pages: the user and session, or a redirect to the login page."""
        who = self.identify(request)
        if who is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method not in SAFE_METHODS:
                target = "/"
            raise HTTPException(303, "log in first", headers={"Location": f"/login?next={quote(target, safe='')}"})
        await self.check_csrf(request, who)
        return who
