"""The service's tables as SQLAlchemy 2 declarative models: cameras, alerts, users, API tokens, the
outbox of MQTT/webhook deliveries, the review record (audit log, verdicts, console sessions, login
attempts) and each camera's adopted model versions. The migrations in ``migrations/versions`` create exactly these."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, TypeDecorator, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import Index, UniqueConstraint

__all__ = ["Alert", "ApiToken", "AuditEntry", "Base", "Camera", "CameraModel", "LoginAttempt", "Outbox", "User",
           "UtcDateTime", "Verdict", "WebSession", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator):
    """A UTC datetime on every backend: aware datetimes in and out (SQLite keeps no time zone; naive
    values given to it are taken as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Camera(Base):
    """A camera the service knows, with its settings and its last state (running, stopped, offline)."""

    __tablename__ = "cameras"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text, default="")
    settings_json: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(16), default="stopped")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)   # stopped or started by an overseer
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Alert(Base):
    """One alert: when and where, its scores and class, the model and policy in force, its media."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)    # uuid4 text
    camera: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[Optional[datetime]] = mapped_column(UtcDateTime)
    start_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[Optional[float]] = mapped_column(Float)
    peak_score: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    windows: Mapped[int] = mapped_column(Integer, default=1)
    class_name: Mapped[Optional[str]] = mapped_column(String(128))
    class_index: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    end_reason: Mapped[Optional[str]] = mapped_column(String(64))
    checkpoint_id: Mapped[Optional[str]] = mapped_column(String(128))
    xvad_version: Mapped[str] = mapped_column(String(32))
    threshold: Mapped[float] = mapped_column(Float)
    policy: Mapped[str] = mapped_column(String(16))
    window: Mapped[int] = mapped_column(Integer)
    stride: Mapped[int] = mapped_column(Integer)
    fps: Mapped[float] = mapped_column(Float)
    media_state: Mapped[str] = mapped_column(String(16), default="pending")
    media_dir: Mapped[Optional[str]] = mapped_column(Text)
    files_json: Mapped[str] = mapped_column(Text, default="{}")      # file name -> path relative to media_dir
    explanation_state: Mapped[str] = mapped_column(String(16), default="pending")
    explanation_error: Mapped[Optional[str]] = mapped_column(Text)
    model_version: Mapped[Optional[str]] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class User(Base):
    """A person or program allowed to use the API: a role and optionally the only cameras they may see."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    cameras: Mapped[Optional[str]] = mapped_column(Text)          # comma list; NULL: every camera
    password_hash: Mapped[Optional[str]] = mapped_column(Text)    # argon2
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """An API token ``xvad_<id>_<secret>``: only the argon2 hash of the secret is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(UtcDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Outbox(Base):
    """An MQTT message or webhook call waiting to be delivered (or retried after a failure)."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))                 # mqtt / webhook
    target: Mapped[str] = mapped_column(Text)                     # broker or URL
    topic: Mapped[Optional[str]] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)                    # JSON
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    sent_at: Mapped[Optional[datetime]] = mapped_column(UtcDateTime)
    error: Mapped[Optional[str]] = mapped_column(Text)
    claimed_by: Mapped[Optional[str]] = mapped_column(String(255))   # the process delivering it
    claimed_until: Mapped[Optional[datetime]] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """One entry of the append-only audit log: who did what to which target, chained to the entry
    before it by ``prev_hash`` (see :mod:`xvad.service.audit`). The id is the chain order; SQLite's
    AUTOINCREMENT never hands out an id again, like PostgreSQL's sequence."""

    __tablename__ = "audit_log"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64))               # "system" or a user name
    action: Mapped[str] = mapped_column(String(32))              # alert.raised, user.login, ...
    target: Mapped[str] = mapped_column(String(128), index=True)  # "alert:17", "camera:door", "user:ann"
    details: Mapped[str] = mapped_column(Text)                   # a JSON object
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Verdict(Base):
    """A person's decision on an alert (confirmed, dismissed, escalated) with its reason. Append-only:
    the alert's current verdict is its newest row."""

    __tablename__ = "verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    user: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebSession(Base):
    """A browser session of the console: only the sha256 of the cookie's secret is kept."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)   # sha256 hex of the cookie secret
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    csrf: Mapped[str] = mapped_column(String(64))                 # random, one per session
    address: Mapped[Optional[str]] = mapped_column(String(64))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginAttempt(Base):
    """One login attempt on the console, kept for the throttle on failures by user name and address."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    ok: Mapped[bool] = mapped_column(Boolean)


class CameraModel(Base):
    """One model version adopted for a camera (``xvad adapt``): its checkpoint file (relative to the data
    folder), its id and threshold, what it was adapted from and measured, who adopted it. At most one
    row per camera is active (a partial unique index); none active: the camera runs its configured model.
    ``previous_version`` is the version that was active when this one was adopted (0: the configured
    model), where a rollback goes back to."""

    __tablename__ = "camera_models"
    __table_args__ = (UniqueConstraint("camera", "version", name="uq_camera_models_camera_version"),
                      Index("ix_camera_models_one_active", "camera", unique=True,
                            sqlite_where=text("active"), postgresql_where=text("active")))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)                  # 1, 2, ... per camera
    path: Mapped[str] = mapped_column(Text)                        # models/CAMERA/vN.pt in the data folder
    checkpoint_id: Mapped[str] = mapped_column(String(128))
    threshold: Mapped[Optional[float]] = mapped_column(Float)      # the checkpoint's own (None: it has none)
    base_checkpoint_id: Mapped[Optional[str]] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    note: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    previous_version: Mapped[int] = mapped_column(Integer, default=0)
