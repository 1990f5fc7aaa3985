"""Users and API tokens of the service.

Passwords and token secrets are stored only as argon2 hashes (argon2-cffi). A token reads
``xvad_<id>_<secret>``: the id finds its row, the secret is verified against the hash. Verified
tokens are remembered for a minute by their sha256 (so a busy client does not pay argon2 on every
request), but revocation and disabled users are checked on every call.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update

from ..errors import ConfigError
from .settings import NAME
from .store import Database
from .store.schema import ApiToken, User, utcnow

log = logging.getLogger(__name__)

__all__ = ["ROLES", "AuthUser", "check_token", "check_password", "create_user", "issue_token", "revoke_token",
           "user_can_see", "users"]

ROLES = ("admin", "reviewer", "viewer")
PREFIX = "xvad_"
CACHE_SECONDS = 60.0

_hasher = PasswordHasher()
_dummy = _hasher.hash("not a secret of anyone")     # verified against when no row matches: same work
_cache: dict[str, tuple[int, float]] = {}            # sha256(token) -> (token id, valid until)
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class AuthUser:
    """Who made a request: a role and the cameras they may see (None: every camera)."""

    id: int
    name: str
    role: str
    cameras: tuple[str, ...] | None


def _user(u: User) -> AuthUser:
    cams = tuple(c for c in (u.cameras or "").split(",") if c) if u.cameras is not None else None
    return AuthUser(u.id, u.name, u.role, cams)


def _verify(hashed: str, secret: str) -> bool:
    try:
        return _hasher.verify(hashed, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def parse_cameras(text: str | None) -> list[str] | None:
    """``"door,yard"`` -> ``["door", "yard"]``; None or empty: every camera."""
    if text is None or not text.strip():
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in names if not NAME.match(c)]
    if bad:
        raise ConfigError(f"--cameras: {bad[0]!r} is not a camera name")
    return names


def create_user(db: Database, name: str, role: str, password: str | None,
                cameras: list[str] | None = None) -> AuthUser:
    """Add user ``name`` with ``role`` (admin, reviewer, viewer), limited to ``cameras`` when given."""
    if not NAME.match(name):
        raise ConfigError(f"user name {name!r}: use letters, digits, '_' and '-' (at most 64)")
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: must be one of {', '.join(ROLES)}")
    if password is not None and len(password) < 8:
        raise ConfigError("password: must have at least 8 characters")
    with db.transaction() as s:
        if s.scalar(select(User.id).where(User.name == name)) is not None:
            raise ConfigError(f"user {name!r} already exists")
        u = User(name=name, role=role, cameras=",".join(cameras) if cameras else None,
                 password_hash=_hasher.hash(password) if password is not None else None,
                 created_at=utcnow(), disabled=False)
        s.add(u)
        s.flush()
        log.info("user %s added (%s)", name, role)
        return _user(u)


def users(db: Database) -> list[dict]:
    """Every user with role, cameras, and how many live tokens they hold."""
    with db.session() as s:
        out = []
        for u in s.scalars(select(User).order_by(User.name)):
            live = s.scalars(select(ApiToken.id).where(ApiToken.user_id == u.id, ApiToken.revoked.is_(False))).all()
            out.append({"name": u.name, "role": u.role, "cameras": _user(u).cameras, "disabled": u.disabled,
                        "tokens": len(live), "created_at": u.created_at.isoformat()})
        return out


def check_password(db: Database, name: str, password: str) -> AuthUser | None:
    """The user ``name`` if ``password`` is theirs (and they are not disabled), else None."""
    with db.session() as s:
        u = s.scalar(select(User).where(User.name == name))
        ok = _verify(u.password_hash if u is not None and u.password_hash else _dummy, password)
        return _user(u) if ok and u is not None and u.password_hash and not u.disabled else None


def issue_token(db: Database, name: str) -> str:
    """A new API token for user ``name``; the returned string is the only time the secret exists."""
    secret = secrets.token_urlsafe(32)
    with db.transaction() as s:
        u = s.scalar(select(User).where(User.name == name))
        if u is None:
            raise ConfigError(f"no user {name!r} (add one with `xvad users add`)")
        t = ApiToken(user_id=u.id, secret_hash=_hasher.hash(secret), created_at=utcnow(), revoked=False)
        s.add(t)
        s.flush()
        log.info("token %d issued to %s", t.id, name)
        return f"{PREFIX}{t.id}_{secret}"


def revoke_token(db: Database, token_id: int) -> None:
    with db.transaction() as s:
        s.execute(update(ApiToken).where(ApiToken.id == token_id).values(revoked=True))


def check_token(db: Database, token: str) -> AuthUser | None:
    """The user a token belongs to, or None (malformed, unknown, wrong secret, revoked, user disabled)."""
    if not isinstance(token, str) or not token.startswith(PREFIX):
        return None
    token_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or not token_id.isdigit() or not secret:
        return None
    key = hashlib.sha256(token.encode()).hexdigest()
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
    with db.session() as s:
        row = s.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                        .where(ApiToken.id == int(token_id))).first()
        t, u = row if row is not None else (None, None)
        if cached is not None and t is not None and cached[0] == t.id and cached[1] > now:
            verified = True
        else:
            verified = _verify(t.secret_hash if t is not None else _dummy, secret) and t is not None
        if not verified or t is None or u is None or t.revoked or u.disabled:
            return None
        user = _user(u)
    if cached is None or cached[1] <= now:
        with _cache_lock:
            _cache[key] = (t.id, now + CACHE_SECONDS)
            for k in [k for k, (_, until) in _cache.items() if until <= now]:
                del _cache[k]
        with db.transaction() as s:
            s.execute(update(ApiToken).where(ApiToken.id == t.id).values(last_used_at=utcnow()))
    return user


def user_can_see(user: AuthUser, camera: str) -> bool:
    """Whether ``user`` may see camera ``camera``'s state and alerts."""
    return user.cameras is None or camera in user.cameras
