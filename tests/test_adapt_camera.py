"""`xvad adapt --camera`: a camera's reviewed alerts in a real service database (SQLite) adapt its
model; the time-ordered judgement adopts a better candidate and keeps a current model that cannot be
beaten; every step is on the audit chain, and `xvad models rollback` undoes it."""
import os
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from xvad.checkpoint import load_model, save_model
from xvad.cli import main

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory):
    """A small pooled model trained on the synthetic task (with its base features beside it)."""
    run = tmp_path_factory.mktemp("run")
    assert main(["train", synthetic_data, "--out", str(run), "--backbone", "tiny", "--weights", "none",
                 "--frames", "8", "--size", "40", "--input", "motion+flow", "--temporal", "pool",
                 "--pooling", "max", "--epochs", "8", "--precision", "fp32", "--folds", "0",
                 "--cache-dir", str(run / "cache")]) == 0
    return str(run / "model.pt")


def site(tmp_path, trained: str, labels: list[int]):
    """A service data folder whose camera "gate" has one reviewed alert per label, an hour apart, each
    with a fresh synthetic clip of that class as its recorded clip."""
    from xvad.service import auth
    from xvad.service.review import add_verdict
    from xvad.service.store import Database
    from xvad.synthetic import make_clip, write_video

    data = tmp_path / "data"
    db = Database("sqlite:///" + str(data / "xvad.db")) if data.mkdir() is None else None
    db.migrate()
    db.upsert_camera("gate", "rtsp://gate/stream", "the gate", {})
    reviewer = auth.create_user(db, "rev", "reviewer", "a long enough password")
    rng = np.random.default_rng(11)
    for n, label in enumerate(labels):
        uid = f"alert-{n}"
        folder = data / "media" / "gate" / uid
        folder.mkdir(parents=True)
        write_video(str(folder / "clip.mp4"), make_clip(rng, frames=8, size=40, anomaly=bool(label)).frames)
        i = db.alert_started(uid=uid, camera="gate", started_at=T0 + timedelta(hours=n), start_time=float(n),
                             score=0.9, class_name="alert", class_index=1, checkpoint_id="x", xvad_version="t",
                             threshold=0.5, policy="3/5", window=8, stride=2, fps=8.0,
                             media_dir=os.path.join("gate", uid), host="h", pid=1)
        db.media_state(uid, "complete", files={"clip": "clip.mp4"})
        add_verdict(db, i, reviewer, "confirmed" if label else "dismissed", "seen on the clip")
    return db, str(data)


def entries(db, action: str) -> list[dict]:
    """The audit entries of ``action``, oldest first."""
    from xvad.service import audit
    return list(reversed(audit.entries(db, action=action, limit=1000)[0]))


def count(db) -> int:
    from xvad.service import audit
    return audit.entries(db, limit=1)[1]


def test_a_better_candidate_is_adopted_then_kept_then_rolled_back(trained, tmp_path, capsys, one_torch_thread):
    from xvad.service import audit, versions

    # the camera's current model: the trained one with a threshold that never alerts
    model = load_model(trained)
    blind = str(tmp_path / "blind.pt")
    save_model(model, blind, extra={**model.extra, "threshold": 0.9999, "base_checkpoint_id": model.checkpoint_id,
                                    "base_features": trained.replace(".pt", ".base.npz")})
    labels = [0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0]
    db, data = site(tmp_path, trained, labels)
    capsys.readouterr()
    assert main(["adapt", "--camera", "gate", "--data", data, "--checkpoint", blind]) == 0
    out = capsys.readouterr().out
    assert "12 reviewed alerts (6 confirmed); trained on the 8 earlier, judged on the 4 later" in out
    assert "adopted model version 1" in out
    active = versions.active_version(db, "gate")
    assert active is not None and active["version"] == 1
    adopted = entries(db, "model.adopted")[-1]["details"]
    m = adopted["metrics"]
    assert m["better"] and m["judged_on"] == 4 and m["trained_on"] == 8
    assert m["judged_from"].startswith((T0 + timedelta(hours=8)).strftime("%Y-%m-%dT%H"))   # the 4 newest
    # the current model at 0.9999 alerts on nothing: its accuracy is the later verdicts' dismissed share
    assert m["current"]["accuracy"] == pytest.approx(np.mean([y == 0 for y in labels[8:]]))
    assert m["candidate"]["accuracy"] > m["current"]["accuracy"]
    v1 = load_model(os.path.join(data, active["path"]))
    assert v1.extra["threshold"] == pytest.approx(m["final"]["threshold"]) == pytest.approx(active["threshold"])
    assert v1.extra["base_checkpoint_id"] == model.checkpoint_id

    # again: the camera now runs v1, trained on every verdict; a candidate cannot beat it on the later ones
    assert main(["adapt", "--camera", "gate", "--data", data]) == 1
    assert "kept the current model" in capsys.readouterr().out
    assert versions.active_version(db, "gate")["version"] == 1
    assert entries(db, "model.rejected")[-1]["details"]["metrics"]["better"] is False

    # the dry run adopts nothing and records nothing
    before = count(db)
    assert main(["adapt", "--camera", "gate", "--data", data, "--dry-run"]) in (0, 1)
    assert count(db) == before

    assert main(["models", "rollback", "gate", "--data", data]) == 0
    assert versions.active_version(db, "gate") is None
    assert entries(db, "model.rolled_back")
    assert audit.verify(db).ok


def test_too_few_verdicts_is_one_line(trained, tmp_path, capsys):
    db, data = site(tmp_path, trained, [0, 1, 1])
    assert main(["adapt", "--camera", "gate", "--data", data, "--checkpoint", trained]) == 2
    err = capsys.readouterr().err
    assert "--camera gate: 3 reviewed alert(s) with a clip" in err and "at least 6" in err
    shutil.rmtree(os.path.join(data, "media"))
    assert main(["adapt", "--camera", "gate", "--data", data, "--checkpoint", trained]) == 2
    assert "0 reviewed alert(s)" in capsys.readouterr().err
