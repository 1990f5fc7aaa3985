"""Browser sessions of the console and the login throttle.

A session's cookie holds 32 random bytes; the database keeps only their sha256 (``web_sessions.id``),
so a copy of the database opens no session. A session ends ``session_hours`` after its login, after
``idle_minutes`` without a request, or at logout (revoked). Each has its own CSRF token.

Logins are slowed down per user name and per address: after ``login_failures`` failures within
15 minutes (since the last success), the next attempt must wait a delay that doubles with each further
failure, up to 15 minutes; the wait is checked before any password is.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from ..service.auth import AuthUser
from ..service.store.schema import LoginAttempt, User, WebSession, utcnow

__all__ = ["FIRST_DELAY", "MAX_DELAY", "WINDOW", "Session", "auth_user", "delay_after", "digest", "end_session",
           "end_user_sessions", "failures", "find_session", "login_delay", "new_session", "claim_attempt",
           "settle_attempt"]

WINDOW = timedelta(minutes=15)      # failures older than this no longer count
FIRST_DELAY = 30.0                  # seconds to wait after the limit is reached; doubles per failure after it
MAX_DELAY = 900.0                   # 15 minutes at most


@dataclass(frozen=True)
class Session:
    """A live browser session: whose, its CSRF token, and when it ends."""

    id: str
    user: AuthUser
    csrf: str
    expires_at: datetime


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def auth_user(u: User) -> AuthUser:
    cams = tuple(c for c in (u.cameras or "").split(",") if c) if u.cameras is not None else None
    return AuthUser(u.id, u.name, u.role, cams)


def new_session(db, user: AuthUser, address: str, hours: float) -> tuple[str, Session]:
    """Open a session for ``user``; returns the cookie's secret (never stored) and the session."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    row = WebSession(id=digest(secret), user_id=user.id, created_at=now, expires_at=now + timedelta(hours=hours),
                     last_seen_at=now, csrf=secrets.token_urlsafe(32), address=address[:64], revoked=False)
    with db.transaction() as s:
        s.add(row)
    return secret, Session(row.id, user, row.csrf, row.expires_at)


def find_session(db, secret: str | None, idle_minutes: float, touch: bool = True) -> Session | None:
    """The live session whose cookie secret is ``secret`` (its last-seen time moved on, unless not
    ``touch``: a page polling by itself is not a person at work), or None: unknown, revoked, expired,
    idle too long, or its user disabled."""
    if not secret or len(secret) > 128:
        return None
    key = digest(secret)
    now = utcnow()
    with db.session() as s:
        row = s.execute(select(WebSession, User).join(User, User.id == WebSession.user_id)
                        .where(WebSession.id == key)).first()
        if row is None:
            return None
        ws, u = row
        if ws.revoked or u.disabled or ws.expires_at <= now or ws.last_seen_at + timedelta(minutes=idle_minutes) <= now:
            return None
        found = Session(ws.id, auth_user(u), ws.csrf, ws.expires_at)
    if touch and (now - ws.last_seen_at).total_seconds() > 5:          # no write on every request of a page's burst
        with db.transaction() as s:
            s.execute(update(WebSession).where(WebSession.id == key).values(last_seen_at=now))
    return found


def end_session(db, session_id: str) -> None:
    """Logout: the session is revoked (its row stays, for the record)."""
    with db.transaction() as s:
        s.execute(update(WebSession).where(WebSession.id == session_id).values(revoked=True))


def end_user_sessions(db, user_id: int) -> None:
    """Every session of a user revoked (they were disabled, or their role or cameras changed)."""
    with db.transaction() as s:
        s.execute(update(WebSession).where(WebSession.user_id == user_id).values(revoked=True))


_claims = threading.Lock()


def claim_attempt(db, username: str, address: str, limit: int) -> tuple[float, int | None]:
    """``(wait, None)`` when a login must wait, else ``(0, id)`` of the attempt, recorded at once as a
    failure: parallel tries all count before any password is verified (:func:`settle_attempt`)."""
    with _claims:
        wait = login_delay(db, username, address, limit)
        if wait > 0:
            return wait, None
        with db.transaction() as s:
            row = LoginAttempt(at=utcnow(), username=username[:64], address=address[:64], ok=False)
            s.add(row)
            s.flush()
            return 0.0, int(row.id)


def settle_attempt(db, attempt_id: int, ok: bool) -> None:
    """The claimed attempt turned out right (``ok``) or stays a failure."""
    if ok:
        with db.transaction() as s:
            s.execute(update(LoginAttempt).where(LoginAttempt.id == attempt_id).values(ok=True))


def failures(db, column, value: str, now: datetime) -> tuple[int, datetime | None]:
    """Failed attempts for ``value`` of ``column`` (user name or address) within the window (for a user
    name, since its last success: an address's count is not reset by one account that logs in); and when
    the latest of them was."""
    with db.session() as s:
        last_ok = None if column is LoginAttempt.address else s.scalar(
            select(func.max(LoginAttempt.at)).where(column == value, LoginAttempt.ok.is_(True),
                                                    LoginAttempt.at > now - WINDOW))
        since = max(now - WINDOW, last_ok) if last_ok is not None else now - WINDOW
        n, latest = s.execute(select(func.count(), func.max(LoginAttempt.at)).where(
            column == value, LoginAttempt.ok.is_(False), LoginAttempt.at > since)).one()
    return int(n or 0), latest


def delay_after(n: int, limit: int) -> float:
    """Seconds to wait after ``n`` failures when ``limit`` are allowed: 0 below it, then doubling."""
    if n < limit:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2.0 ** (n - limit))


def login_delay(db, username: str, address: str, limit: int) -> float:
    """Seconds until a login for ``username`` from ``address`` may be tried again (0: now)."""
    now = utcnow()
    wait = 0.0
    for column, value in ((LoginAttempt.username, username[:64]), (LoginAttempt.address, address[:64])):
        n, latest = failures(db, column, value, now)
        if latest is not None:
            left = delay_after(n, limit) - (now - latest).total_seconds()
            wait = max(wait, left)
    return max(0.0, wait)
