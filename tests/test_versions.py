"""Each camera's model versions on SQLite and on a real PostgreSQL server: adopting (the file copied, the
row and its audit entry), rejecting, listing, rolling back, the errors, and `xvad models` on the command
line. Checkpoint ids are checked against a SHA-256 of the file computed here."""
from __future__ import annotations

import getpass
import hashlib
import os

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from xvad import CRNN
from xvad.checkpoint import save_model
from xvad.cli import main
from xvad.service import audit, versions
from xvad.service.store import Database
from xvad.service.store.schema import CameraModel
from xvad.service.versions import ModelVersionError

from servers import postgres_server  # noqa: F401  (the session fixture)


def checkpoint(path, threshold=None, **extra) -> str:
    """A small model's checkpoint (its own random weights) with ``extra["threshold"] = threshold`` (left
    out when None)."""
    if threshold is not None:
        extra["threshold"] = threshold
    return save_model(CRNN("tiny", size=32, frames=4, temporal="pool"), str(path), extra=extra)


def sha12(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def camera_entries(db, camera: str) -> list[dict]:
    rows, _ = audit.entries(db, target=f"camera:{camera}", limit=100)
    return list(reversed(rows))                       # oldest first


@pytest.fixture
def files(tmp_path):
    return {"a": checkpoint(tmp_path / "a.pt", 0.7, adapt={"base_checkpoint_id": "0123456789ab", "k": 8}),
            "b": checkpoint(tmp_path / "b.pt", 0.4),
            "c": checkpoint(tmp_path / "c.pt")}


def test_adopt_list_reject_and_roll_back_on_the_record(db, tmp_path, files):
    data = tmp_path / "data"
    for name in ("door", "yard"):
        db.upsert_camera(name, "rtsp://x/" + name, "", {})
    m1 = {"accuracy": 0.9, "roc_auc": 0.95, "held_out": 12}
    assert versions.adopt(db, str(data), "door", files["a"], actor="ann", metrics=m1, note="first") == 1
    copy = data / "models" / "door" / "v1.pt"
    assert copy.read_bytes() == open(files["a"], "rb").read() and not os.path.exists(str(copy) + ".part")
    (v1,) = versions.versions(db, "door")
    assert {k: v1[k] for k in ("version", "name", "path", "checkpoint_id", "threshold", "base_checkpoint_id",
                               "created_by", "metrics", "note", "active", "previous_version")} == {
        "version": 1, "name": "v1", "path": "models/door/v1.pt", "checkpoint_id": sha12(files["a"]),
        "threshold": 0.7, "base_checkpoint_id": "0123456789ab", "created_by": "ann", "metrics": m1,
        "note": "first", "active": True, "previous_version": 0}
    assert versions.adopt(db, str(data), "door", files["b"], actor="bob", metrics={"accuracy": 0.92}) == 2
    assert versions.adopt(db, str(data), "yard", files["c"], actor="ann", metrics={}) == 1   # numbered per camera
    door = versions.versions(db, "door")
    assert [(v["version"], v["active"], v["previous_version"], v["threshold"]) for v in door] == \
        [(1, False, 0, 0.7), (2, True, 1, 0.4)]
    assert versions.active_version(db, "door")["checkpoint_id"] == sha12(files["b"])
    assert versions.active_version(db, "yard")["threshold"] is None        # the checkpoint records none
    assert set(versions.active_versions(db)) == {"door", "yard"}
    assert set(versions.active_versions(db, ["door"])) == {"door"}

    before = versions.versions(db, "door")
    versions.reject(db, "door", actor="ann", metrics={"accuracy": 0.5, "current_accuracy": 0.92})
    assert versions.versions(db, "door") == before                         # a rejection changes nothing else

    assert versions.rollback(db, "door", actor="carl") == 1     # back to the version active when v2 came
    assert versions.active_version(db, "door")["version"] == 1
    assert versions.rollback(db, "door", actor="carl") == 0     # v1 came over the configured model
    assert versions.active_version(db, "door") is None
    with pytest.raises(ModelVersionError, match="runs its configured model: there is nothing to roll back"):
        versions.rollback(db, "door", actor="carl")
    assert versions.rollback(db, "door", actor="carl", to=2) == 2
    for to, message in ((2, "already runs v2"), (5, r"has no model version 5 \(its versions: v1, v2\)"),
                        (-1, "a version number")):
        with pytest.raises(ModelVersionError, match=message):
            versions.rollback(db, "door", actor="carl", to=to)
    assert versions.active_version(db, "yard")["version"] == 1             # the other camera untouched

    entries = camera_entries(db, "door")
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("model.adopted", "ann"), ("model.adopted", "bob"), ("model.rejected", "ann"), ("model.rolled_back", "carl"),
        ("model.rolled_back", "carl"), ("model.rolled_back", "carl")]
    assert entries[0]["details"] == {"version": 1, "checkpoint_id": sha12(files["a"]), "threshold": 0.7,
                                     "metrics": m1, "base_checkpoint_id": "0123456789ab", "previous_version": 0,
                                     "note": "first"}
    assert entries[2]["details"] == {"metrics": {"accuracy": 0.5, "current_accuracy": 0.92}, "current_version": 2}
    assert [e["details"] for e in entries[3:]] == [{"from": 2, "to": 1}, {"from": 1, "to": 0}, {"from": 0, "to": 2}]
    assert audit.verify(db).ok


def test_bad_cameras_and_files_are_refused_and_leave_nothing(db, tmp_path, files):
    data = tmp_path / "data"
    db.upsert_camera("door", "rtsp://x/door", "", {})
    for camera, message in (("ghost", "no such camera in the database"), ("../door", "not a camera name")):
        with pytest.raises(ModelVersionError, match=message):
            versions.adopt(db, str(data), camera, files["a"], actor="ann", metrics={})
        with pytest.raises(ModelVersionError, match=message):
            versions.rollback(db, camera, actor="ann")
        with pytest.raises(ModelVersionError, match=message):
            versions.reject(db, camera, actor="ann", metrics={})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    from xvad.errors import CheckpointError, XvadError

    with pytest.raises(CheckpointError):
        versions.adopt(db, str(data), "door", str(bad), actor="ann", metrics={})
    with pytest.raises(ModelVersionError, match="threshold 1.5 is not a number from 0 to 1"):
        versions.adopt(db, str(data), "door", checkpoint(tmp_path / "t.pt", 1.5), actor="ann", metrics={})
    with pytest.raises(ModelVersionError, match="metrics: not JSON"):
        versions.adopt(db, str(data), "door", files["a"], actor="ann", metrics={"auc": float("nan")})
    assert issubclass(ModelVersionError, XvadError)
    assert not os.path.exists(data / "models") and versions.versions(db, "door") == []
    assert camera_entries(db, "door") == [] and audit.verify(db).ok


def test_at_most_one_active_version_per_camera_in_the_database_itself(db, tmp_path, files):
    db.upsert_camera("door", "rtsp://x/door", "", {})
    for f in ("a", "b"):
        versions.adopt(db, str(tmp_path / "data"), "door", files[f], actor="ann", metrics={})
    with pytest.raises(IntegrityError):                # the partial unique index, not only the code
        with db.transaction() as s:
            s.execute(update(CameraModel).where(CameraModel.camera == "door").values(active=True))
    assert [v["active"] for v in versions.versions(db, "door")] == [False, True]


def test_adoptions_at_the_same_time_get_distinct_numbers(db, tmp_path, files):
    """Four threads adopt for one camera at once (each its own transaction): versions 1 to 4, each file
    where its row says, exactly one active, the audit chain intact."""
    import threading

    db.upsert_camera("door", "rtsp://x/door", "", {})
    data = str(tmp_path / "data")
    barrier = threading.Barrier(4)
    got: list[int] = []
    errors: list[BaseException] = []

    def adopt(name: str) -> None:
        try:
            barrier.wait(30)
            got.append(versions.adopt(db, data, "door", files[name], actor=name, metrics={}))
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=adopt, args=(n,)) for n in ("a", "b", "c", "a")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and sorted(got) == [1, 2, 3, 4]
    rows = versions.versions(db, "door")
    assert [(r["active"], r["previous_version"]) for r in rows] == [(False, 0), (False, 1), (False, 2), (True, 3)]
    assert sorted(r["checkpoint_id"] for r in rows) == sorted(sha12(files[n]) for n in "abca")
    for r in rows:
        assert sha12(os.path.join(data, r["path"])) == r["checkpoint_id"]
    assert audit.verify(db).ok


def test_models_list_and_rollback_commands(tmp_path, files, capsys):
    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'xvad.db'}")
    db.migrate()
    db.upsert_camera("door", "rtsp://x/door", "", {})
    versions.adopt(db, str(data), "door", files["a"], actor="ann", metrics={}, note="8 clips a class")
    versions.adopt(db, str(data), "door", files["b"], actor="bob", metrics={})
    db.close()
    capsys.readouterr()

    assert main(["models", "list", "door", "--data", str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "camera door runs v2; 2 adopted version(s)"
    assert lines[1].split() == ["version", "active", "created", "(UTC)", "by", "threshold", "checkpoint", "id", "note"]
    assert lines[2].split()[:1] + lines[2].split()[3:] == ["v1", "ann", "0.700", sha12(files["a"]), "8", "clips", "a",
                                                           "class"]
    assert lines[3].split()[:2] + lines[3].split()[4:] == ["v2", "yes", "bob", "0.400", sha12(files["b"])]

    assert main(["models", "rollback", "door", "--data", str(data)]) == 0
    assert capsys.readouterr().out.strip() == "camera door now runs v1"
    assert main(["models", "rollback", "door", "--to", "0", "--data", str(data)]) == 0
    assert capsys.readouterr().out.strip() == "camera door now runs its configured model"
    assert main(["models", "list", "door", "--data", str(data)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "camera door runs its configured model; 2 adopted version(s)"

    for argv, message in ((["rollback", "door", "--to", "7"], "camera 'door' has no model version 7"),
                          (["rollback", "hall"], "camera 'hall': no such camera in the database"),
                          (["list", "hall"], "camera 'hall': no such camera in the database"),
                          (["rollback", "door"], "runs its configured model: there is nothing to roll back")):
        assert main(["models", *argv, "--data", str(data)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("xvad: error: ") and message in err, err

    db = Database(f"sqlite:///{data / 'xvad.db'}")
    rolled = [e for e in camera_entries(db, "door") if e["action"] == "model.rolled_back"]
    assert [(e["actor"], e["details"]) for e in rolled] == [(getpass.getuser(), {"from": 2, "to": 1}),
                                                            (getpass.getuser(), {"from": 1, "to": 0})]
    db.close()
    assert main(["audit", "verify", "--data", str(data)]) == 0
    assert capsys.readouterr().out.startswith("audit log intact")


def test_the_console_and_the_api_show_the_versions(tmp_path):
    import re
    import uuid
    from datetime import datetime, timezone

    from console_site import make_site, session_client

    site = make_site(str(tmp_path), with_media=False)
    try:
        versions.adopt(site.db, site.settings.data, "A", checkpoint(tmp_path / "a.pt", 0.6), actor="ann", metrics={})
        c, _ = session_client(site, "admin")
        page = c.get("/cameras").text
        rows = {m.group(1): m.group(0) for m in re.finditer(r'<a href="/\?camera=(\w+)">.*?</tr>', page, re.S)}
        assert "<td>v1</td>" in rows["A"] and "<td>configured</td>" in rows["B"]
        api = {x["name"]: x["model_version"] for x in c.get("/api/cameras").json()}
        assert api == {"A": "v1", "B": None}
        f = dict(uid=uuid.uuid4().hex, camera="A", started_at=datetime.now(timezone.utc), start_time=1.0, score=0.9,
                 class_name="fight", class_index=1, checkpoint_id="abc", xvad_version="0", threshold=0.6,
                 policy="1/1", window=16, stride=2, fps=8.0, media_dir=None, host="h", pid=1)
        by_v1 = site.db.alert_started(**f, model_version="v1")
        assert "<th>model version</th><td>v1</td>" in c.get(f"/alerts/{by_v1}").text
        before = site.of("A")[0]["id"]
        assert "<th>model version</th><td>the camera&#39;s configured model</td>" in c.get(f"/alerts/{before}").text
        listed = {a["id"]: a["model_version"] for a in c.get("/api/alerts", params={"camera": "A"}).json()["alerts"]}
        assert listed[by_v1] == "v1" and listed[before] is None
    finally:
        site.db.close()
