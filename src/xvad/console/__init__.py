"""The review console of ``xvad serve``: server-rendered pages (Jinja2) where a person reviews each
alert with its explanation, records a verdict, stops and starts cameras and reads the audit log.

:mod:`.access` says who makes each request (API token, session cookie or trusted proxy), :mod:`.sessions`
keeps the sessions and the login throttle, :mod:`.web` the templates, static files and security
headers; the pages are in :mod:`.login`, :mod:`.queue`, :mod:`.alert`, :mod:`.admin` and :mod:`.users`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from .access import Access, Who

__all__ = ["Access", "Console", "Who", "mount"]


@dataclass
class Console:
    """What the console's routes work with: the database, the settings, the running service (None in
    an API-only process) and the access rules."""

    db: Any
    settings: Any
    service: Any
    access: Access

    @property
    def media_root(self) -> str:
        import os
        return os.path.realpath(os.path.join(str(self.settings.data), "media"))


def mount(app: FastAPI, db: Any, settings: Any, service: Any = None, access: Access | None = None) -> Console:
    """Add the console's pages to ``app`` (and its security headers to every response)."""
    from starlette.exceptions import HTTPException

    from . import admin, alert, login, queue, users
    from .web import SecurityHeaders, http_error, static_file

    console = Console(db, settings, service, access or Access(db, settings))
    # the routes go on the app itself (not an included router): one flat route table, which the
    # security tests walk so that no route can be left unprotected
    app.add_api_route("/static/{name}", static_file, methods=["GET"], include_in_schema=False)
    for module in (login, queue, alert, admin, users):
        module.add_routes(app, console)
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(HTTPException, http_error)
    return console
