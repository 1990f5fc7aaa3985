"""Verdicts on alerts on SQLite and on a real PostgreSQL server: append-only, the newest is the current
one, each written with its audit entry in one transaction; the review filter and counts against a
hand-made list; the verdict, audit and camera routes of the API; the audit entries of users and
retention; the audit log's retention setting."""
from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from xvad.errors import ConfigError
from xvad.service import audit, auth, review
from xvad.service.api import create_app
from xvad.service.retention import prune_audit, sweep
from xvad.service.settings import CameraSettings, ServiceSettings, quick_settings
from xvad.service.store import Database

from servers import postgres_server  # noqa: F401  (the session fixture)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
CLOSED = auth.AuthUser(0, "nobody", "reviewer", ())           # may see no camera


def alert(db, camera="door", at=T0, close=True) -> int:
    uid = uuid.uuid4().hex
    i = db.alert_started(uid=uid, camera=camera, started_at=at, start_time=1.0, score=0.9, class_name="fight",
                         class_index=1, checkpoint_id="c", xvad_version="0", threshold=0.5, policy="1/1", window=16,
                         stride=2, fps=8.0, media_dir=None, host="h", pid=1)
    if close:
        db.alert_ended(uid, ended_at=at + timedelta(seconds=5), end_time=6.0, peak_score=0.9, reason="scores")
    return i


def entries_of(db, action: str) -> list[dict]:
    return [e for e in audit.export(db) if e["action"] == action]


def test_verdicts_are_appended_and_the_newest_is_current(db):
    ann = auth.create_user(db, "ann", "reviewer", "p4ssword-x", ["door"])
    root = auth.create_user(db, "root", "admin", "p4ssword-x")
    i = alert(db)
    assert db.alert(i)["review"] == "unreviewed" and review.verdicts(db, i) == []
    first = review.add_verdict(db, i, ann, "dismissed", "  two friends hugging  ")
    assert (first["verdict"], first["reason"], first["user"], first["alert_id"]) == \
        ("dismissed", "two friends hugging", "ann", i)                       # the reason is kept stripped
    assert db.alert(i)["review"] == "dismissed"
    second = review.add_verdict(db, i, root, "escalated", "the second clip shows a punch")
    got = review.verdicts(db, i)
    assert [v["id"] for v in got] == [first["id"], second["id"]] and got[0] == first   # nothing overwritten
    assert db.alert(i)["review"] == "escalated" and db.alert_by_uid(db.alert(i)["uid"])["review"] == "escalated"
    assert got[1]["at"] >= got[0]["at"]
    decided = entries_of(db, "alert.decided")
    assert [(e["actor"], e["target"], e["details"]["verdict"], e["details"]["reason"], e["details"]["verdict_id"])
            for e in decided] == [("ann", f"alert:{i}", "dismissed", "two friends hugging", first["id"]),
                                  ("root", f"alert:{i}", "escalated", "the second clip shows a punch", second["id"])]
    assert audit.verify(db).ok


def test_bad_verdicts_are_refused_and_leave_nothing(db):
    reviewer = auth.create_user(db, "ann", "reviewer", "p4ssword-x", ["door"])
    viewer = auth.create_user(db, "vic", "viewer", "p4ssword-x")
    i, yard = alert(db), alert(db, camera="yard")
    before = len(list(audit.export(db)))
    with pytest.raises(PermissionError, match="reviewer or admin"):
        review.add_verdict(db, i, viewer, "confirmed", "a fight")
    with pytest.raises(LookupError, match=f"^no alert {yard}$"):
        review.add_verdict(db, yard, reviewer, "confirmed", "a fight")      # a camera ann may not see
    with pytest.raises(LookupError, match=f"^no alert {yard}$"):
        review.add_verdict(db, yard, auth.AuthUser(9, "vic", "viewer", ("door",)), "confirmed", "x")
    with pytest.raises(LookupError, match="no alert 99999"):
        review.add_verdict(db, 99999, reviewer, "confirmed", "a fight")
    with pytest.raises(ValueError, match="'fine' is not one of confirmed, dismissed, escalated"):
        review.add_verdict(db, i, reviewer, "fine", "a fight")
    for empty in ("", "   \n\t", None):
        with pytest.raises(ValueError, match="needs a reason"):
            review.add_verdict(db, i, reviewer, "confirmed", empty)
    with pytest.raises(ValueError, match="at most"):
        review.add_verdict(db, i, reviewer, "confirmed", "x" * (review.MAX_REASON + 1))
    assert review.verdicts(db, i) == [] and review.verdicts(db, yard) == []
    assert len(list(audit.export(db))) == before and db.alert(i)["review"] == "unreviewed"


def test_a_verdict_whose_audit_entry_fails_is_not_kept(db, monkeypatch):
    ann = auth.create_user(db, "ann", "reviewer", "p4ssword-x")
    i = alert(db)

    def broken(*args, **kw):
        raise RuntimeError("the audit log is unwritable")

    monkeypatch.setattr(audit, "_append", broken)
    with pytest.raises(RuntimeError):
        review.add_verdict(db, i, ann, "confirmed", "a fight")
    monkeypatch.undo()
    assert review.verdicts(db, i) == [] and db.alert(i)["review"] == "unreviewed"   # one transaction


def test_review_filter_and_counts_match_a_hand_made_list(db):
    rng = random.Random(3)
    ann = auth.create_user(db, "ann", "reviewer", "p4ssword-x")
    want: dict[int, tuple[str, str, datetime]] = {}
    for k in range(24):
        cam = rng.choice(["door", "yard", "hall"])
        at = T0 + timedelta(minutes=k)
        i = alert(db, camera=cam, at=at)
        history = [rng.choice(review.VERDICTS) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
        for v in history:
            review.add_verdict(db, i, ann, v, f"reason {k}")
        want[i] = (cam, history[-1] if history else "unreviewed", at)
    for word in ("unreviewed",) + review.VERDICTS:
        expected = [i for i, (_, r, at) in sorted(want.items(), key=lambda x: x[1][2], reverse=True) if r == word]
        rows, total = db.alerts(review=word, limit=100)
        assert [a["id"] for a in rows] == expected and total == len(expected), word
        assert all(a["review"] == word for a in rows)
        rows, total = db.alerts(review=word, cameras=["door"], limit=100)
        assert [a["id"] for a in rows] == [i for i in expected if want[i][0] == "door"]
    rows, _ = db.alerts(limit=100)
    assert {a["id"]: a["review"] for a in rows} == {i: r for i, (_, r, _) in want.items()}
    counts = db.review_counts(["door", "yard", "hall", "none"])
    for cam in ("door", "yard", "hall", "none"):
        assert counts[cam] == {w: sum(1 for c, r, _ in want.values() if c == cam and r == w)
                               for w in ("unreviewed",) + review.VERDICTS}, cam
    assert set(db.review_counts()) == {c for c, _, _ in want.values()}
    with pytest.raises(ValueError):
        db.alerts(review="x' OR '1'='1")


def test_deleting_an_alert_deletes_its_verdicts_and_is_audited(db, tmp_path):
    ann = auth.create_user(db, "ann", "reviewer", "p4ssword-x")
    now = T0 + timedelta(days=100)
    old, fresh = alert(db, at=now - timedelta(days=40)), alert(db, at=now - timedelta(days=1))
    review.add_verdict(db, old, ann, "confirmed", "a fight")
    review.add_verdict(db, fresh, ann, "dismissed", "a hug")
    cam = CameraSettings(name="door", source="rtsp://127.0.0.1/a", retention_media_days=None,
                         retention_records_days=30)
    assert sweep(db, [cam], str(tmp_path / "media"), now=now) == {"media": 0, "records": 1}
    assert db.alert(old) is None and review.verdicts(db, old) == [] and len(review.verdicts(db, fresh)) == 1
    deleted = entries_of(db, "retention.record_deleted")
    assert [(e["actor"], e["target"], e["details"]) for e in deleted] == \
        [("system", f"alert:{old}", {"camera": "door", "kept_days": 30})]
    assert audit.verify(db).ok


def test_users_and_tokens_are_audited(db):
    auth.create_user(db, "ann", "reviewer", "p4ssword-x", ["door"], actor="root")
    token = auth.issue_token(db, "ann")
    token_id = int(token.split("_")[1])
    auth.update_user(db, "ann", role="viewer", cameras=["door", "yard"], actor="root")
    auth.update_user(db, "ann", role="viewer")                           # no change: no entry
    auth.update_user(db, "ann", disabled=True, password="new-p4ssword", actor="root")
    auth.revoke_token(db, token_id, actor="root")
    auth.revoke_token(db, token_id, actor="root")                       # already revoked: no entry
    got = [(e["actor"], e["action"], e["target"], e["details"]) for e in audit.export(db)]
    assert got == [("root", "user.added", "user:ann", {"role": "reviewer", "cameras": ["door"]}),
                   ("system", "user.token_issued", "user:ann", {"token_id": token_id}),
                   ("root", "user.changed", "user:ann", {"role": "viewer", "cameras": ["door", "yard"]}),
                   ("root", "user.changed", "user:ann", {"disabled": True, "password": "changed"}),
                   ("root", "user.changed", "user:ann", {"token_revoked": token_id})]
    secret = token.split("_", 2)[2]                   # (the secret may hold "_" itself)
    assert "new-p4ssword" not in json.dumps(got) and secret not in json.dumps(got)
    assert auth.check_password(db, "ann", "new-p4ssword") is None          # disabled
    auth.update_user(db, "ann", disabled=False)
    u = auth.check_password(db, "ann", "new-p4ssword")
    assert u is not None and (u.role, u.cameras) == ("viewer", ("door", "yard"))
    with pytest.raises(ConfigError, match="no user 'bob'"):
        auth.update_user(db, "bob", role="admin")
    with pytest.raises(ConfigError, match="role 'boss'"):
        auth.update_user(db, "ann", role="boss")


def test_audit_retention_prunes_the_log(db):
    for k in range(3):
        audit.record(db, "system", "alert.viewed", f"alert:{k}")
    assert prune_audit(db, 400) == 0                                    # all younger than 400 days
    assert prune_audit(db, 400, now=datetime.now(timezone.utc) + timedelta(days=401)) == 3
    left = list(audit.export(db))
    assert [e["action"] for e in left] == ["audit.pruned"] and audit.verify(db).ok


def test_audit_retention_setting(tmp_path):
    assert ServiceSettings().audit_retention_days == 400
    with pytest.raises(Exception, match="greater than or equal to 183"):
        ServiceSettings(audit_retention_days=90)
    cams = [{"name": "door", "source": "rtsp://127.0.0.1/a", "retention_media_days": 500}]
    from xvad.service.settings import _validate

    with pytest.raises(ConfigError) as err:
        _validate({"cameras": cams}, "xvad.yaml", str(tmp_path))
    assert str(err.value) == ("xvad.yaml: audit_retention_days: must be longer than every camera's media "
                              "retention: cameras[0] (door) keeps media 500 days")
    assert _validate({"cameras": cams, "audit_retention_days": 501}, "xvad.yaml", None).audit_retention_days == 501
    assert quick_settings(["door=rtsp://127.0.0.1/a"], data=str(tmp_path)).audit_retention_days == 400


# -- the API -----------------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'xvad.db'}")
    d.migrate()
    settings = quick_settings(["door=rtsp://127.0.0.1/a", "yard=rtsp://127.0.0.1/b"], data=str(tmp_path))
    for c in ("door", "yard"):
        d.upsert_camera(c, "rtsp://x", "", {})
    tokens = {}
    for name, role, cams in (("root", "admin", None), ("ann", "reviewer", ["door"]), ("vic", "viewer", None)):
        auth.create_user(d, name, role, "p4ssword-x", cams)
        tokens[name] = {"Authorization": f"Bearer {auth.issue_token(d, name)}"}
    with TestClient(create_app(d, settings)) as client:
        yield client, d, tokens
    d.close()


def test_the_verdict_routes(api):
    client, d, tokens = api
    door, yard = alert(d, "door"), alert(d, "yard")
    body = {"verdict": "confirmed", "reason": "a fight at the door"}
    r = client.post(f"/api/alerts/{door}/verdicts", json=body, headers=tokens["ann"])
    assert r.status_code == 201 and r.json()["verdict"] == "confirmed" and r.json()["user"] == "ann"
    assert client.post(f"/api/alerts/{door}/verdicts", json=body).status_code == 401
    assert client.post(f"/api/alerts/{door}/verdicts", json=body, headers=tokens["vic"]).status_code == 403
    assert client.post(f"/api/alerts/{yard}/verdicts", json=body, headers=tokens["ann"]).status_code == 404
    assert client.post("/api/alerts/99999/verdicts", json=body, headers=tokens["root"]).status_code == 404
    for bad in ({"verdict": "ok", "reason": "x"}, {"verdict": "confirmed", "reason": "  "}, {"verdict": "confirmed"},
                {"reason": "x"}):
        r = client.post(f"/api/alerts/{door}/verdicts", json=bad, headers=tokens["root"])
        assert r.status_code == 422, (bad, r.status_code)
    r = client.post(f"/api/alerts/{door}/verdicts", json={"verdict": "dismissed", "reason": "on second look, a hug"},
                    headers=tokens["root"])
    assert r.status_code == 201
    got = client.get(f"/api/alerts/{door}/verdicts", headers=tokens["vic"]).json()
    assert [(v["verdict"], v["user"]) for v in got] == [("confirmed", "ann"), ("dismissed", "root")]
    assert client.get(f"/api/alerts/{yard}/verdicts", headers=tokens["ann"]).status_code == 404
    assert client.get(f"/api/alerts/{door}/verdicts").status_code == 401
    assert client.get(f"/api/alerts/{door}", headers=tokens["ann"]).json()["review"] == "dismissed"
    listed = client.get("/api/alerts", params={"review": "unreviewed"}, headers=tokens["root"]).json()
    assert [a["id"] for a in listed["alerts"]] == [yard]
    listed = client.get("/api/alerts", params={"review": "dismissed"}, headers=tokens["ann"]).json()
    assert [a["id"] for a in listed["alerts"]] == [door]
    assert client.get("/api/alerts", params={"review": "x' OR 1=1"}, headers=tokens["root"]).status_code == 422


def test_the_audit_route_and_audited_camera_stops(api):
    client, d, tokens = api
    assert client.post("/api/cameras/door/stop", headers=tokens["ann"]).status_code == 200
    assert client.post("/api/cameras/door/start", headers=tokens["root"]).status_code == 200
    assert client.post("/api/cameras/door/stop", headers=tokens["vic"]).status_code == 403   # not audited
    assert client.get("/api/audit", headers=tokens["ann"]).status_code == 403
    assert client.get("/api/audit", headers=tokens["vic"]).status_code == 403
    assert client.get("/api/audit").status_code == 401
    r = client.get("/api/audit", params={"target": "camera:door"}, headers=tokens["root"])
    assert r.status_code == 200
    got = r.json()
    assert got["total"] == 2 and [(e["actor"], e["action"]) for e in got["entries"]] == \
        [("root", "camera.started"), ("ann", "camera.stopped")]              # newest first
    everything = client.get("/api/audit", params={"limit": 1000}, headers=tokens["root"]).json()
    assert everything["total"] == len(list(audit.export(d))) == 3 + 3 + 2    # users, tokens, the camera
    page = client.get("/api/audit", params={"limit": 2, "offset": 1}, headers=tokens["root"]).json()
    assert [e["id"] for e in page["entries"]] == [e["id"] for e in everything["entries"][1:3]]
    assert client.get("/api/audit", params={"since": "not a time"}, headers=tokens["root"]).status_code == 422


def test_alert_writes_and_their_audit_entries_commit_together(db):
    f = dict(uid="u-1", camera="door", started_at=T0, start_time=1.0, score=0.9, class_name="fight", class_index=1,
             checkpoint_id="c", xvad_version="0", threshold=0.5, policy="1/1", window=16, stride=2, fps=8.0,
             media_dir=None, host="h", pid=1)

    def failing(s, alert_id):
        raise RuntimeError("no audit")

    with pytest.raises(RuntimeError):
        db.alert_started(**f, audit=failing)
    assert db.alert_by_uid("u-1") is None                                # no alert without its entry
    raised = audit.alert_hook(db, "alert.raised", {"camera": "door"})
    i = db.alert_started(**f, audit=raised)
    assert db.alert_started(**f, audit=raised) == i                      # the same uid again: no second entry
    other = db.alert_started(**{**f, "uid": "u-2"}, audit=raised)
    db.alert_ended("u-2", ended_at=T0, end_time=2.0, peak_score=0.9, reason="scores",
                   audit=audit.alert_hook(db, "alert.ended", {"reason": "scores"}))
    assert db.close_interrupted(["door"], audit=audit.alert_hook(db, "alert.ended", {"reason": "interrupted"})) == 1
    got = [(e["action"], e["target"], e["details"]) for e in audit.export(db)]
    assert got == [("alert.raised", f"alert:{i}", {"camera": "door"}), ("alert.raised", f"alert:{other}",
                                                                        {"camera": "door"}),
                   ("alert.ended", f"alert:{other}", {"reason": "scores"}),
                   ("alert.ended", f"alert:{i}", {"reason": "interrupted"})]
    with pytest.raises(ValueError):
        audit.alert_hook(db, "alert.exploded")
