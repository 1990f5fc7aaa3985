"""Retention per camera: media after N days, records after M days, each deletion logged; open alerts
and other cameras are left alone."""
from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone

import numpy as np

from xvad.service.retention import sweep
from xvad.service.settings import CameraSettings
from xvad.service.store import Database
from xvad.synthetic import write_video


def record(db, camera, days_ago, media_root, now, close=True):
    uid = f"{camera}-{days_ago}-{close}"
    started = now - timedelta(days=days_ago)
    db.alert_started(uid=uid, camera=camera, started_at=started, start_time=1.0, score=0.9, class_name="fight",
                     class_index=1, checkpoint_id="c", xvad_version="0", threshold=0.5, policy="1/1", window=16,
                     stride=2, fps=8.0, media_dir=f"{camera}/{uid}", host="h", pid=1)
    os.makedirs(os.path.join(media_root, camera, uid))
    with open(os.path.join(media_root, camera, uid, "clip.mp4"), "wb") as f:
        f.write(b"x")
    db.media_state(uid, "complete", files={"clip": "clip.mp4"})
    if close:
        db.alert_ended(uid, ended_at=started + timedelta(seconds=5), end_time=6.0, peak_score=0.9, reason="scores")
    return uid


def test_sweep_deletes_media_then_records_by_camera(tmp_path, caplog):
    clip = str(tmp_path / "c.mp4")
    write_video(clip, np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    db = Database("sqlite:///" + str(tmp_path / "x.db"))
    db.migrate()
    media = str(tmp_path / "media")
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    a = CameraSettings(name="a", source=clip, retention_media_days=7, retention_records_days=30)
    b = CameraSettings(name="b", source=clip, retention_media_days=None, retention_records_days=None)
    fresh, old_media, old_record = (record(db, "a", d, media, now) for d in (1, 10, 40))
    still_open = record(db, "a", 50, media, now, close=False)
    other = record(db, "b", 40, media, now)
    with caplog.at_level(logging.INFO, logger="xvad.service.retention"):
        counts = sweep(db, [a, b], media, now=now)
    assert counts == {"media": 2, "records": 1}          # old_media and old_record lose media; old_record goes
    by_uid = {r["uid"]: r for r in db.alerts(limit=100)[0]}
    assert old_record not in by_uid
    assert by_uid[old_media]["media_state"] == "deleted" and not os.path.exists(os.path.join(media, "a", old_media))
    for uid, camera in ((fresh, "a"), (still_open, "a"), (other, "b")):
        assert by_uid[uid]["media_state"] == "complete" and os.path.isdir(os.path.join(media, camera, uid))
    lines = [r.getMessage() for r in caplog.records]
    assert sum("media deleted" in m for m in lines) == 2 and sum("record deleted" in m for m in lines) == 1
    assert sweep(db, [a, b], media, now=now) == {"media": 0, "records": 0}   # nothing twice
