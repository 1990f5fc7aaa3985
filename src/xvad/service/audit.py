"""The audit log: an append-only record of who did what, each entry chained to the one before it.

An entry's ``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of its id, time (ISO
8601 UTC with microseconds), actor, action, target, details and ``prev_hash``, the previous entry's hash
("0" * 64 for the first). Editing, deleting, inserting or reordering rows breaks the chain, and
:func:`verify` names the first entry where it breaks. Appends are serialised across processes: on
PostgreSQL by ``LOCK TABLE audit_log IN EXCLUSIVE MODE`` in the appending transaction, on SQLite by
its immediate write transaction. Pruning the oldest entries leaves an ``audit.pruned`` entry holding
the hash the first remaining entry chains to.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from .store.schema import AuditEntry, utcnow

log = logging.getLogger(__name__)

__all__ = ["ACTIONS", "GENESIS", "VerifyResult", "alert_hook", "entries", "entry_hash", "export", "prune", "record",
           "verify"]

GENESIS = "0" * 64
ACTIONS = ("alert.raised", "alert.ended", "alert.viewed", "alert.exported", "alert.decided", "camera.stopped",
           "camera.started", "user.added", "user.changed", "user.token_issued", "user.login", "user.login_failed",
           "user.logout", "retention.media_deleted", "retention.record_deleted", "audit.pruned", "model.adopted",
           "model.rejected", "model.rolled_back")


def canonical(value: Any) -> str:
    """JSON with sorted keys and no spaces: the one text a value hashes as."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def iso(at: datetime) -> str:
    """``at`` as ISO 8601 in UTC with microseconds, as it is hashed."""
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def entry_hash(entry_id: int, at: datetime, actor: str, action: str, target: str, details: dict,
               prev_hash: str) -> str:
    """The SHA-256 (hex) an entry with these fields must carry."""
    content = {"id": entry_id, "at": iso(at), "actor": actor, "action": action, "target": target,
               "details": details, "prev_hash": prev_hash}
    return hashlib.sha256(canonical(content).encode("utf-8")).hexdigest()


def entry_dict(e: AuditEntry) -> dict:
    """An entry as the API and the export show it."""
    return {"id": e.id, "at": iso(e.at), "actor": e.actor, "action": e.action, "target": e.target,
            "details": json.loads(e.details), "prev_hash": e.prev_hash, "hash": e.hash}


def _lock(s: Session) -> None:
    """Hold the right to append until the transaction ends (SQLite: BEGIN IMMEDIATE already does)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))


def _newest(s: Session) -> Any:
    return s.execute(select(AuditEntry.at, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()


def _append(s: Session, actor: str, action: str, target: str, details: dict, last: Any = None) -> int:
    """Append one entry in transaction ``s`` (which holds the lock) after ``last`` (its time and hash;
    None: the newest entry); returns its id."""
    last = last if last is not None else _newest(s)
    at = utcnow()
    if last is not None and last.at > at:      # the clock stepped back: time never runs backwards in the log
        at = last.at
    prev = last.hash if last is not None else GENESIS
    e = AuditEntry(at=at, actor=actor, action=action, target=target, details=canonical(details), prev_hash=prev,
                   hash="")
    s.add(e)
    s.flush()                                  # the id the database gives is part of what is hashed
    e.hash = entry_hash(e.id, at, actor, action, target, details, prev)
    s.flush()
    return e.id


def record(db: Any, actor: str, action: str, target: str, details: dict | None = None, *,
           session: Session | None = None) -> int:
    """Append an entry (``actor``: "system" or a user name) and return its id; with ``session`` (a write
    transaction of ``db``) it commits or rolls back with that transaction."""
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r} is not one of {', '.join(ACTIONS)}")
    if not actor or not target:
        raise ValueError(f"audit entry: actor {actor!r} and target {target!r} must not be empty")
    actor, target = actor[:64], target[:128]    # e.g. a failed login's made-up user name: kept, cut short
    details = json.loads(canonical(dict(details or {})))   # as it reads back (tuples as lists, keys as text);
    #                                              not JSON (or NaN): refused before anything is written
    if session is not None:
        _lock(session)
        return _append(session, actor, action, target, details)
    with db.transaction() as s:
        _lock(s)
        return _append(s, actor, action, target, details)


def alert_hook(db: Any, action: str, details: dict | None = None, actor: str = "system") -> Callable[[Session, int],
                                                                                                   None]:
    """A hook for the database's alert writes: audits ``action`` on each alert it is called with, in the
    write's own transaction (so the alert row and its entry commit together)."""
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r} is not one of {', '.join(ACTIONS)}")

    def hook(s: Session, alert_id: int) -> None:
        record(db, actor, action, f"alert:{alert_id}", details, session=s)

    return hook


@dataclass(frozen=True)
class VerifyResult:
    """The chain's state: ``ok``, how many entries the log holds, the first bad one's id and what is
    wrong with it."""

    ok: bool
    entries: int
    first_bad: int | None = None
    problem: str = ""


def verify(db: Any) -> VerifyResult:
    """Walk the chain in id order and name the first entry that was edited, whose predecessor was
    deleted, that was inserted, or that is out of order."""
    with db.session() as s:
        pruned = {json.loads(d).get("through_hash")
                  for d in s.scalars(select(AuditEntry.details).where(AuditEntry.action == "audit.pruned"))}
        prev: AuditEntry | None = None
        n = 0
        for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=1000)):
            n += 1
            problem = _problem(e, prev, pruned)
            if problem:
                return VerifyResult(False, int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0), e.id,
                                    problem)
            prev = e
            s.expunge(e)
        return VerifyResult(True, n)


def _problem(e: AuditEntry, prev: AuditEntry | None, pruned: set[str | None]) -> str:
    """What is wrong with entry ``e`` following ``prev`` (None: it is the first), or ""."""
    if prev is None:
        if e.prev_hash != GENESIS and e.prev_hash not in pruned:
            return "the entries before it were deleted (no audit.pruned entry accounts for them)"
    elif e.prev_hash != prev.hash:
        if e.id != prev.id + 1:
            return f"its link to entry {prev.id} is broken: an entry between them was deleted"
        return f"its link to entry {prev.id} is broken: an entry was inserted or moved before it"
    elif e.at < prev.at:
        return f"it is out of order: its time is before entry {prev.id}'s"
    try:
        details = json.loads(e.details)
        ok = isinstance(details, dict) and e.hash == entry_hash(e.id, e.at, e.actor, e.action, e.target, details,
                                                                e.prev_hash)
    except ValueError:
        ok = False
    return "" if ok else "its content was edited"


def prune(db: Any, before: datetime, actor: str = "system") -> int:
    """Delete the entries older than ``before`` and append an ``audit.pruned`` entry holding the last
    deleted entry's id and hash; returns how many were deleted. A broken chain is not pruned (that
    would destroy the evidence): it is logged and left as it is."""
    with db.session() as s:
        if s.scalar(select(AuditEntry.id).where(AuditEntry.at < before).limit(1)) is None:
            return 0
    state = verify(db)
    if not state.ok:
        log.error("audit log broken at entry %s (%s): not pruned", state.first_bad, state.problem)
        return 0
    with db.transaction() as s:
        _lock(s)
        last = s.execute(select(AuditEntry.id, AuditEntry.hash).where(AuditEntry.at < before)
                         .order_by(AuditEntry.id.desc()).limit(1)).first()
        if last is None:
            return 0
        newest = _newest(s)                    # the new entry chains to it even when every entry goes
        result: Any = s.execute(delete(AuditEntry).where(AuditEntry.id <= last.id))
        n = int(result.rowcount)
        _append(s, actor, "audit.pruned", "audit", {"through_id": last.id, "through_hash": last.hash,
                                                     "deleted": n, "before": iso(before)}, newest)
    log.info("audit log: %d entries older than %s pruned", n, iso(before))
    return n


def export(db: Any, since: datetime | None = None) -> Iterator[dict]:
    """Every entry at or after ``since`` (None: all), oldest first, as dicts."""
    with db.session() as s:
        q = select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=1000)
        if since is not None:
            q = q.where(AuditEntry.at >= since)
        for e in s.scalars(q):
            yield entry_dict(e)


def entries(db: Any, *, since: datetime | None = None, until: datetime | None = None, action: str | None = None,
            target: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
    """One page of the entries matching every filter given, newest first, and how many match."""
    conditions: list[Any] = []
    if since is not None:
        conditions.append(AuditEntry.at >= since)
    if until is not None:
        conditions.append(AuditEntry.at < until)
    if action is not None:
        conditions.append(AuditEntry.action == action)
    if target is not None:
        conditions.append(AuditEntry.target == target)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(AuditEntry).where(*conditions))
        rows = s.scalars(select(AuditEntry).where(*conditions).order_by(AuditEntry.id.desc())
                         .limit(max(0, int(limit))).offset(max(0, int(offset))))
        return [entry_dict(e) for e in rows], int(total or 0)
