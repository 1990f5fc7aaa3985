"""The service's storage on SQLite and on a real PostgreSQL server: migrations, every alert field, filters
and pagination against a hand-filtered list, no SQL injection, crash recovery, concurrent writers."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from xvad.service.store import Database

from servers import postgres_server  # noqa: F401  (the session fixture)

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
TABLES = {"cameras", "alerts", "users", "api_tokens", "outbox", "audit_log", "verdicts", "web_sessions",
          "login_attempts", "camera_models", "alembic_version"}
FIRST_TABLES = {"cameras", "alerts", "users", "api_tokens", "outbox", "alembic_version"}   # revision 0001


def started(db: Database, **over) -> tuple[int, dict]:
    """Record an alert start with every field set (``over`` replaces some) and return (id, fields)."""
    f = dict(uid=str(uuid.uuid4()), camera="door", started_at=T0, start_time=12.5, score=0.81, class_name="fight",
             class_index=1, checkpoint_id="sha256:abc123", xvad_version="0.1.0", threshold=0.55, policy="3/5",
             window=16, stride=2, fps=8.0, media_dir="/data/media/door/x", host="cam-host-1", pid=4242,
             model_version="v7")
    f.update(over)
    return db.alert_started(**f), f


def test_migrations_bring_an_empty_database_to_the_models(url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    from xvad.service.store.schema import Base
    from xvad.service.store.upgrade import current, head

    d = Database(url)
    assert current(d.engine) is None and not set(inspect(d.engine).get_table_names()) & TABLES
    d.migrate()
    assert set(inspect(d.engine).get_table_names()) == TABLES
    assert current(d.engine) == head()
    with d.engine.connect() as conn:   # the migration creates exactly what the models declare
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    d.migrate()                          # at head: nothing to do
    assert current(d.engine) == head()
    if url.startswith("sqlite"):
        with d.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    d.close()


def test_the_review_migration_downgrades_and_upgrades_again_keeping_the_alerts(url):
    from alembic import command
    from sqlalchemy import inspect, text

    from xvad.service.store.upgrade import alembic_config, current, head

    d = Database(url)
    d.migrate()
    alert_id, f = started(d)
    cfg = alembic_config()
    with d._write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert current(d.engine) == "0001" and set(inspect(d.engine).get_table_names()) == FIRST_TABLES
    with d.engine.connect() as conn:                       # 0001's tables and rows are untouched
        assert conn.execute(text("SELECT uid FROM alerts WHERE id = :i"), {"i": alert_id}).scalar() == f["uid"]
    d.migrate()                                            # and up again to the newest
    assert current(d.engine) == head() == "0003" and set(inspect(d.engine).get_table_names()) == TABLES
    assert d.alert(alert_id)["uid"] == f["uid"]
    d.close()


def test_alert_round_trip_keeps_every_field(db):
    alert_id, f = started(db, started_at=datetime(2025, 3, 1, 14, 0, 0, 250000,
                                                  tzinfo=timezone(timedelta(hours=2))))
    a = db.alert(alert_id)
    for key in ("uid", "camera", "start_time", "score", "class_name", "class_index", "checkpoint_id",
                "xvad_version", "threshold", "policy", "window", "stride", "fps", "media_dir", "host", "pid",
                "model_version"):
        assert a[key] == f[key], key
    assert a["started_at"] == "2025-03-01T12:00:00.250000+00:00"      # 14:00 at +02:00, in UTC
    assert (a["state"], a["peak_score"], a["windows"], a["media_state"], a["explanation_state"]) == \
        ("open", f["score"], 1, "pending", "pending")
    assert a["ended_at"] is None and a["end_time"] is None and a["files"] == {}
    assert db.alert_started(**f) == alert_id                          # the same uid again: the same row
    db.alert_updated(f["uid"], peak_score=0.93, windows=6)
    db.alert_ended(f["uid"], ended_at=T0 + timedelta(seconds=9.5), end_time=22.0, peak_score=0.95,
                   reason="scores fell")
    db.media_state(f["uid"], "complete", files={"clip.mp4": "clip.mp4", "report.html": "report/report.html"})
    db.explanation_state(f["uid"], "failed", error="out of memory")
    a = db.alert(alert_id)
    assert (a["state"], a["end_reason"], a["end_time"], a["peak_score"], a["windows"]) == \
        ("closed", "scores fell", 22.0, 0.95, 6)
    assert a["ended_at"] == "2025-03-01T12:00:09.500000+00:00"
    assert a["media_state"] == "complete"
    assert a["files"] == {"clip.mp4": "clip.mp4", "report.html": "report/report.html"}
    assert (a["explanation_state"], a["explanation_error"]) == ("failed", "out of memory")
    assert db.alert_by_uid(f["uid"]) == a and db.alert(alert_id + 1000) is None
    db.alert_ended(f["uid"], ended_at=T0 + timedelta(seconds=9.5), end_time=22.0, peak_score=0.95,
                   reason="scores fell", windows=11)                   # the count of windows, at the end
    assert db.alert(alert_id)["windows"] == 11
    with pytest.raises(ValueError):
        db.media_state(f["uid"], "done")


def test_cameras_upsert_and_state(db):
    db.upsert_camera("door", "rtsp://a/1", "safety", {"fps": 8})
    db.upsert_camera("yard", "udp://b:5", "", {})
    db.set_camera_state("door", "running")
    db.upsert_camera("door", "rtsp://a/2", "visitor safety", {"fps": 6})   # new settings, state kept
    cams = {c["name"]: c for c in db.cameras()}
    assert set(cams) == {"door", "yard"}
    assert (cams["door"]["source"], cams["door"]["purpose"], cams["door"]["settings"], cams["door"]["state"]) == \
        ("rtsp://a/2", "visitor safety", {"fps": 6}, "running")
    assert cams["yard"]["state"] == "stopped"


def test_filters_and_pagination_match_a_hand_filtered_list(db):
    rng = random.Random(7)
    made = []
    for i in range(37):
        cam = rng.choice(["door", "yard", "hall"])
        at = T0 + timedelta(minutes=rng.randrange(0, 600), seconds=i)   # distinct times
        alert_id, f = started(db, camera=cam, started_at=at, score=round(rng.uniform(0.5, 0.99), 3))
        peak = f["score"]
        state = rng.choice(["open", "closed", "interrupted"])
        if state != "open":
            peak = round(min(1.0, f["score"] + rng.uniform(0, 0.2)), 3)
            db.alert_ended(f["uid"], ended_at=at + timedelta(seconds=30), end_time=40.0, peak_score=peak,
                           reason="test", state=state)
        made.append({"id": alert_id, "camera": cam, "at": at, "state": state, "peak": peak})

    def expected(cameras=None, state=None, since=None, until=None, min_score=None):
        keep = [m for m in made if (cameras is None or m["camera"] in cameras)
                and (state is None or m["state"] == state)
                and (since is None or m["at"] >= since) and (until is None or m["at"] < until)
                and (min_score is None or m["peak"] >= min_score)]
        return [m["id"] for m in sorted(keep, key=lambda m: m["at"], reverse=True)]

    cases = [{}, {"cameras": ["door"]}, {"cameras": ["door", "hall"], "state": "closed"},
             {"since": T0 + timedelta(hours=2), "until": T0 + timedelta(hours=6)},
             {"min_score": 0.8}, {"cameras": ["yard"], "min_score": 0.7, "since": T0 + timedelta(hours=1)},
             {"state": "interrupted"}, {"cameras": []}]
    for case in cases:
        want = expected(**case)
        rows, total = db.alerts(**case, limit=1000)
        assert [r["id"] for r in rows] == want and total == len(want), case
        pages, offset = [], 0
        while True:                                  # pages of 5 put together give the whole list
            rows, total = db.alerts(**case, limit=5, offset=offset)
            assert total == len(want) and len(rows) <= 5
            if not rows:
                break
            pages += [r["id"] for r in rows]
            offset += 5
        assert pages == want, case
    rows, total = db.alerts()                       # the default page holds 50
    assert total == 37 and [r["id"] for r in rows] == expected()
    assert db.alerts(limit=0) == ([], 37) and db.alerts(offset=37) == ([], 37)


def test_filter_values_cannot_inject_sql(db):
    for i in range(3):
        started(db, camera="door", started_at=T0 + timedelta(minutes=i))
    evil = "x' OR '1'='1"
    assert db.alerts(cameras=[evil]) == ([], 0)
    assert db.alerts(state="open' OR '1'='1' --") == ([], 0)
    assert db.alerts(cameras=["door'; DROP TABLE alerts; --"]) == ([], 0)
    alert_id, _ = started(db, camera=evil)          # stored and found as the literal text it is
    rows, total = db.alerts(cameras=[evil])
    assert total == 1 and rows[0]["id"] == alert_id and rows[0]["camera"] == evil
    assert db.alerts()[1] == 4


def test_close_interrupted_closes_only_open_alerts_and_is_idempotent(db):
    open_door, f1 = started(db, camera="door")
    open_yard, f2 = started(db, camera="yard")
    closed_pending, f3 = started(db, camera="door")
    db.alert_ended(f3["uid"], ended_at=T0 + timedelta(seconds=5), end_time=17.0, peak_score=0.9, reason="fell")
    closed_done, f4 = started(db, camera="door")
    db.alert_ended(f4["uid"], ended_at=T0 + timedelta(seconds=6), end_time=18.0, peak_score=0.9, reason="fell")
    db.media_state(f4["uid"], "complete", files={"clip.mp4": "clip.mp4"})
    db.explanation_state(f4["uid"], "complete")
    before = {i: db.alert(i) for i in (open_door, open_yard, closed_pending, closed_done)}

    assert db.close_interrupted(["door"]) == 1
    a = db.alert(open_door)
    assert (a["state"], a["end_reason"], a["media_state"], a["explanation_state"]) == \
        ("interrupted", "interrupted", "missing", "missing")
    assert a["ended_at"] is not None and a["ended_at"] >= a["started_at"]
    assert db.alert(open_yard) == before[open_yard]                       # another camera: untouched
    c = db.alert(closed_pending)
    assert (c["state"], c["ended_at"], c["media_state"]) == ("closed", before[closed_pending]["ended_at"], "missing")
    assert db.alert(closed_done) == before[closed_done]                   # finished media stay complete

    after = {i: db.alert(i) for i in before}
    assert db.close_interrupted(["door"]) == 0                            # idempotent
    assert {i: db.alert(i) for i in before} == after
    assert db.close_interrupted() == 1 and db.alert(open_yard)["state"] == "interrupted"
    assert db.close_interrupted() == 0


def python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


WRITER = """
    import sys, time, uuid
    from datetime import datetime, timezone
    from xvad.service.store import Database
    url, prefix, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    db = Database(url)
    while time.time() < go:          # both writers start together
        time.sleep(0.005)
    db.migrate()                     # both migrate the empty database at once, too
    for i in range(n):
        db.alert_started(uid=f"{prefix}-{i}-{uuid.uuid4()}", camera=prefix, started_at=datetime.now(timezone.utc),
                         start_time=float(i), score=0.9, class_name="fight", class_index=1, checkpoint_id=None,
                         xvad_version="0.1.0", threshold=0.5, policy="3/5", window=16, stride=2, fps=8.0,
                         media_dir=None, host="h", pid=0)
    print("done", flush=True)
"""


def test_two_processes_writing_at_once_lose_and_double_nothing(url):
    import time

    n = 40
    go = time.time() + 8.0              # time for both interpreters to import
    procs = [python(WRITER, url, name, str(n), str(go)) for name in ("cam-a", "cam-b")]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip() == "done", f"exit {p.returncode}, out {out!r}, err {err[-3000:]}"
    d = Database(url)
    rows, total = d.alerts(limit=10_000)
    d.close()
    assert total == 2 * n and len(rows) == 2 * n, sorted(r["uid"] for r in rows)
    assert len({r["uid"] for r in rows}) == 2 * n and len({r["id"] for r in rows}) == 2 * n
    for cam in ("cam-a", "cam-b"):      # every alert of each writer, exactly once
        got = sorted(int(r["uid"].split("-")[2]) for r in rows if r["camera"] == cam)
        assert got == list(range(n))


def test_an_alert_start_survives_kill_9_of_its_writer(db, url):
    p = python("""
        import sys, time
        from datetime import datetime, timezone
        from xvad.service.store import Database
        db = Database(sys.argv[1])
        i = db.alert_started(uid="killed-writer", camera="door", started_at=datetime.now(timezone.utc),
                             start_time=3.0, score=0.77, class_name="fight", class_index=1, checkpoint_id="c1",
                             xvad_version="0.1.0", threshold=0.5, policy="3/5", window=16, stride=2, fps=8.0,
                             media_dir=None, host="h", pid=0)
        print(i, flush=True)
        time.sleep(120)
    """, url)
    try:
        line = p.stdout.readline()
        assert line.strip().isdigit(), p.stderr.read() if p.poll() is not None else line
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        p.stdout.close()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    fresh = Database(url)
    a = fresh.alert(int(line))
    fresh.close()
    assert a is not None and (a["uid"], a["state"], a["score"], a["checkpoint_id"]) == ("killed-writer", "open",
                                                                                          0.77, "c1")
    assert db.close_interrupted(["door"]) == 1 and db.alert(int(line))["media_state"] == "missing"


def test_an_in_memory_database_is_one_database_for_every_thread():
    import threading

    d = Database("sqlite://")
    d.migrate()
    got = []
    writer = threading.Thread(target=lambda: got.append(started(d)[0]))
    writer.start()
    writer.join()
    rows, total = d.alerts()
    assert total == 1 and rows[0]["id"] == got[0]
    d.close()
