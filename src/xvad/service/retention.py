"""Retention: each camera's alert media are deleted after ``retention_media_days`` and its alert records
after ``retention_records_days``; every deletion is logged and audited. The audit log itself is pruned
after ``audit_retention_days``. The service sweeps once an hour (and at start)."""
from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timedelta, timezone
from typing import Any

from . import audit

log = logging.getLogger(__name__)


def sweep(db: Any, cameras: list[Any], media_root: str, now: datetime | None = None) -> dict[str, int]:
    """Apply every camera's retention once; returns how many media folders and records were deleted."""
    now = now or datetime.now(timezone.utc)
    media = records = 0
    root = os.path.realpath(media_root)
    for cam in cameras:
        if cam.retention_media_days is not None:
            for a in db.media_older_than(cam.name, now - timedelta(days=cam.retention_media_days)):
                folder = os.path.realpath(os.path.join(root, a["media_dir"]))
                if folder.startswith(root + os.sep) and os.path.isdir(folder):
                    shutil.rmtree(folder)
                db.media_state(a["uid"], "deleted")
                audit.record(db, "system", "retention.media_deleted", f"alert:{a['id']}",
                             {"camera": cam.name, "started_at": a["started_at"], "kept_days": cam.retention_media_days})
                media += 1
                log.info("retention: %s: alert %d: media deleted (started %s, kept %g days)", cam.name, a["id"],
                         a["started_at"], cam.retention_media_days)
        if cam.retention_records_days is not None:
            hook = audit.alert_hook(db, "retention.record_deleted",
                                    {"camera": cam.name, "kept_days": cam.retention_records_days})
            for alert_id in db.delete_alerts_older_than(cam.name, now - timedelta(days=cam.retention_records_days),
                                                        audit=hook):
                records += 1
                log.info("retention: %s: alert %d: record deleted (kept %g days)", cam.name, alert_id,
                         cam.retention_records_days)
    return {"media": media, "records": records}


def prune_audit(db: Any, days: float, now: datetime | None = None) -> int:
    """Delete the audit entries older than ``days`` (the chain stays verifiable); returns how many."""
    now = now or datetime.now(timezone.utc)
    n = audit.prune(db, now - timedelta(days=days))
    if n:
        log.info("retention: audit log: %d entries older than %g days pruned", n, days)
    return n
