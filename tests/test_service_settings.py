"""The service's configuration (every mistake one line naming file and field), `xvad config check`, and
`xvad users add/token/list` end to end: tokens that work, secrets kept only as hashes."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from xvad.cli import main
from xvad.errors import ConfigError
from xvad.service.auth import check_password, check_token, create_user, issue_token, revoke_token, user_can_see
from xvad.service.settings import load_settings, quick_settings
from xvad.service.store import Database

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "xvad.yaml")

GOOD = """
data: state
port: 8100
mqtt: {host: 127.0.0.1, port: 1884}
webhooks: [{url: "http://127.0.0.1:9000/hook", secret: s3cret}]
cameras:
  - name: door
    source: footage/door.mp4
    loop: true
    fps: 6
    alert: 2/4
    purpose: entrance safety
  - name: yard_2
    source: rtsp://127.0.0.1:8554/yard
    source_options: {rtsp_transport: udp}
    threshold: 0.7
    retention_media_days: 3
"""


def write(tmp_path, text: str, name: str = "xvad.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_good_config_loads_with_paths_from_its_folder(tmp_path):
    (tmp_path / "footage").mkdir()
    (tmp_path / "footage" / "door.mp4").write_bytes(b"\0")   # existence is checked here, decoding at serve
    s = load_settings(write(tmp_path, GOOD))
    assert s.data == str(tmp_path / "state") and s.db == f"sqlite:///{tmp_path / 'state' / 'xvad.db'}"
    assert (s.host, s.port, s.mqtt.host, s.mqtt.port, s.mqtt.prefix) == ("127.0.0.1", 8100, "127.0.0.1", 1884, "xvad")
    assert s.webhooks[0].url == "http://127.0.0.1:9000/hook" and s.webhooks[0].secret == "s3cret"
    door, yard = s.cameras
    assert door.source == str(tmp_path / "footage" / "door.mp4") and door.loop and door.fps == 6
    assert door.k_n == (2, 4) and door.purpose == "entrance safety" and door.model is None   # the shipped model
    assert yard.source == "rtsp://127.0.0.1:8554/yard" and yard.source_options == {"rtsp_transport": "udp"}
    assert (yard.threshold, yard.retention_media_days, yard.stride, yard.alert, yard.fps) == (0.7, 3, 2, "3/5", None)
    assert s.camera("yard_2") is yard
    with pytest.raises(ConfigError, match="no camera 'gate'"):
        s.camera("gate")


def test_the_shipped_example_is_valid():
    s = load_settings(EXAMPLE)
    assert [c.name for c in s.cameras] == ["entrance", "car-park", "loading-bay"]
    assert all(c.purpose for c in s.cameras) and not s.cameras[2].enabled


def test_postgresql_urls_use_psycopg_3(tmp_path):
    s = load_settings(write(tmp_path, "db: postgresql://xvad:pw@db.example/xvad\n"))
    assert s.db == "postgresql+psycopg://xvad:pw@db.example/xvad"


CAM = "cameras:\n  - {name: door, source: 'rtsp://127.0.0.1/a'}\n"
BAD = [
    ("wrong type", CAM + "  - {name: yard, source: 'rtsp://127.0.0.1/b', fps: fast}\n", "cameras[1].fps",
     "must be a valid number"),
    ("not positive", CAM + "  - {name: yard, source: 'rtsp://127.0.0.1/b', fps: 0}\n", "cameras[1].fps",
     "must be greater than 0"),
    ("unknown key", CAM.replace("}", ", colour: red}"), "cameras[0].colour", "unknown key"),
    ("unknown top key", "databse: x\n" + CAM, "databse", "unknown key"),
    ("duplicate camera", CAM + "  - {name: door, source: 'rtsp://127.0.0.1/b'}\n", "cameras[1].name",
     "'door' is already the name of cameras[0]"),
    ("unsafe name", "cameras:\n  - {name: '../etc', source: 'rtsp://127.0.0.1/a'}\n", "cameras[0].name",
     "not a safe camera name"),
    ("bad scheme", "cameras:\n  - {name: door, source: 'ftp://127.0.0.1/a'}\n", "cameras[0].source",
     "unsupported URL scheme 'ftp'"),
    ("missing file", "cameras:\n  - {name: door, source: nowhere.mp4}\n", "cameras[0].source", "no such file"),
    ("missing field", "cameras:\n  - {name: door}\n", "cameras[0].source", "missing"),
    ("bad policy", "cameras:\n  - {name: door, source: 'rtsp://x/a', alert: 4/3}\n", "cameras[0].alert", "K <= N"),
    ("bad port", "port: 70000\n", "port", "less than or equal to 65535"),
    ("bad database", "db: mysql://x/y\n", "db", "not a database URL"),
    ("missing model", "cameras:\n  - {name: door, source: 'rtsp://x/a', model: nope.pt}\n", "cameras[0].model",
     "no such model file"),
    ("mqtt without host", "mqtt: {port: 1883}\n", "mqtt.host", "missing"),
    ("not a mapping", "- a\n- b\n", "top level", "must be a mapping"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_each_mistake_is_one_line_naming_file_and_field(tmp_path, case):
    _, text, field, problem = case
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: {field}: "), message
    assert problem in message, message


def test_missing_file_and_yaml_syntax_error(tmp_path):
    missing = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"absent\.yaml: no such configuration file$"):
        load_settings(missing)
    path = write(tmp_path, "cameras:\n  - name: door\n    source: [rtsp://x\n")
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    assert str(e.value).startswith(f"{path}: line ") and "YAML syntax error" in str(e.value)
    assert "\n" not in str(e.value)


def test_quick_settings_from_flags(tmp_path):
    s = quick_settings(["door=rtsp://127.0.0.1/a", "yard=udp://127.0.0.1:5004"], data=str(tmp_path / "d"), port=9000)
    assert [(c.name, c.source) for c in s.cameras] == [("door", "rtsp://127.0.0.1/a"), ("yard", "udp://127.0.0.1:5004")]
    assert s.port == 9000 and s.db == f"sqlite:///{tmp_path / 'd' / 'xvad.db'}"
    with pytest.raises(ConfigError, match="expected NAME=SOURCE"):
        quick_settings(["door"], data=str(tmp_path))
    with pytest.raises(ConfigError, match=r"cameras\[1\]\.name: 'door' is already"):
        quick_settings(["door=rtsp://x/a", "door=rtsp://x/b"], data=str(tmp_path))


def test_config_check_exit_codes(tmp_path, capsys):
    assert main(["config", "check", EXAMPLE]) == 0
    assert "ok: 3 camera(s)" in capsys.readouterr().out
    bad = write(tmp_path, CAM + "  - {name: yard, source: 'rtsp://127.0.0.1/b', fps: -1}\n")
    assert main(["config", "check", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"xvad: error: {bad}: cameras[1].fps: must be greater than 0"
    assert main(["config", "check", str(tmp_path / "none.yaml")]) == 2
    assert "no such configuration file" in capsys.readouterr().err


def db_bytes(folder) -> bytes:
    """Everything SQLite keeps on disk for the database in ``folder`` (main file, WAL, shared memory)."""
    return b"".join(open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))
                    if f.startswith("xvad.db"))


def test_users_add_token_list_end_to_end(tmp_path, capsys):
    data = str(tmp_path / "data")
    password = "correct-horse-battery"
    assert main(["users", "add", "ann", "--role", "reviewer", "--cameras", "door,yard", "--password", password,
                 "--data", data]) == 0
    assert main(["users", "token", "ann", "--data", data]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]          # printed once, as the last line
    assert main(["users", "list", "--data", data]) == 0
    listing = capsys.readouterr().out
    assert "ann" in listing and "reviewer" in listing and "door,yard" in listing and "tokens 1" in listing
    assert main(["users", "add", "ann", "--role", "viewer", "--password", password, "--data", data]) == 2
    assert capsys.readouterr().err.strip() == "xvad: error: user 'ann' already exists"
    assert main(["users", "add", "bob", "--role", "viewer", "--password", "short", "--data", data]) == 2
    assert main(["users", "list"]) == 2 and "--config FILE, --data DIR or --db URL" in capsys.readouterr().err

    db = Database(f"sqlite:///{data}/xvad.db")
    user = check_token(db, token)
    assert user is not None and (user.name, user.role, user.cameras) == ("ann", "reviewer", ("door", "yard"))
    assert user_can_see(user, "door") and not user_can_see(user, "hall")
    assert check_token(db, token) == user                             # again (from the cache): the same
    token_id, secret = token[len("xvad_"):].split("_", 1)
    assert check_token(db, f"xvad_{token_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}") is None
    assert check_token(db, f"xvad_{int(token_id) + 1}_{secret}") is None
    for malformed in ("", "xvad_", "xvad_x_y", "Bearer " + token, token.replace("xvad_", "xvd_")):
        assert check_token(db, malformed) is None
    assert check_password(db, "ann", password) == user and check_password(db, "ann", "wrong-password") is None
    assert check_password(db, "nobody", password) is None
    revoke_token(db, int(token_id))
    assert check_token(db, token) is None                             # revoked: refused, even when cached
    second = issue_token(db, "ann")
    assert check_token(db, second) == user and second != token
    db.close()

    stored = db_bytes(data)
    assert b"argon2id" in stored                                      # the hashes are there ...
    for plain in (password, token, secret, second, second.split("_", 2)[2]):
        assert plain.encode() not in stored                           # ... and nothing in clear


def test_users_with_config_and_camera_limits(tmp_path, capsys):
    config = write(tmp_path, "data: state\n" + CAM)
    assert main(["users", "add", "eve", "--role", "viewer", "--cameras", "gate", "--password", "p4ssword-x",
                 "--config", config]) == 2
    assert "'gate' is not a camera of" in capsys.readouterr().err
    assert main(["users", "add", "eve", "--role", "admin", "--password", "p4ssword-x", "--config", config]) == 0
    assert main(["users", "token", "eve", "--config", config, "--data", str(tmp_path)]) == 2   # not both
    assert main(["users", "token", "eve", "--config", config]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    db = Database(load_settings(config).db)
    user = check_token(db, token)
    assert user is not None and user.role == "admin" and user.cameras is None and user_can_see(user, "anything")
    with pytest.raises(ConfigError, match="--role 'boss'"):
        create_user(db, "zed", "boss", "p4ssword-x")
    db.close()


def run_xvad(args: list[str], stdin: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    # a new session has no controlling terminal, so getpass reads the typed password from stdin
    return subprocess.run([sys.executable, "-m", "xvad", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120, start_new_session=True)


def test_users_add_prompts_for_the_password_twice(tmp_path):
    data = str(tmp_path / "data")
    r = run_xvad(["users", "add", "carl", "--role", "viewer", "--data", data], "typed-secret-1\ntyped-secret-1\n")
    assert r.returncode == 0, r.stderr
    r2 = run_xvad(["users", "add", "dora", "--role", "viewer", "--data", data], "typed-secret-1\nother-secret\n")
    assert r2.returncode == 2 and r2.stderr.strip().splitlines()[-1] == \
        "xvad: error: --password: the two passwords differ; nothing was changed"
    db = Database(f"sqlite:///{data}/xvad.db")
    assert check_password(db, "carl", "typed-secret-1") is not None
    assert check_password(db, "dora", "typed-secret-1") is None
    db.close()
    assert b"typed-secret-1" not in db_bytes(data)


# a corrupt or wrong configuration: `xvad config check` and `xvad serve --config` both say so in one line
# naming the file (and the field, where there is one), and exit with 2 before anything starts
BROKEN = [
    ("broken YAML", "cameras:\n  - name: door\n    source: [rtsp://x\n", r"line 4, column 1: YAML syntax error: "),
    ("truncated", CAM + "  - {name: yard, source: 'rtsp://127.0.0.1/b'", r"line \d+, column \d+: YAML syntax error: "),
    ("not text", b"\xff\xfe\x00cameras\x00\x9c", r"cannot read: 'utf-8' codec can't decode byte 0xff"),
    ("wrong field", CAM.replace("}", ", treshold: 0.7}"), r"cameras\[0\]\.treshold: unknown key"),
    ("bad value", CAM.replace("}", ", threshold: 1.5}"), r"cameras\[0\]\.threshold: must be less than or equal to 1"),
    ("wrong type", "port: [8000]\n" + CAM, r"port: must be a valid integer"),
    ("missing", None, r"no such configuration file"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_a_corrupt_or_wrong_config_stops_check_and_serve_with_one_line(tmp_path, capsys, case):
    _, content, problem = case
    path = tmp_path / "xvad.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    for argv in (["config", "check", str(path)], ["serve", "--config", str(path)]):
        assert main(argv) == 2, argv
        out = capsys.readouterr()
        err = out.err.strip()
        assert "\n" not in err and re.fullmatch(f"xvad: error: {re.escape(str(path))}: {problem}.*", err), (argv, err)
        assert out.out.strip() == "", (argv, out.out)          # nothing said ok, nothing started
    assert not (tmp_path / "xvad-data").exists()               # serve stopped before making its data folder


def test_serve_with_a_wrong_config_exits_2_as_a_process(tmp_path):
    path = write(tmp_path, CAM.replace("}", ", fps: fast}"))
    r = run_xvad(["serve", "--config", path], "")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines()[-1].startswith(f"xvad: error: {path}: cameras[0].fps: must be a valid number")
