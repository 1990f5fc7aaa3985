"""``xvad audit verify`` and ``xvad audit export`` run for real against a SQLite file: the messages and
exit statuses, a row tampered with through sqlite3 found, the export read back against the rows."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

import xvad
from xvad.cli import main
from xvad.service import audit, auth
from xvad.service.store import Database

SRC = os.path.dirname(os.path.dirname(os.path.abspath(xvad.__file__)))


@pytest.fixture
def data(tmp_path):
    """A data folder whose database holds five audit entries."""
    folder = str(tmp_path / "data")
    db = Database(f"sqlite:///{folder}/xvad.db")
    db.migrate()
    auth.create_user(db, "ann", "reviewer", "p4ssword-x", actor="root")
    auth.issue_token(db, "ann")
    for k in range(3):
        audit.record(db, "ann", "alert.viewed", f"alert:{k}", {"k": k})
    db.close()
    return folder


def sqlite_rows(folder: str) -> list[tuple]:
    with sqlite3.connect(os.path.join(folder, "xvad.db")) as conn:
        return conn.execute("SELECT id, at, actor, action, target, details, prev_hash, hash FROM audit_log "
                            "ORDER BY id").fetchall()


def test_verify_an_intact_and_a_tampered_log_in_a_real_process(data):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def xvad_audit(*args):
        return subprocess.run([sys.executable, "-m", "xvad", "audit", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    r = xvad_audit("verify", "--data", data)
    assert (r.returncode, r.stdout) == (0, "audit log intact: 5 entries\n")
    third = sqlite_rows(data)[2][0]
    with sqlite3.connect(os.path.join(data, "xvad.db")) as conn:      # the tamperer has the file
        conn.execute("UPDATE audit_log SET details = '{\"k\":7}' WHERE id = ?", (third,))
    r = xvad_audit("verify", "--db", f"sqlite:///{data}/xvad.db")
    assert (r.returncode, r.stdout) == (1, f"audit log broken at entry {third}: its content was edited\n")


def test_a_deleted_row_is_named(data, capsys):
    rows = sqlite_rows(data)
    with sqlite3.connect(os.path.join(data, "xvad.db")) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = ?", (rows[1][0],))
    assert main(["audit", "verify", "--data", data]) == 1
    assert capsys.readouterr().out == (f"audit log broken at entry {rows[2][0]}: its link to entry {rows[0][0]} "
                                       "is broken: an entry between them was deleted\n")


def test_export_writes_every_row_as_a_json_line(data, tmp_path, capsys):
    assert main(["audit", "export", "--data", data]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = sqlite_rows(data)
    assert len(lines) == len(rows) == 5
    for line, (i, at, actor, action, target, details, prev, h) in zip(lines, rows):
        e = json.loads(line)
        assert (e["id"], e["actor"], e["action"], e["target"], e["prev_hash"], e["hash"]) == \
            (i, actor, action, target, prev, h)
        assert e["details"] == json.loads(details)
        assert e["at"] == at.replace(" ", "T") + "+00:00"                  # SQLite keeps UTC without a zone
    out = str(tmp_path / "audit.jsonl")
    since = rows[3][1][:26]                                                # the fourth entry's time
    assert main(["audit", "export", "--since", since, "--out", out, "--data", data]) == 0
    assert capsys.readouterr().out == ""
    written = [json.loads(x) for x in open(out).read().splitlines()]
    assert [e["id"] for e in written] == [r[0] for r in rows if r[1] >= rows[3][1]]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]   # no temporary file left
    assert main(["audit", "export", "--since", "2999-01-01", "--data", data]) == 0
    assert capsys.readouterr().out == ""


def test_bad_input_is_one_line_and_exit_2(data, tmp_path, capsys):
    assert main(["audit", "export", "--since", "yesterday", "--data", data]) == 2
    err = capsys.readouterr().err
    assert err == "xvad: error: --since 'yesterday': not a date (use YYYY-MM-DD or an ISO 8601 time)\n"
    assert main(["audit", "export", "--out", str(tmp_path / "no" / "such" / "x.jsonl"), "--data", data]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["audit", "verify"]) == 2
    assert "--config FILE, --data DIR or --db URL" in capsys.readouterr().err
    assert main(["audit", "verify", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "no such configuration file" in capsys.readouterr().err
    assert main(["audit", "verify", "--db", "mysql://x/y"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_verify_with_a_config_file(data, tmp_path, capsys):
    config = tmp_path / "xvad.yaml"
    config.write_text(f"data: {data}\n")
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "audit log intact: 5 entries\n"
