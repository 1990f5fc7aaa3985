"""The service's database: engine set-up (SQLite WAL or PostgreSQL via psycopg 3) and the queries the
service runs. Every write is its own short transaction, committed before the call returns, so an alert
whose start was recorded survives a crash of the process that recorded it.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ...errors import ConfigError
from . import upgrade
from .schema import Alert, Camera, Outbox, Verdict, utcnow

log = logging.getLogger(__name__)

ALERT_STATES = ("open", "closed", "interrupted")
MEDIA_STATES = ("pending", "complete", "missing", "skipped", "deleted")
EXPLANATION_STATES = ("pending", "running", "complete", "failed", "missing", "skipped")
CAMERA_STATES = ("running", "stopped", "offline")
VERDICTS = ("confirmed", "dismissed", "escalated")
REVIEWS = ("unreviewed",) + VERDICTS          # an alert's review: its newest verdict, or none yet
AuditHook = Callable[[Session, int], None]    # called in a write's transaction with each alert id it wrote


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:   # noqa: BLE001 - not a URL at all: say nothing of it
        return "<database URL>"


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (SQLAlchemy's own default driver is psycopg2)."""
    return "postgresql+psycopg://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url


def _in_memory(url: str) -> bool:
    return make_url(url).database in (None, "", ":memory:")


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    """SQLite in WAL mode with real transactions; ``immediate`` takes the write lock at BEGIN, so a
    writer waits its turn (busy timeout) instead of failing on a read-to-write upgrade. An in-memory
    database is one connection shared by every thread (tests)."""
    if _in_memory(url):
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        os.makedirs(os.path.dirname(os.path.abspath(str(make_url(url).database))), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None      # we issue BEGIN ourselves (pysqlite's own is late)
        cursor = dbapi_connection.cursor()
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat()


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (``xvad serve`` does it at start)."""
    db = Database(url)
    try:
        db.migrate()
    finally:
        db.close()


def alert_dict(a: Alert, review: str = "unreviewed") -> dict:
    """An alert as the API shows it (datetimes ISO 8601 UTC, files name -> relative path, its review)."""
    return {"review": review, "id": a.id, "uid": a.uid, "camera": a.camera, "started_at": _iso(a.started_at),
            "ended_at": _iso(a.ended_at), "start_time": a.start_time, "end_time": a.end_time,
            "peak_score": a.peak_score, "score": a.score, "windows": a.windows, "class_name": a.class_name,
            "class_index": a.class_index, "state": a.state, "end_reason": a.end_reason,
            "checkpoint_id": a.checkpoint_id, "xvad_version": a.xvad_version, "threshold": a.threshold,
            "policy": a.policy, "window": a.window, "stride": a.stride, "fps": a.fps,
            "media_state": a.media_state, "media_dir": a.media_dir, "files": json.loads(a.files_json or "{}"),
            "explanation_state": a.explanation_state, "explanation_error": a.explanation_error,
            "model_version": a.model_version, "host": a.host, "pid": a.pid, "created_at": _iso(a.created_at)}


def _newest_verdicts() -> Any:
    """The id of each alert's newest verdict (verdicts are append-only: the newest is the current one)."""
    return select(func.max(Verdict.id)).group_by(Verdict.alert_id)


def _reviews(s: Session, ids: list[int]) -> dict[int, str]:
    """Alert id -> its current verdict, for those of ``ids`` that have one."""
    if not ids:
        return {}
    rows = s.execute(select(Verdict.alert_id, Verdict.verdict).where(Verdict.alert_id.in_(ids),
                                                                     Verdict.id.in_(_newest_verdicts())))
    return {alert_id: verdict for alert_id, verdict in rows}


def _audit(s: Session, audit: AuditHook | None, ids: Any) -> None:
    """Call the hook ``audit`` in transaction ``s`` for each alert id of ``ids`` (none: nothing)."""
    if audit is not None:
        for alert_id in ids:
            audit(s, alert_id)


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")


class Database:
    """The service's database at ``url`` (``sqlite:///FILE`` or ``postgresql+psycopg://...``)."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        try:
            if self.url.startswith("sqlite") and _in_memory(self.url):
                self.engine = self._write_engine = _sqlite_engine(self.url, immediate=True)
            elif self.url.startswith("sqlite"):
                self.engine = _sqlite_engine(self.url, immediate=False)
                self._write_engine = _sqlite_engine(self.url, immediate=True)
            else:
                self.engine = self._write_engine = create_engine(self.url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"{redact(url)}: cannot use this database: {exc}".splitlines()[0]) from None
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (an empty database gets every table)."""
        try:
            upgrade.migrate(self._write_engine)
        except SQLAlchemyError as exc:
            raise ConfigError(f"{redact(self.url)}: cannot open the database: "
                              f"{str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}") from None

    def close(self) -> None:
        self.engine.dispose()
        self._write_engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (no commit)."""
        with self._read() as s:
            yield s

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction, committed when the block ends (rolled back on an exception)."""
        with self._write() as s, s.begin():
            yield s

    # -- cameras ------------------------------------------------------------------------------
    def upsert_camera(self, name: str, source: str, purpose: str, settings: dict) -> None:
        """Record camera ``name`` with its current source, purpose and settings (its state is kept)."""
        with self.transaction() as s:
            cam = s.scalar(select(Camera).where(Camera.name == name))
            if cam is None:
                cam = Camera(name=name, state="stopped", enabled=True)
                s.add(cam)
            cam.source, cam.purpose, cam.settings_json = source, purpose, json.dumps(settings, sort_keys=True)
            cam.updated_at = utcnow()

    def set_camera_state(self, name: str, state: str) -> None:
        _check(state, CAMERA_STATES, "camera state")
        with self.transaction() as s:
            s.execute(update(Camera).where(Camera.name == name).values(state=state, updated_at=utcnow()))

    def set_camera_enabled(self, name: str, enabled: bool) -> None:
        """An overseer's stop (False) or start (True); the process watching the camera follows it."""
        with self.transaction() as s:
            s.execute(update(Camera).where(Camera.name == name).values(enabled=bool(enabled), updated_at=utcnow()))

    def cameras(self) -> list[dict]:
        with self.session() as s:
            return [{"name": c.name, "source": c.source, "purpose": c.purpose, "state": c.state,
                     "enabled": bool(c.enabled),
                     "settings": json.loads(c.settings_json or "{}"), "updated_at": _iso(c.updated_at)}
                    for c in s.scalars(select(Camera).order_by(Camera.name))]

    # -- alerts -------------------------------------------------------------------------------
    def alert_started(self, *, uid: str, camera: str, started_at: datetime, start_time: float, score: float,
                      class_name: str | None, class_index: int, checkpoint_id: str | None, xvad_version: str,
                      threshold: float, policy: str, window: int, stride: int, fps: float,
                      media_dir: str | None, host: str, pid: int, model_version: str | None = None,
                      audit: AuditHook | None = None) -> int:
        """Record a new open alert and return its id; the same ``uid`` again returns the first row's id.
        ``audit`` is called in the same transaction with the new id (not for a uid already there)."""
        with self.transaction() as s:
            existing = s.scalar(select(Alert.id).where(Alert.uid == uid))
            if existing is not None:
                return existing
            a = Alert(uid=uid, camera=camera, started_at=started_at, start_time=start_time, peak_score=score,
                      score=score, windows=1, class_name=class_name, class_index=class_index, state="open",
                      checkpoint_id=checkpoint_id, xvad_version=xvad_version, threshold=threshold, policy=policy,
                      window=window, stride=stride, fps=fps, media_state="pending", media_dir=media_dir,
                      files_json="{}", explanation_state="pending", model_version=model_version, host=host,
                      pid=pid, created_at=utcnow())
            s.add(a)
            s.flush()
            _audit(s, audit, [a.id])
            return a.id

    def alert_updated(self, uid: str, *, peak_score: float, windows: int) -> None:
        with self.transaction() as s:
            s.execute(update(Alert).where(Alert.uid == uid).values(peak_score=peak_score, windows=windows))

    def alert_ended(self, uid: str, *, ended_at: datetime, end_time: float, peak_score: float, reason: str,
                    state: str = "closed", windows: int | None = None, audit: AuditHook | None = None) -> None:
        _check(state, ALERT_STATES[1:], "alert end state")
        values: dict[str, Any] = {"ended_at": ended_at, "end_time": end_time, "peak_score": peak_score,
                                  "end_reason": reason, "state": state}
        if windows is not None:
            values["windows"] = windows
        with self.transaction() as s:
            s.execute(update(Alert).where(Alert.uid == uid).values(**values))
            _audit(s, audit, s.scalars(select(Alert.id).where(Alert.uid == uid)) if audit is not None else ())

    def media_state(self, uid: str, state: str, *, files: dict[str, str] | None = None) -> None:
        """Set the media state of alert ``uid``; ``files`` (name -> path relative to its media folder)."""
        _check(state, MEDIA_STATES, "media state")
        with self.transaction() as s:
            a = s.scalar(select(Alert).where(Alert.uid == uid))
            if a is None:
                return
            a.media_state = state
            if files:                     # added to the files already recorded (the clip, then the report)
                a.files_json = json.dumps({**json.loads(a.files_json or "{}"), **files}, sort_keys=True)

    def explanation_state(self, uid: str, state: str, *, error: str | None = None) -> None:
        _check(state, EXPLANATION_STATES, "explanation state")
        with self.transaction() as s:
            s.execute(update(Alert).where(Alert.uid == uid).values(explanation_state=state, explanation_error=error))

    def close_interrupted(self, cameras: list[str] | None = None, audit: AuditHook | None = None) -> int:
        """Close the open alerts of ``cameras`` (None: all) as interrupted, now, and mark media and
        explanations they (or closed alerts) never finished as missing; returns how many alerts.

        The service calls it at start, before reading its cameras: whatever is still open for them
        was left by a process that died."""
        now = utcnow()

        def of(q: Any) -> Any:
            return q if cameras is None else q.where(Alert.camera.in_(list(cameras)))

        with self.transaction() as s:
            ids = list(s.scalars(of(select(Alert.id).where(Alert.state == "open")))) if audit is not None else []
            result: Any = s.execute(of(update(Alert).where(Alert.state == "open")).values(
                state="interrupted", ended_at=now, end_reason="interrupted"))
            n = result.rowcount
            s.execute(of(update(Alert).where(Alert.state != "open", Alert.media_state == "pending"))
                      .values(media_state="missing"))
            s.execute(of(update(Alert).where(Alert.state != "open",
                                             Alert.explanation_state.in_(("pending", "running"))))
                      .values(explanation_state="missing"))
            _audit(s, audit, ids)
        if n:
            log.warning("%d alert(s) left open by a stopped process closed as interrupted", n)
        return n

    def alert(self, alert_id: int) -> dict | None:
        with self.session() as s:
            a = s.get(Alert, alert_id)
            return None if a is None else alert_dict(a, _reviews(s, [a.id]).get(a.id, "unreviewed"))

    def alert_by_uid(self, uid: str) -> dict | None:
        with self.session() as s:
            a = s.scalar(select(Alert).where(Alert.uid == uid))
            return None if a is None else alert_dict(a, _reviews(s, [a.id]).get(a.id, "unreviewed"))

    def alerts(self, *, cameras: list[str] | None = None, state: str | None = None,
               since: datetime | None = None, until: datetime | None = None, min_score: float | None = None,
               review: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
        """Alerts matching every filter given, newest first (``since <= started_at < until``; ``review``:
        "unreviewed" or the current verdict), one page of them and the total that match."""
        conditions: list[Any] = []
        if cameras is not None:
            conditions.append(Alert.camera.in_(list(cameras)))
        if state is not None:
            conditions.append(Alert.state == state)
        if since is not None:
            conditions.append(Alert.started_at >= since)
        if until is not None:
            conditions.append(Alert.started_at < until)
        if min_score is not None:
            conditions.append(Alert.peak_score >= min_score)
        if review is not None:
            _check(review, REVIEWS, "review")
            decided = select(Verdict.alert_id)
            conditions.append(Alert.id.not_in(decided) if review == "unreviewed" else Alert.id.in_(
                decided.where(Verdict.verdict == review, Verdict.id.in_(_newest_verdicts()))))
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(Alert).where(*conditions))
            rows = list(s.scalars(select(Alert).where(*conditions).order_by(Alert.started_at.desc(), Alert.id.desc())
                                  .limit(max(0, int(limit))).offset(max(0, int(offset)))))
            reviews = _reviews(s, [a.id for a in rows])
            return [alert_dict(a, reviews.get(a.id, "unreviewed")) for a in rows], int(total or 0)

    def review_counts(self, cameras: list[str] | None = None) -> dict[str, dict[str, int]]:
        """Camera -> review ("unreviewed", "confirmed", ...) -> how many of its alerts have it, for
        ``cameras`` (None: every camera with an alert); every review word is there, 0 when none."""
        newest = select(func.max(Verdict.id).label("vid"), Verdict.alert_id).group_by(Verdict.alert_id).subquery()
        q = (select(Alert.camera, Verdict.verdict, func.count()).select_from(Alert)
             .outerjoin(newest, newest.c.alert_id == Alert.id)
             .outerjoin(Verdict, Verdict.id == newest.c.vid).group_by(Alert.camera, Verdict.verdict))
        if cameras is not None:
            q = q.where(Alert.camera.in_(list(cameras)))
        out = {c: dict.fromkeys(REVIEWS, 0) for c in cameras or []}
        with self.session() as s:
            for camera, verdict, n in s.execute(q):
                out.setdefault(camera, dict.fromkeys(REVIEWS, 0))[verdict or "unreviewed"] += int(n)
        return out

    # -- retention ----------------------------------------------------------------------------
    def media_older_than(self, camera: str, before: datetime) -> list[dict]:
        """Closed alerts of ``camera`` that started before ``before`` and still have media."""
        with self.session() as s:
            rows = s.scalars(select(Alert).where(
                Alert.camera == camera, Alert.started_at < before, Alert.state != "open",
                Alert.media_state.in_(("complete", "missing", "pending")), Alert.media_dir.is_not(None)))
            return [alert_dict(a) for a in rows]

    def delete_alerts_older_than(self, camera: str, before: datetime, audit: AuditHook | None = None) -> list[int]:
        """Delete the closed alerts of ``camera`` that started before ``before`` (their verdicts go with
        them: ON DELETE CASCADE); returns their ids."""
        with self.transaction() as s:
            ids = list(s.scalars(select(Alert.id).where(Alert.camera == camera, Alert.started_at < before,
                                                        Alert.state != "open")))
            if ids:
                s.execute(delete(Alert).where(Alert.id.in_(ids)))
            _audit(s, audit, ids)
            return ids

    # -- integrations -------------------------------------------------------------------------
    def enqueue(self, kind: str, target: str, payload: dict, topic: str | None = None) -> None:
        """Queue an MQTT message or webhook call for the delivery thread."""
        _check(kind, ("mqtt", "webhook"), "delivery kind")
        with self.transaction() as s:
            s.add(Outbox(kind=kind, target=target, topic=topic, payload=json.dumps(payload, sort_keys=True),
                         attempts=0, next_try_at=utcnow()))

    def outbox_due(self, limit: int = 100, now: datetime | None = None) -> list[dict]:
        """Deliveries not yet sent whose next try is due, oldest first."""
        now = now or utcnow()
        with self.session() as s:
            rows = s.scalars(select(Outbox).where(Outbox.sent_at.is_(None), Outbox.next_try_at <= now,
                                                  Outbox.claimed_until.is_(None) | (Outbox.claimed_until < now))
                             .order_by(Outbox.id).limit(limit))
            return [{"id": o.id, "kind": o.kind, "target": o.target, "topic": o.topic,
                     "payload": json.loads(o.payload), "attempts": o.attempts} for o in rows]

    def outbox_claim(self, owner: str, limit: int = 50, lease: float = 60.0) -> list[dict]:
        """Due deliveries that ``owner`` now holds for ``lease`` seconds: each row is claimed in one
        conditional update, so two processes sharing the outbox never send the same message."""
        now = utcnow()
        claimed = []
        for row in self.outbox_due(limit, now):
            with self.transaction() as s:
                result: Any = s.execute(update(Outbox).where(
                    Outbox.id == row["id"], Outbox.sent_at.is_(None),
                    (Outbox.claimed_until.is_(None)) | (Outbox.claimed_until < now)).values(
                    claimed_by=owner, claimed_until=now + timedelta(seconds=lease)))
            if result.rowcount == 1:
                claimed.append(row)
        return claimed

    def outbox_sent(self, item_id: int) -> None:
        with self.transaction() as s:
            s.execute(update(Outbox).where(Outbox.id == item_id).values(
                sent_at=utcnow(), attempts=Outbox.attempts + 1, error=None, claimed_by=None, claimed_until=None))

    def outbox_failed(self, item_id: int, error: str, next_try_at: datetime) -> None:
        with self.transaction() as s:
            s.execute(update(Outbox).where(Outbox.id == item_id).values(
                attempts=Outbox.attempts + 1, error=error[:1000], next_try_at=next_try_at, claimed_by=None,
                claimed_until=None))
