"""Queries on the ``camera_models`` table: each camera's adopted model versions and which one is active.

They run in a session the caller holds (:meth:`Database.transaction` for writes), so that a version's
row, its activation and its audit entry commit together (:mod:`xvad.service.versions`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timezone

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from .schema import CameraModel

__all__ = ["activate", "active", "active_of", "lock", "next_version", "row", "row_dict", "rows"]


def row_dict(r: CameraModel) -> dict:
    """A version as the API and the CLI show it (``created_at`` ISO 8601 UTC, the metrics as a dict)."""
    return {"camera": r.camera, "version": r.version, "name": f"v{r.version}", "path": r.path,
            "checkpoint_id": r.checkpoint_id, "threshold": r.threshold, "base_checkpoint_id": r.base_checkpoint_id,
            "created_at": r.created_at.astimezone(timezone.utc).isoformat(), "created_by": r.created_by,
            "metrics": json.loads(r.metrics_json or "{}"), "note": r.note, "active": bool(r.active),
            "previous_version": r.previous_version}


def lock(s: Session) -> None:
    """Hold the right to add or activate versions until the transaction ends (SQLite: BEGIN IMMEDIATE
    already does), so two adoptions never take the same number."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("LOCK TABLE camera_models IN EXCLUSIVE MODE"))


def rows(s: Session, camera: str) -> list[CameraModel]:
    """Every version of ``camera``, oldest first."""
    return list(s.scalars(select(CameraModel).where(CameraModel.camera == camera).order_by(CameraModel.version)))


def row(s: Session, camera: str, version: int) -> CameraModel | None:
    return s.scalar(select(CameraModel).where(CameraModel.camera == camera, CameraModel.version == version))


def active(s: Session, camera: str) -> CameraModel | None:
    """The active version of ``camera`` (None: it runs its configured model)."""
    return s.scalar(select(CameraModel).where(CameraModel.camera == camera, CameraModel.active.is_(True)))


def active_of(s: Session, cameras: Iterable[str] | None = None) -> dict[str, CameraModel]:
    """Camera -> its active version, for ``cameras`` (None: all); a camera without one is left out."""
    q = select(CameraModel).where(CameraModel.active.is_(True))
    if cameras is not None:
        q = q.where(CameraModel.camera.in_(list(cameras)))
    return {r.camera: r for r in s.scalars(q)}


def next_version(s: Session, camera: str) -> int:
    """The number the next version of ``camera`` gets: one more than the highest so far."""
    return int(s.scalar(select(func.max(CameraModel.version)).where(CameraModel.camera == camera)) or 0) + 1


def activate(s: Session, camera: str, version: int) -> None:
    """Make ``version`` the only active version of ``camera`` (0: none, the configured model)."""
    s.execute(update(CameraModel).where(CameraModel.camera == camera, CameraModel.active.is_(True))
              .values(active=False))
    if version:
        s.execute(update(CameraModel).where(CameraModel.camera == camera, CameraModel.version == version)
                  .values(active=True))

