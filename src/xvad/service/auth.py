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
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update

from ..errors import ConfigError
from . import audit
from .settings import NAME
from .store import Database
from .store.schema import ApiToken, User, utcnow

log = logging.getLogger(__name__)

__all__ = ["ROLES", "AuthUser", "check_token", "check_password", "create_user", "issue_token", "revoke_token",
           "update_user", "sees_every_camera", "user_can_see", "users"]

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


def _check_password(password: str | None) -> None:
    if password is not None and len(password) < 8:
        raise ConfigError("password: must have at least 8 characters")


def create_user(db: Database, name: str, role: str, password: str | None,
                cameras: list[str] | None = None, *, actor: str = "system") -> AuthUser:
    """Add user ``name`` with ``role`` (admin, reviewer, viewer), limited to ``cameras`` when given;
    audited as ``user.added`` by ``actor``."""
    if not NAME.match(name):
        raise ConfigError(f"user name {name!r}: use letters, digits, '_' and '-' (at most 64)")
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: must be one of {', '.join(ROLES)}")
    _check_password(password)
    with db.transaction() as s:
        if s.scalar(select(User.id).where(User.name == name)) is not None:
            raise ConfigError(f"user {name!r} already exists")
        u = User(name=name, role=role, cameras=",".join(cameras) if cameras else None,
                 password_hash=_hasher.hash(password) if password is not None else None,
                 created_at=utcnow(), disabled=False)
        s.add(u)
        s.flush()
        audit.record(db, actor, "user.added", f"user:{name}",
                     {"role": role, "cameras": list(cameras) if cameras else None}, session=s)
        log.info("user %s added (%s)", name, role)
        return _user(u)


_KEEP = object()     # update_user: this setting is not changed


def update_user(db: Database, name: str, *, role: str | None = None, cameras: Any = _KEEP,
                disabled: bool | None = None, password: str | None = None, actor: str = "system") -> AuthUser:
    """Change user ``name``'s role, cameras (a list, or None: every camera), disabled flag or password
    (each only when given); audited as ``user.changed`` with what changed (never the password)."""
    if role is not None and role not in ROLES:
        raise ConfigError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    _check_password(password)
    with db.transaction() as s:
        u = s.scalar(select(User).where(User.name == name))
        if u is None:
            raise ConfigError(f"no user {name!r}")
        changed: dict[str, Any] = {}
        if role is not None and role != u.role:
            u.role = changed["role"] = role
        if cameras is not _KEEP:
            text = ",".join(cameras) if cameras else None
            if text != u.cameras:
                u.cameras, changed["cameras"] = text, list(cameras) if cameras else None
        if disabled is not None and bool(disabled) != u.disabled:
            u.disabled = changed["disabled"] = bool(disabled)
        if password is not None:
            u.password_hash, changed["password"] = _hasher.hash(password), "changed"
        if changed:
            audit.record(db, actor, "user.changed", f"user:{name}", changed, session=s)
            log.info("user %s changed: %s", name, ", ".join(changed))
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


def issue_token(db: Database, name: str, *, actor: str = "system") -> str:
    """A new API token for user ``name``; the returned string is the only time the secret exists.
    Audited as ``user.token_issued`` (the token's id, never its secret)."""
    secret = secrets.token_urlsafe(32)
    with db.transaction() as s:
        u = s.scalar(select(User).where(User.name == name))
        if u is None:
            raise ConfigError(f"no user {name!r} (add one with `xvad users add`)")
        t = ApiToken(user_id=u.id, secret_hash=_hasher.hash(secret), created_at=utcnow(), revoked=False)
        s.add(t)
        s.flush()
        audit.record(db, actor, "user.token_issued", f"user:{name}", {"token_id": t.id}, session=s)
        log.info("token %d issued to %s", t.id, name)
        return f"{PREFIX}{t.id}_{secret}"


def revoke_token(db: Database, token_id: int, *, actor: str = "system") -> None:
    """Revoke API token ``token_id``; audited as ``user.changed`` of its owner."""
    with db.transaction() as s:
        owner = s.scalar(select(User.name).join(ApiToken, ApiToken.user_id == User.id).where(
            ApiToken.id == token_id, ApiToken.revoked.is_(False)))
        s.execute(update(ApiToken).where(ApiToken.id == token_id).values(revoked=True))
        if owner is not None:
            audit.record(db, actor, "user.changed", f"user:{owner}", {"token_revoked": token_id}, session=s)


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


def sees_every_camera(user: AuthUser) -> bool:
    """Whether ``user`` is limited to no cameras: what whole-service views (the audit log, users,
    metrics) need, since they speak of every camera."""
    return user.cameras is None


def user_can_see(user: AuthUser, camera: str) -> bool:
    """Whether ``user`` may see camera ``camera``'s state and alerts."""
    return user.cameras is None or camera in user.cameras
