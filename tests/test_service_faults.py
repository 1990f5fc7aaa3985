"""Faults `xvad serve` must survive, with real components: a loopback camera that goes away for a minute
and comes back, a media disk that fills up (a small tmpfs), a camera stopped while the others go on, and a webhook
endpoint that is not there.

The cameras play surv-fight's fi003 (a fight) then nofi002 (no fight) on a loop, as in test_service.
Every wait is bounded and generous (the machine is shared); no test asserts on how long anything took.
"""
from __future__ import annotations

import glob
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import test_service
from test_service import FIGHT, FPS, MOSQUITTO, SPEED, Mosquitto, Serve, camera, decode, drain, subscriber, wait_for

from cameras import LiveCamera, mpegts_bytes
from servers import free_port

stream = test_service.stream          # the fixture: fi003 then nofi002 as one MPEG-TS stream

pytestmark = pytest.mark.skipif(not os.path.exists(FIGHT), reason="surv-fight footage (fi003, nofi002) not found")


def metric(s: Serve, name: str, **labels: str) -> float | None:
    """The value of the Prometheus sample ``name{labels}`` the service shows now (None: not there)."""
    r = s.get("/metrics")
    assert r.status_code == 200, r.text
    for line in r.text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def cameras(s: Serve) -> dict[str, dict]:
    return {c["name"]: c for c in s.get("/api/cameras").json()}


# -- a camera that disconnects for a minute and comes back ----------------------------------------------
@pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason=f"{MOSQUITTO} not installed (apt-get install mosquitto)")
def test_camera_gone_for_a_minute_comes_back(stream, tmp_path):
    """gate's camera server (fi003 on a loop) stops for 60 s while gate's alert is open: it ends ("disconnect"),
    gate is offline (database, metrics, MQTT), hall's frames flow all along; gate's reader reconnects by
    itself once the server is back, gate is running again and raises new alerts."""
    from xvad.video import read_frames

    fight, _ = read_frames(FIGHT, fps=FPS)            # gate sees a fight all along: its alert is open when it goes
    gate_cam = LiveCamera(mpegts_bytes(fight, FPS), len(fight) / FPS, speed=SPEED, loop=True)
    hall_cam = LiveCamera(stream[0], stream[1], speed=SPEED, loop=True)
    broker = Mosquitto(str(tmp_path))
    gate_cam.start()
    hall_cam.start()
    broker.start()
    sub, got = subscriber(broker.port, "xvad/cameras/#", "xvad-test-states", persistent=False)
    s = Serve(str(tmp_path), [camera("gate", gate_cam.url), camera("hall", hall_cam.url)],
              mqtt={"host": "127.0.0.1", "port": broker.port})
    messages: list = []

    def states(name: str) -> list[str]:
        drain(got, messages)
        return [body for topic, body, _ in messages if topic == f"xvad/cameras/{name}/state"]

    try:
        s.start()
        wait_for("gate online on MQTT", lambda: "online" in states("gate"), 60, s)
        open_alert = wait_for("an open alert of gate", lambda: s.alerts(camera="gate", state="open"), 120, s)[0]
        gate_cam.kill()                                   # the camera goes away in the middle of the alert
        gone = time.monotonic()
        hall_before = cameras(s)["hall"]["live"]

        wait_for("gate offline in the database", lambda: cameras(s)["gate"]["state"] == "offline", 60, s)
        wait_for("gate offline on MQTT", lambda: states("gate")[-1:] == ["offline"], 60, s)
        assert metric(s, "xvad_camera_up", camera="gate") == 0.0
        assert metric(s, "xvad_camera_up", camera="hall") == 1.0
        closed = wait_for("the open alert closed", lambda: (a := s.get(f"/api/alerts/{open_alert['id']}").json())
                          ["state"] == "closed" and a, 60, s)
        assert closed["end_reason"] == "disconnect", closed
        assert closed["ended_at"] and closed["end_time"] >= closed["start_time"]
        media = wait_for("the cut alert's clip finished", lambda: (a := s.get(f"/api/alerts/{closed['id']}")
                                                                  .json())["media_state"] != "pending" and a, 60, s)
        assert media["media_state"] == "complete", media      # the clip ends where the frames stopped
        assert decode(os.path.join(s.data, "media", media["media_dir"], media["files"]["clip"])) > 0
        gate_frames = cameras(s)["gate"]["live"]["frames"]

        # a minute without gate: hall goes on, its frames counted in every quarter of the minute
        last = hall_before
        while time.monotonic() - gone < 60:
            time.sleep(min(15.0, max(0.0, 60 - (time.monotonic() - gone))))
            cams = cameras(s)
            assert cams["gate"]["state"] == "offline" and cams["hall"]["state"] == "running", (cams, s.log())
            assert cams["hall"]["live"]["frames"] > last["frames"], (last, cams["hall"]["live"], s.log())
            assert cams["gate"]["live"]["frames"] == gate_frames, s.log()    # nothing came after the loss
            last = cams["hall"]["live"]
        assert last["windows"] > hall_before["windows"]
        assert not [a for a in s.alerts(camera="hall") if a["end_reason"] == "disconnect"]

        gate_cam.start()                                  # back, on the same port
        wait_for("gate running again", lambda: cameras(s)["gate"]["state"] == "running", 120, s)
        wait_for("gate online again on MQTT", lambda: states("gate")[-1:] == ["online"], 60, s)
        assert "offline" in states("gate") and "offline" not in states("hall")
        assert metric(s, "xvad_camera_up", camera="gate") == 1.0
        windows_back = cameras(s)["gate"]["live"]["windows"]
        wait_for("gate scoring windows again", lambda: cameras(s)["gate"]["live"]["windows"] > windows_back + 2,
                 120, s)
        after = wait_for("a new alert of gate after it came back", lambda: [
            a for a in s.alerts(camera="gate") if a["id"] > closed["id"]], 180, s)[-1]
        assert after["class_name"] == "fight" and after["start_time"] > closed["end_time"], after
        assert gate_cam.clients >= 2                      # the service opened the camera again by itself
        assert s.stop() == 0
    finally:
        s.stop(signal.SIGKILL)
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
        gate_cam.kill()
        hall_cam.kill()


# -- a full disk ------------------------------------------------------------------------------------------
def fill(folder: str) -> str:
    """Write zeros to a new file in ``folder`` until the file system says it is full; its path."""
    for i in range(1000):
        path = os.path.join(folder, f"filler-{i}.bin")
        if not os.path.exists(path):
            break
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == 28, exc                  # ENOSPC
    return path


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs mounted as the data folder's media dir (the database stays on the big disk, so
    records go on when media cannot); skips where mounting is not allowed."""
    media = tmp_path / "data" / "media"
    media.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "xvad-test-media", str(media)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs (no CAP_SYS_ADMIN?): {r.stderr.strip()}")
    try:
        yield str(media)
    finally:
        subprocess.run(["umount", "-l", str(media)], capture_output=True)


def test_full_disk_pauses_media_and_never_crashes(stream, small_disk, tmp_path):
    """hall (fi003 on a loop: one alert that goes on) is writing its clip when the disk fills up: the
    clip is given up (no part file, media "missing") and detection goes on; gate's alerts meanwhile are
    recorded without media ("skipped") and the metrics say media are paused; once space is freed, clips
    are written again."""
    cam = LiveCamera(stream[0], stream[1], speed=SPEED, loop=True)
    cam.start()
    s = Serve(str(tmp_path), [camera("gate", cam.url), camera("hall", FIGHT, loop=True)], disk_min_free_mb=8)
    try:
        s.start()
        wait_for("a clip of gate on the small disk", lambda: [a for a in s.alerts(camera="gate", state="closed")
                                                              if a["media_state"] == "complete"], 120, s)
        assert metric(s, "xvad_media_paused") == 0.0
        hall = wait_for("hall's alert recording", lambda: s.alerts(camera="hall", state="open"), 120, s)[0]
        assert hall["media_state"] == "pending" and hall["media_dir"], hall

        fill(small_disk)                                  # the disk is full in the middle of hall's clip
        hall = wait_for("hall's clip given up", lambda: (a := s.get(f"/api/alerts/{hall['id']}").json())
                        ["media_state"] != "pending" and a, 120, s)
        assert hall["media_state"] == "missing" and hall["state"] == "open", hall    # the alert goes on
        assert not os.listdir(os.path.join(small_disk, hall["media_dir"]))   # no clip, no part file
        for a in s.alerts():     # a clip given up or finished leaves no part file (one still recording has one)
            if a["media_state"] != "pending" and a["media_dir"]:
                assert not glob.glob(os.path.join(small_disk, glob.escape(a["media_dir"]), "*.part")), a
        fill(small_disk)                                  # what the part file held: full again
        wait_for("media paused in the metrics", lambda: metric(s, "xvad_media_paused") == 1.0, 60, s)
        assert s.get("/healthz").json()["media_paused"] is True
        newest = max(a["id"] for a in s.alerts())
        windows = cameras(s)["hall"]["live"]["windows"]
        skipped = wait_for("an alert of gate on the full disk", lambda: [
            a for a in s.alerts(camera="gate", state="closed") if a["id"] > newest], 180, s)[-1]
        assert skipped["media_state"] == "skipped" and not skipped["media_dir"], skipped
        assert skipped["peak_score"] > 0.5 and skipped["end_reason"] == "scores"    # the record is all there
        assert cameras(s)["hall"]["live"]["windows"] > windows                    # hall is still scored
        assert not glob.glob(os.path.join(small_disk, "**", "*.part"), recursive=True)

        for f in glob.glob(os.path.join(small_disk, "filler-*.bin")):             # space is freed
            os.remove(f)
        wait_for("media writing resumed in the metrics", lambda: metric(s, "xvad_media_paused") == 0.0, 60, s)
        newest = max(a["id"] for a in s.alerts())
        back = wait_for("a clip of gate again", lambda: [
            a for a in s.alerts(camera="gate", state="closed") if a["id"] > newest and a["media_state"] != "pending"],
            180, s)[-1]
        assert back["media_state"] == "complete", back
        assert decode(os.path.join(s.data, "media", back["media_dir"], back["files"]["clip"])) > 0
        assert s.stop() == 0
    finally:
        s.stop(signal.SIGKILL)
        cam.kill()


# -- stopping a camera never pauses the others ---------------------------------------------------------
def test_stopping_a_camera_does_not_pause_the_others(stream, tmp_path):
    """A camera's reader may take seconds to let go of its source; while it does, the other camera's
    frames are still scored, whether the stop comes from this process (the API) or from the database
    (another process). The slow reader is simulated by holding its stop until the other camera has
    scored more windows: if the stop held the inference thread, that could never happen."""
    from xvad.service.runtime import Service
    from xvad.service.settings import ServiceSettings
    from xvad.service.store import Database

    cam = LiveCamera(stream[0], stream[1], speed=SPEED, loop=True)
    cam.start()
    settings = ServiceSettings.model_validate({"data": str(tmp_path / "data"), "disk_min_free_mb": 0,
                                               "cameras": [camera("gate", cam.url), camera("hall", cam.url)]})
    db = Database(settings.db)
    db.migrate()
    service = Service(settings, db)

    def hold_stop(name: str, other: str, seen: dict) -> None:
        """Make ``name``'s reader stop only once ``other`` has scored 3 more windows (or after 120 s)."""
        reader = service.cameras[name].reader
        real = reader.stop

        def stop(wait: float = 3.0) -> None:
            reader.stop = real                            # held once: a later stop (the service's) is plain
            start = service.cameras[other].stats.windows
            end = time.monotonic() + 120
            while service.cameras[other].stats.windows < start + 3 and time.monotonic() < end:
                time.sleep(0.05)
            seen["windows"] = service.cameras[other].stats.windows - start
            real(wait)

        reader.stop = stop

    def state(name: str) -> str:
        return {c["name"]: c for c in db.cameras()}[name]["state"]

    try:
        service.start()
        wait_for("both cameras scoring", lambda: all(c.stats.windows > 0 for c in service.cameras.values()), 120)
        wait_for("an open alert of gate", lambda: "gate" in service.open, 120, every=0.05)
        open_uid = service.open["gate"].uid
        seen: dict = {}
        hold_stop("gate", "hall", seen)
        service.stop_camera("gate")                       # the API's stop button, in this thread
        assert seen["windows"] >= 3, seen                 # hall was scored while gate's reader stopped
        assert state("gate") == "stopped" and service.cameras["gate"].state == "stopped"
        stopped = db.alert_by_uid(open_uid)
        assert stopped["state"] == "closed" and stopped["end_reason"] == "camera stopped", stopped

        service.start_camera("gate")
        wait_for("gate scoring again", lambda: service.cameras["gate"].stats.windows > 0, 120)
        seen = {}
        hold_stop("hall", "gate", seen)
        db.set_camera_enabled("hall", False)              # a stop asked by another process
        wait_for("hall stopped through the database", lambda: state("hall") == "stopped", 180)
        assert seen["windows"] >= 3, seen                 # the inference thread went on meanwhile
        assert service.cameras["hall"].state == "stopped"
        frames = service.cameras["gate"].stats.frames
        wait_for("gate still scored", lambda: service.cameras["gate"].stats.frames > frames, 60)
    finally:
        service.stop()
        db.close()
        cam.kill()


# -- a webhook endpoint that is not there at all ---------------------------------------------------------
def test_webhook_endpoint_down_events_kept_and_delivered_later(tmp_path):
    """Nothing listens on the webhook's port (connection refused, not an HTTP error): detection goes on,
    the alert's start waits in the outbox with its failed attempts counted, and once an endpoint listens
    it gets that start, once."""
    from xvad.service.store import Database

    port = free_port()
    s = Serve(str(tmp_path), [camera("hall", FIGHT, loop=True)],
              webhooks=[{"url": f"http://127.0.0.1:{port}/hook", "timeout": 2}])
    got: list[dict] = []
    lock = threading.Lock()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                got.append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = None
    db = Database(f"sqlite:///{os.path.join(s.data, 'xvad.db')}")

    def waiting() -> list[dict]:
        later = datetime.now(timezone.utc) + timedelta(days=1)
        return [r for r in db.outbox_due(limit=1000, now=later) if r["kind"] == "webhook"]

    try:
        s.start()
        alert = wait_for("an alert while the endpoint is down", lambda: s.alerts(camera="hall"), 120, s)[-1]
        kept = wait_for("the alert's start retried in the outbox", lambda: [
            r for r in waiting() if r["attempts"] >= 2 and json.loads(r["payload"]["body"]).get("alert", {})
            .get("id") == alert["id"]], 120, s)
        assert kept[0]["payload"]["event"] == "alert_start"
        windows = cameras(s)["hall"]["live"]["windows"]
        wait_for("detection going on", lambda: cameras(s)["hall"]["live"]["windows"] > windows + 2, 60, s)

        hook = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hook)     # the endpoint comes up
        threading.Thread(target=hook.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

        def starts() -> list[dict]:
            with lock:
                return [b for b in got if b.get("type") == "start" and b["alert"]["id"] == alert["id"]]

        wait_for("the kept start delivered", starts, 180, s)
        wait_for("the outbox empty of it", lambda: not [r for r in waiting() if r["id"] == kept[0]["id"]], 60, s)
        assert len(starts()) == 1
        assert s.stop() == 0
    finally:
        s.stop(signal.SIGKILL)
        db.close()
        if hook is not None:
            hook.shutdown()
            hook.server_close()
