"""What every console page shares: the Jinja2 templates (autoescaped), the static CSS and JavaScript,
and the security headers and session cookies put on every response of the app."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .. import __version__

__all__ = ["STATIC", "TEMPLATES", "SecurityHeaders", "environment", "http_error", "render", "static_file"]

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "templates")
STATIC = os.path.join(HERE, "static")
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

HEADERS = [(b"content-security-policy", b"default-src 'self'; img-src 'self' data:; media-src 'self'; "
                                        b"object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
                                        b"form-action 'self'"),
           (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"same-origin"),
           (b"x-frame-options", b"DENY")]

_env: Environment | None = None


def when(value: str | datetime | None) -> str:
    """An ISO time as the pages show it: ``2026-12-01 11:45:10 UTC``."""
    if not value:
        return ""
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def plain(value: Any) -> str:
    """A value of an audit entry's details in words: lists joined, None as "none"."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {plain(v)}" for k, v in value.items())
    return str(value)


def environment() -> Environment:
    global _env
    if _env is None:
        _env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                           trim_blocks=True, lstrip_blocks=True)
        _env.filters["when"] = when
        _env.filters["plain"] = plain
    return _env


def render(name: str, who: Any, status: int = 200, headers: dict | None = None, **context: Any) -> HTMLResponse:
    """The page ``name`` for ``who`` (None on the login page)."""
    html = environment().get_template(name).render(who=who, version=__version__, **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 422: "Not valid", 429: "Too many attempts"}
MACHINE_PATHS = ("/api/", "/healthz", "/metrics", "/queue/live")


async def http_error(request: Request, exc: Any) -> Response:
    """Errors of pages as a page; of the API, media and redirects as FastAPI answers them (JSON)."""
    if request.url.path.startswith(MACHINE_PATHS) or exc.status_code < 400:
        return await http_exception_handler(request, exc)
    return render("error.html.j2", request.scope.get("who"), exc.status_code, code=exc.status_code,
                  title=TITLES.get(exc.status_code, "Error"), message=str(exc.detail),
                  headers=getattr(exc, "headers", None))


def static_file(name: str) -> FileResponse:
    """One of the console's own CSS or JavaScript files (nothing else is served from there)."""
    ext = os.path.splitext(name)[1]
    path = os.path.join(STATIC, name)
    if ext not in STATIC_TYPES or os.path.basename(name) != name or not os.path.isfile(path):
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[ext], headers={"Cache-Control": "no-cache"})


def cookie_header(name: str, value: str | None, max_age: int, secure: bool) -> bytes:
    """``Set-Cookie`` for the session: HttpOnly, SameSite=Strict, Path=/, Secure behind TLS; None clears it."""
    text = f"{name}={value or ''}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age if value else 0}"
    return (text + ("; Secure" if secure else "")).encode()


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, and the session cookies a request's
    authentication asked for (``scope["xvad_cookies"]``, see :meth:`.access.Access.set_cookie`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers += [(k, v) for k, v in HEADERS if k not in present]
                for name, value, max_age, secure in scope.get("xvad_cookies", []):
                    headers.append((b"set-cookie", cookie_header(name, value, max_age, secure)))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)
