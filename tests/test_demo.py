"""The shipped model, the sample footage in the package, and `xvad demo` end to end in a fresh folder."""
import fnmatch
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

import av
import httpx
import pytest

import xvad
from xvad.errors import ConfigError
from xvad.samples import FOOTAGE_DIR, camera_video, demo_cameras, demo_footage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data", "demo-footage")


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def decoded(path: str) -> tuple[int, int, int, float]:
    """(frames, width, height, frames per second) of ``path``, decoded with PyAV alone."""
    with av.open(path) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(video=0))
        return n, s.codec_context.width, s.codec_context.height, float(s.average_rate)


def test_shipped_model_loads_without_a_path():
    m = xvad.load_model()
    assert m.classes == ["noFight", "fight"] and m.config["backbone"] == "efficientnet_lite0"
    assert m.extra["metrics"]["roc_auc"] > 0.6  # the cross-validated figure recorded at training time
    assert m.config["backbone_in_checkpoint"] is False  # backbone weights come from their own package


# -- the sample footage --------------------------------------------------------------------------
def test_sample_footage_is_in_the_package_with_its_credit_and_licence():
    clips = demo_footage()
    with open(os.path.join(FOOTAGE_DIR, "groups.csv")) as f:
        rows = [line.strip().split(",") for line in f.read().splitlines()[1:] if line.strip()]
    assert [(c.name, c.label, c.camera) for c in clips] == [tuple(r) for r in rows] and len(rows) == 5
    readme = open(os.path.join(FOOTAGE_DIR, "README.md"), encoding="utf-8").read()
    licence = open(os.path.join(FOOTAGE_DIR, "LICENSE"), encoding="utf-8").read()
    assert "Surveillance Camera Fight Dataset" in readme and "arXiv 2002.04355" in readme   # the credit
    assert licence.startswith("MIT License") and "Aktı" in licence
    # every clip decodes, at the size and rate the README's table gives for its camera
    table = {m.group(1): (m.group(2), int(m.group(3)), int(m.group(4)), int(m.group(5)))
             for m in re.finditer(r"^\| `(g\d+)` \| (.*?) \| .*?(\d+)x(\d+), (\d+) fps \|$", readme, re.M)}
    assert set(table) == {c.camera for c in clips}
    for c in clips:
        listed, width, height, fps = table[c.camera]
        assert f"`{c.label}/{c.name}.mp4`" in listed
        frames, w, h, rate = decoded(c.path)
        assert (w, h) == (width, height) and round(rate) == fps and frames >= 1.9 * rate   # two-second clips
        assert os.path.getsize(c.path) > 50_000


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="the shared demo footage is not here")
def test_sample_footage_is_the_shared_footage_byte_for_byte():
    ours = sorted(os.path.relpath(os.path.join(d, f), FOOTAGE_DIR) for d, _, fs in os.walk(FOOTAGE_DIR) for f in fs)
    theirs = sorted(os.path.relpath(os.path.join(d, f), SHARED) for d, _, fs in os.walk(SHARED) for f in fs)
    assert ours == theirs and len(ours) == 8           # 5 clips, README.md, LICENSE, groups.csv
    for rel in ours:
        if rel != "README.md":                          # the README keeps the credit, worded for the package
            assert sha256(os.path.join(FOOTAGE_DIR, rel)) == sha256(os.path.join(SHARED, rel)), rel


def test_sample_footage_is_package_data():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["xvad"]
    package = os.path.dirname(os.path.abspath(xvad.__file__))
    for d, _, files in os.walk(FOOTAGE_DIR):
        for name in files:
            rel = os.path.relpath(os.path.join(d, name), package).replace(os.sep, "/")
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not installed with the package"


def test_the_sample_clips_are_the_only_videos_in_the_repository():
    if not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("git cannot list the files here")
    videos = {p for p in r.stdout.splitlines() if p.lower().endswith((".mp4", ".avi", ".mkv", ".mov", ".ts"))}
    package = os.path.relpath(FOOTAGE_DIR, ROOT).replace(os.sep, "/")
    assert videos <= {f"{package}/{c.label}/{c.name}.mp4" for c in demo_footage()}, videos


def test_a_cameras_clips_join_into_one_video(tmp_path):
    clips = demo_cameras()["g29"]
    v = camera_video(clips, str(tmp_path / "g29.mp4"), loops=2)
    counts = [decoded(c.path)[0] for c in clips]
    frames, w, h, rate = decoded(v.path)
    assert frames == 2 * sum(counts) and (h, w) == v.size and abs(rate - v.fps) < 0.01
    assert [c.name for _, _, c in v.timeline] == [c.name for c in clips] * 2
    ends = [sum(counts[:i + 1]) / v.fps for i in range(len(counts))]
    ends += [ends[-1] + e for e in ends]
    assert [round(e, 6) for _, e, _ in v.timeline] == [round(e, 6) for e in ends]
    assert v.duration == pytest.approx(ends[-1])
    first, second = v.timeline[0][1], v.timeline[1][1]
    assert [c.name for c in v.clips_between(first - 0.1, first + 0.1)] == [clips[0].name, clips[1].name]
    assert [c.name for c in v.clips_between(first + 0.1, second - 0.1)] == [clips[1].name]


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    from xvad.demo import MARKER, prepare

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not made by `xvad demo`"):
        prepare(str(tmp_path))
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    demo = tmp_path / "demo"
    prepare(str(demo))
    (demo / "media").mkdir()
    (demo / "xvad.db").write_text("an earlier run")
    prepare(str(demo))                                  # an earlier demo's state goes, the marker stays
    assert sorted(os.listdir(demo)) == [MARKER]


# -- the demo end to end ---------------------------------------------------------------------------
ROW = re.compile(r"^(g\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\w+)\s+(.*?)\s+(complete|missing|skipped|"
                 r"pending|deleted)\s+(\w+|-)\s+(\S+)$")


def env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.join(ROOT, "src"),
                                                                   os.environ.get("PYTHONPATH")) if p))


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    from xvad.service.auth import check_password
    from xvad.service.store import Database

    out = tmp_path / "demo"
    # --fast: every frame is scored (none dropped on a busy machine), so the alerts are the model's alone
    r = subprocess.run([sys.executable, "-m", "xvad", "demo", "--out", str(out), "--loops", "1", "--fast"],
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout
    user, password = re.search(r"^demo account: user (\S+), password (\S+) \(role reviewer\)$", text, re.M).groups()
    rows = [m.groups() for m in map(ROW.match, text.splitlines()) if m]
    db = Database("sqlite:///" + str(out / "xvad.db"))
    try:
        alerts = {a["id"]: a for a in db.alerts(limit=1000)[0]}
        assert rows and len(rows) == len(alerts), text        # every alert of the database, once
        for camera, alert_id, start, end, peak, cls, _footage, media, explained, report in rows:
            a = alerts[int(alert_id)]
            assert (a["camera"], a["class_name"], a["media_state"], a["explanation_state"]) == \
                (camera, cls, media, explained)
            assert float(start) == pytest.approx(a["start_time"], abs=0.05)
            assert float(end) == pytest.approx(a["end_time"], abs=0.05)
            assert float(peak) == pytest.approx(a["peak_score"], abs=0.005)
            assert a["state"] == "closed" and explained == "complete", a     # the demo waited for its explanation
            path = tmp_path / report
            assert path.resolve() == (out / "media" / a["media_dir"] / a["files"]["report"]).resolve()
            assert path.stat().st_size > 10_000 and "<html" in path.read_text(encoding="utf-8")[:2000].lower()
            assert (path.parent / a["files"]["clip"]).stat().st_size > 0
            if a["end_reason"] == "source ended":       # it ends at the camera's last frame, not before
                duration = sum(decoded(c.path)[0] / decoded(c.path)[3] for c in demo_cameras()[camera])
                assert duration - 2 / a["fps"] < a["end_time"] <= duration, (a, duration)
        for name in ("g21", "g29"):     # each camera's line: every frame at 8 fps scored, its alerts counted
            n = sum(a["camera"] == name for a in alerts.values())
            frames = sum(decoded(c.path)[0] / decoded(c.path)[3] * 8 for c in demo_cameras()[name])
            m = re.search(rf"^camera {name}: (\d+) frames scored at 8 fps, \d+ windows, 0 dropped, {n} alert\(s\)$",
                          text, re.M)
            assert m and abs(int(m.group(1)) - frames) <= 2, text
        assert {c["name"] for c in db.cameras()} == {"g21", "g29"}
        found = check_password(db, user, password)
        assert found is not None and found.name == "demo" and found.role == "reviewer" and found.cameras is None
        assert check_password(db, user, password + "x") is None
    finally:
        db.close()


@pytest.mark.slow
def test_demo_serve_keeps_running_until_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "xvad", "demo", "--serve", "--loops", "1", "--out",
                             str(tmp_path / "demo")], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()

    def wait_for(what, check, timeout):
        end = time.monotonic() + timeout
        while not (value := check()):
            assert proc.poll() is None, f"xvad demo --serve exited while waiting for {what}:\n" + "".join(lines)
            assert time.monotonic() < end, f"no {what} after {timeout} s:\n" + "".join(lines)
            time.sleep(0.25)
        return value

    try:
        api = wait_for("API line", lambda: next((m for m in map(re.compile(
            r"the API: curl -H 'Authorization: Bearer (\S+)' (http://127\.0\.0\.1:\d+)/api/alerts").search, lines)
            if m), None), 120)
        token, url = api.groups()
        headers = {"Authorization": f"Bearer {token}"}

        def g29_frames() -> int:
            cams = {c["name"]: c for c in httpx.get(url + "/api/cameras", headers=headers, timeout=30).json()}
            assert set(cams) == {"g21", "g29"}
            return cams["g29"]["live"]["frames"]

        one_loop = sum(decoded(c.path)[0] / decoded(c.path)[3] for c in demo_cameras()["g29"]) * 8   # frames at 8 fps
        wait_for("second loop of g29", lambda: g29_frames() > one_loop + 8, 120)   # it played its clips again
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(300) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    text = "".join(lines)
    assert "camera  alert  start s" in text or "no alert was raised" in text, text
    assert re.search(r"^demo account: user demo, password \S+ \(role reviewer\)$", text, re.M), text
