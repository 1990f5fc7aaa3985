"""Each camera's model versions: adopting a checkpoint that ``xvad adapt`` made for a camera, recording
one it rejected, listing them, and rolling back.

A version is a copy of the checkpoint at ``DATA/models/CAMERA/vN.pt`` (N = 1, 2, ... per camera) and a
row of ``camera_models``; at most one version of a camera is active, and with none the camera runs
its configured model. Every change is written in one transaction with its audit entry
(``model.adopted``, ``model.rolled_back``); the running service follows the active version within
its database poll (:mod:`.runtime`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

from ..atomic import atomic_path
from ..errors import ModelVersionError
from . import audit
from .settings import NAME
from .store import camera_models as q
from .store.schema import Camera, CameraModel, utcnow

log = logging.getLogger(__name__)

__all__ = ["ModelVersionError", "active_version", "active_versions", "adopt", "cameras_with_versions", "check_camera",
           "reject", "rollback", "version_file", "version_name", "versions"]


def version_name(version: int | None) -> str | None:
    """How an alert records the version that raised it: "v3"; None for the configured model (0 or None)."""
    return f"v{version}" if version else None


def version_file(camera: str, version: int) -> str:
    """Where version ``version`` of ``camera`` is kept, relative to the data folder."""
    return f"models/{camera}/v{version}.pt"


def _known(s: Any, camera: str) -> None:
    from sqlalchemy import select

    if not isinstance(camera, str) or not NAME.match(camera):
        raise ModelVersionError(f"camera {camera!r}: not a camera name (letters, digits, '_' and '-')")
    if s.scalar(select(Camera.id).where(Camera.name == camera)) is None:
        raise ModelVersionError(f"camera {camera!r}: no such camera in the database (the service has never "
                                "watched it)")


def check_camera(db: Any, camera: str) -> None:
    """ModelVersionError unless ``camera`` is a camera the database knows."""
    with db.session() as s:
        _known(s, camera)


def _json(value: Any, what: str) -> Any:
    """``value`` as it reads back from JSON; a value that is not JSON is refused before anything is written."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ModelVersionError(f"{what}: not JSON ({exc})") from None


def _threshold(extra: dict, path: str) -> float | None:
    value = extra.get("threshold")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ModelVersionError(f"{path}: its threshold {value!r} is not a number from 0 to 1")
    return float(value)


def _copy(source: str, dest: str) -> None:
    """Copy ``source`` to ``dest`` through ``dest.part``, flushed to disk, then renamed."""
    with atomic_path(dest) as part:
        with open(source, "rb") as fin, open(part, "wb") as fout:
            shutil.copyfileobj(fin, fout)
            fout.flush()
            os.fsync(fout.fileno())


def adopt(db: Any, data_dir: str, camera: str, checkpoint_file: str, *, actor: str, metrics: dict,
          note: str = "", base_checkpoint_id: str | None = None) -> int:
    """Make ``checkpoint_file`` the next version N of ``camera`` and its active one; returns N.

    The file is copied to ``data_dir/models/CAMERA/vN.pt``; the row records its checkpoint id, its
    threshold (``extra["threshold"]``), the checkpoint it was adapted from (``base_checkpoint_id``,
    else ``extra["adapt"]["base_checkpoint_id"]``), ``metrics`` and ``note``, and the version active
    before (where :func:`rollback` goes back to). The row and its ``model.adopted`` audit entry commit
    together. The checkpoint is loaded once first: a file the service could not run is refused."""
    from ..checkpoint import file_id, load_model

    metrics = _json(dict(metrics or {}), "metrics")
    model = load_model(checkpoint_file)            # CheckpointError (one line) when it is not usable
    extra = dict(getattr(model, "extra", None) or {})
    threshold = _threshold(extra, checkpoint_file)
    adapt = extra["adapt"] if isinstance(extra.get("adapt"), dict) else {}
    base = base_checkpoint_id or adapt.get("base_checkpoint_id") or extra.get("base_checkpoint_id")
    with db.transaction() as s:
        _known(s, camera)
        q.lock(s)
        current = q.active(s, camera)
        previous = current.version if current is not None else 0
        n = q.next_version(s, camera)
        rel = version_file(camera, n)
        dest = os.path.join(str(data_dir), rel)
        _copy(checkpoint_file, dest)
        checkpoint_id = file_id(dest)
        q.activate(s, camera, 0)
        s.add(CameraModel(camera=camera, version=n, path=rel, checkpoint_id=checkpoint_id, threshold=threshold,
                          base_checkpoint_id=None if base is None else str(base), created_at=utcnow(),
                          created_by=actor, metrics_json=json.dumps(metrics, sort_keys=True), note=note or "",
                          active=True, previous_version=previous))
        s.flush()
        audit.record(db, actor, "model.adopted", f"camera:{camera}", {
            "version": n, "checkpoint_id": checkpoint_id, "threshold": threshold, "metrics": metrics,
            "base_checkpoint_id": base, "previous_version": previous, "note": note or ""}, session=s)
    log.info("camera %s: model v%d adopted (checkpoint %s) by %s", camera, n, checkpoint_id, actor)
    return n


def reject(db: Any, camera: str, *, actor: str, metrics: dict) -> int:
    """Record that adaptation ran for ``camera`` and its candidate did not beat the current model
    (audit ``model.rejected`` with ``metrics``); nothing else changes. Returns the entry's id."""
    metrics = _json(dict(metrics or {}), "metrics")
    with db.transaction() as s:
        _known(s, camera)
        current = q.active(s, camera)
        return audit.record(db, actor, "model.rejected", f"camera:{camera}", {
            "metrics": metrics, "current_version": current.version if current is not None else 0}, session=s)


def versions(db: Any, camera: str) -> list[dict]:
    """Every version of ``camera``, oldest first (see :func:`~.store.camera_models.row_dict`)."""
    with db.session() as s:
        return [q.row_dict(r) for r in q.rows(s, camera)]


def active_version(db: Any, camera: str) -> dict | None:
    """The active version of ``camera``, or None when it runs its configured model."""
    with db.session() as s:
        r = q.active(s, camera)
        return None if r is None else q.row_dict(r)


def active_versions(db: Any, cameras: list[str] | None = None) -> dict[str, dict]:
    """Camera -> its active version, for ``cameras`` (None: all); those on their configured model are left
    out. One query: the running service asks it every poll."""
    with db.session() as s:
        return {camera: q.row_dict(r) for camera, r in q.active_of(s, cameras).items()}


def cameras_with_versions(db: Any) -> list[dict]:
    """The database's cameras (:meth:`Database.cameras`), each with ``model_version``: the name of its
    active version ("v3"), or None when it runs its configured model."""
    active = active_versions(db)
    return [{**c, "model_version": version_name(active[c["name"]]["version"]) if c["name"] in active else None}
            for c in db.cameras()]


def rollback(db: Any, camera: str, *, actor: str, to: int | None = None) -> int:
    """Go back to the version that was active when the current one was adopted (``to=None``), or to
    version ``to`` (0: the configured model); returns the version now active (0: the configured model).
    Audited as ``model.rolled_back`` with ``from`` and ``to``."""
    with db.transaction() as s:
        _known(s, camera)
        q.lock(s)
        current = q.active(s, camera)
        now = current.version if current is not None else 0
        if to is None:
            if current is None:
                raise ModelVersionError(f"camera {camera!r} runs its configured model: there is nothing to roll "
                                        "back")
            target = current.previous_version
        else:
            target = _target(s, camera, to)
            if target == now:
                raise ModelVersionError(f"camera {camera!r} already runs "
                                        f"{version_name(now) or 'its configured model'}")
        q.activate(s, camera, target)
        audit.record(db, actor, "model.rolled_back", f"camera:{camera}", {"from": now, "to": target}, session=s)
    log.info("camera %s: model rolled back from %s to %s by %s", camera, version_name(now) or "configured",
             version_name(target) or "configured", actor)
    return target


def _target(s: Any, camera: str, to: Any) -> int:
    """``to`` checked: 0, or a version ``camera`` has."""
    if isinstance(to, bool) or not isinstance(to, int) or to < 0:
        raise ModelVersionError(f"--to {to!r}: a version number (1, 2, ...) or 0 for the configured model")
    if to and q.row(s, camera, to) is None:
        have = [r.version for r in q.rows(s, camera)]
        listed = ", ".join(f"v{v}" for v in have) if have else "none"
        raise ModelVersionError(f"camera {camera!r} has no model version {to} (its versions: {listed})")
    return to
