"""`xvad serve` as a whole, with real components: cameras served over HTTP/MPEG-TS on loopback, the
service run as its own process on SQLite, its HTTP API, a real mosquitto broker and a webhook endpoint.

The camera plays surv-fight's fi003 (a fight, p ~ 1.0) then nofi002 (no fight, p ~ 0.002) again and
again at 8 frames per second, so alerts start and end every few seconds. Every wait is bounded; every
server and process a test starts is stopped at its end.
"""
from __future__ import annotations

import glob
import hashlib
import hmac
import http.client
import http.server
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import av
import httpx
import pytest
import yaml

import xvad

from cameras import LiveCamera, mpegts_bytes
from conftest import SURV_FIGHT
from servers import free_port, postgres_server  # noqa: F401  (the session fixture)

FIGHT = os.path.join(SURV_FIGHT, "fight", "fi003.mp4")
CALM = os.path.join(SURV_FIGHT, "noFight", "nofi002.mp4")
FPS = 8
SPEED = 0.5           # the camera sends at half its rate: room for the others on a busy 2-core machine
SRC = os.path.dirname(os.path.dirname(os.path.abspath(xvad.__file__)))
MOSQUITTO = "/usr/sbin/mosquitto"

pytestmark = pytest.mark.skipif(not (os.path.exists(FIGHT) and os.path.exists(CALM)),
                                reason="surv-fight footage (fi003, nofi002) not found")


# -- helpers -----------------------------------------------------------------------------------------
def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    return env


def xvad_cli(*args: str, cwd: str) -> str:
    """Run ``python -m xvad ARGS`` to the end; its output (the test fails on a non-zero exit)."""
    r = subprocess.run([sys.executable, "-m", "xvad", *args], cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"xvad {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


def wait_for(what: str, check, timeout: float, server: Serve | None = None, every: float = 0.25):
    """Poll ``check()`` until it returns something truthy (returned), at most ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if server is not None and server.proc is not None and server.proc.poll() is not None:
            pytest.fail(f"xvad serve exited ({server.proc.returncode}) while waiting for {what}\n{server.log()}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} after {timeout:.0f} s" + (f"\n{server.log()}" if server else ""))
        time.sleep(every)


def camera(name: str, source: str, **extra) -> dict:
    return {"name": name, "source": source, "alert": "1/1", "stride": 2, "pre_roll": 1, "post_roll": 1,
            "explain": False, **extra}


class Serve:
    """``xvad serve --config`` in a folder of its own (SQLite and media in ``folder/data``)."""

    def __init__(self, folder: str, cameras: list[dict], **settings) -> None:
        self.folder = folder
        self.port = free_port()
        self.config = os.path.join(folder, "xvad.yaml")
        self.data = os.path.join(folder, "data")
        with open(self.config, "w") as f:
            yaml.safe_dump({"data": "data", "port": self.port, "disk_min_free_mb": 10, "cameras": cameras,
                            **settings}, f)
        self.proc: subprocess.Popen | None = None
        self.logfile = os.path.join(folder, "serve.log")
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = self.user("admin", "admin")

    def user(self, name: str, role: str, cameras: str | None = None) -> str:
        """Add a user and return a new token for it (the last line ``xvad users token`` prints)."""
        extra = ["--cameras", cameras] if cameras else []
        xvad_cli("users", "add", name, "--role", role, "--password", "secret-pass", *extra,
                 "--config", self.config, cwd=self.folder)
        return xvad_cli("users", "token", name, "--config", self.config, cwd=self.folder).strip().splitlines()[-1]

    def start(self) -> None:
        log = open(self.logfile, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "xvad", "--log-level", "info", "serve", "--config",
                                      self.config], cwd=self.folder, env=_env(), stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        wait_for("answer from the API", lambda: self._up(), 120, self)

    def _up(self) -> bool:
        try:
            return self.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str, token: str | None = "admin", **params) -> httpx.Response:
        token = self.token if token == "admin" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.base + path, params=params, headers=headers, timeout=30)

    def alerts(self, **params) -> list[dict]:
        r = self.get("/api/alerts", limit=500, **params)
        assert r.status_code == 200, r.text
        return r.json()["alerts"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Send ``sig`` and wait for the exit; its code (None: it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def log(self) -> str:
        try:
            with open(self.logfile) as f:
                return "".join(f.readlines()[-40:])
        except OSError:
            return ""


@pytest.fixture(scope="module")
def stream():
    """fi003's frames then nofi002's (8 fps, same camera and size) as one MPEG-TS stream."""
    import numpy as np

    from xvad.video import read_frames

    fight, _ = read_frames(FIGHT, fps=FPS)
    calm, _ = read_frames(CALM, fps=FPS)
    assert fight.shape[1:] == calm.shape[1:]
    frames = np.concatenate([fight, calm])
    return mpegts_bytes(frames, FPS), len(frames) / FPS


@pytest.fixture
def live(stream):
    cam = LiveCamera(stream[0], stream[1], speed=SPEED, loop=True)
    cam.start()
    yield cam
    cam.kill()


@pytest.fixture
def serve(tmp_path):
    """A factory of :class:`Serve`; every one it made is stopped at the end."""
    made: list[Serve] = []

    def make(cameras: list[dict], folder: str | None = None, **settings) -> Serve:
        s = Serve(folder or str(tmp_path), cameras, **settings)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop(signal.SIGKILL)


def decode(path: str) -> int:
    """How many frames ``path`` decodes to (PyAV)."""
    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))


def raw_get(port: int, path: str, token: str) -> tuple[int, bytes]:
    """GET ``path`` byte for byte as written (no client-side normalisation of ``..`` or ``%2F``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# -- one service with three cameras: end to end, security, a camera that never opens ------------------------
@pytest.fixture(scope="module")
def site(stream, tmp_path_factory):
    """gate and hall watch the same loopback camera (gate explains its alerts); dead's URL never opens.
    Users: admin, and a viewer limited to gate."""
    cam = LiveCamera(stream[0], stream[1], speed=SPEED, loop=True)
    cam.start()
    folder = str(tmp_path_factory.mktemp("site"))
    s = Serve(folder, [camera("gate", cam.url, explain=True), camera("hall", cam.url),
                       camera("dead", f"http://127.0.0.1:{free_port()}/x.ts")])
    s.viewer = s.user("viewer", "viewer", "gate")
    try:
        s.start()
        yield s
    finally:
        s.stop(signal.SIGKILL)
        cam.kill()


def closed_with_clip(s: Serve, name: str) -> list[dict]:
    return [a for a in s.alerts(camera=name, state="closed") if a["media_state"] == "complete"]


def test_end_to_end_alert_clip_and_report(site):
    s = site
    a = wait_for("closed alert of gate with its clip", lambda: closed_with_clip(s, "gate"), 90, s)[-1]
    assert a["camera"] == "gate" and a["state"] == "closed" and a["end_reason"] == "scores"
    assert a["class_name"] == "fight"
    assert a["peak_score"] > 0.9 and a["threshold"] == 0.5 and a["policy"] == "1/1"
    assert a["checkpoint_id"] and a["xvad_version"] == xvad.__version__
    assert a["started_at"] < a["ended_at"] and a["start_time"] < a["end_time"]
    # the clip: pre-roll (1 s) + the alert + post-roll (1 s), every frame decodable
    r = s.get(f"/api/alerts/{a['id']}/clip.mp4")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    clip = os.path.join(s.folder, "downloaded.mp4")
    with open(clip, "wb") as f:
        f.write(r.content)
    span = round((a["end_time"] - a["start_time"]) * FPS) + 1          # frames from the start to the end
    n = decode(clip)
    assert n >= span + FPS + FPS - 2, (n, span)                        # + pre-roll and post-roll frames
    assert n <= span + FPS + FPS + 2, (n, span)
    # the explanation, in the background
    done = wait_for("complete explanation", lambda: (x := s.get(f"/api/alerts/{a['id']}").json())
                    ["explanation_state"] in ("complete", "failed") and x, 120, s)
    assert done["explanation_state"] == "complete", done
    r = s.get(f"/api/alerts/{a['id']}/report.html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text.lower() and len(r.text) > 1000
    # on the record: its start and end by the service itself, in a chain that verifies
    # (every look at the alert is on it too: the wait above may have added hundreds, so one big page)
    got = s.get("/api/audit", target=f"alert:{a['id']}", limit=1000).json()["entries"][::-1]
    assert [(e["actor"], e["action"]) for e in got[:2]] == [("system", "alert.raised"), ("system", "alert.ended")]
    assert got[0]["details"]["camera"] == "gate" and got[0]["details"]["checkpoint_id"] == a["checkpoint_id"]
    assert got[1]["details"]["reason"] == "scores" and got[1]["details"]["peak_score"] == a["peak_score"]
    assert xvad_cli("audit", "verify", "--config", s.config, cwd=s.folder).startswith("audit log intact: ")
    # beside it, the console's overlay: recorded in the alert's files, each one served
    files = done["files"]
    assert files["clip"] == "clip.mp4" and files["report"] == "report.html"
    assert files["explanation"] == "explanation.json" and files["maps"] == "maps.png"
    r = s.get(f"/api/alerts/{a['id']}/explanation.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    overlay = r.json()
    assert overlay["clip"]["file"] == "clip.mp4" and overlay["clip"]["frames"] == n
    assert len(overlay["frames"]) == n                      # at the model's rate: a map for every frame of the clip
    assert [k["file"] for k in overlay["key_frames"]] == [files[f"key_{i}"] for i in range(len(overlay["key_frames"]))]
    for name, kind in [("maps.png", "image/png"), *((k["file"], "image/jpeg") for k in overlay["key_frames"])]:
        r = s.get(f"/api/alerts/{a['id']}/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == kind and len(r.content) > 1000, name
        assert os.path.isfile(os.path.join(s.data, "media", done["media_dir"], name))


def test_security(site):
    s = site
    hall = wait_for("closed alert of hall with its clip", lambda: closed_with_clip(s, "hall"), 90, s)[-1]
    gate = wait_for("closed alert of gate with its clip", lambda: closed_with_clip(s, "gate"), 90, s)[-1]
    routes = ["/healthz", "/metrics", "/api/cameras", "/api/alerts", f"/api/alerts/{gate['id']}",
              f"/api/alerts/{gate['id']}/clip.mp4"]
    for path in routes:
        assert s.get(path, token=None).status_code == 401, path
        assert s.get(path, token="xvad_1_wrong-secret").status_code == 401, path
        assert s.get(path, token=s.token[:-1] + ("A" if s.token[-1] != "A" else "B")).status_code == 401, path
        assert s.get(path).status_code == 200, path
    assert httpx.post(f"{s.base}/api/cameras/gate/stop", timeout=30).status_code == 401

    # a viewer limited to gate sees gate only
    # (the cameras are live: a new alert may open between two requests, so the admin's count is read on
    # both sides of the viewer's)
    before = s.get("/api/alerts", camera="gate", limit=500).json()
    seen = s.get("/api/alerts", token=s.viewer, limit=500).json()
    after = s.get("/api/alerts", camera="gate", limit=500).json()
    assert seen["alerts"] and {x["camera"] for x in seen["alerts"]} == {"gate"}
    assert before["total"] <= seen["total"] <= after["total"]
    ids = [{x["id"] for x in page["alerts"]} for page in (before, seen, after)]
    assert ids[0] <= ids[1] <= ids[2]
    assert s.get(f"/api/alerts/{hall['id']}", token=s.viewer).status_code == 404
    assert s.get(f"/api/alerts/{hall['id']}/clip.mp4", token=s.viewer).status_code == 404
    assert s.get(f"/api/alerts/{hall['id']}/clip.mp4").status_code == 200          # it is there for admin
    assert s.get("/api/alerts", token=s.viewer, camera="hall").json()["total"] == 0
    assert [c["name"] for c in s.get("/api/cameras", token=s.viewer).json()] == ["gate"]
    r = httpx.post(f"{s.base}/api/cameras/gate/stop", headers={"Authorization": f"Bearer {s.viewer}"}, timeout=30)
    assert r.status_code == 403
    r = httpx.post(f"{s.base}/api/cameras/hall/stop", headers={"Authorization": f"Bearer {s.viewer}"}, timeout=30)
    assert r.status_code == 404

    # path traversal through the media name: nothing outside the alert's folder
    with open(os.path.join(s.data, "xvad.db"), "rb") as f:
        db_head = f.read(16)
    assert db_head.startswith(b"SQLite format 3")
    i, other = gate["id"], hall["uid"]
    for path in [f"/api/alerts/{i}/..%2F..%2Fxvad.db", f"/api/alerts/{i}/../../xvad.db",
                 f"/api/alerts/{i}/..%2F..%2F..%2Fdata%2Fxvad.db", f"/api/alerts/{i}/%2Fetc%2Fpasswd",
                 f"/api/alerts/{i}//etc/passwd", f"/api/alerts/{i}/%2E%2E%2F%2E%2E%2Fxvad.db",
                 f"/api/alerts/{i}/..%2F{other}%2Fclip.mp4", f"/api/alerts/{i}/{s.data}/xvad.db",
                 f"/api/alerts/{i}/..%5C..%5Cxvad.db", f"/api/alerts/{i}/clip.mp4%00.html"]:
        status, body = raw_get(s.port, path, s.token)
        assert status in (404, 400, 422), (path, status)
        assert not body.startswith(b"SQLite") and b"root:" not in body, path

    # SQL injection through the filters returns nothing extra
    total = s.get("/api/alerts").json()["total"]
    for params in [{"camera": "x' OR '1'='1"}, {"camera": "gate' OR camera='hall"},
                   {"state": "closed' OR '1'='1"}, {"state": "x\" OR 1=1 --"}]:
        r = s.get("/api/alerts", **params)
        assert r.status_code in (200, 400, 422), (params, r.status_code, r.text)
        if r.status_code == 200:
            assert r.json()["total"] == 0, params
    r = s.get("/api/alerts", token=s.viewer, camera="gate' OR '1'='1")
    assert r.status_code in (200, 400, 422) and (r.status_code != 200 or r.json()["total"] == 0)
    assert s.get("/api/alerts").json()["total"] >= total            # nothing was deleted either

    # the database holds no token in clear
    secret = s.token.rsplit("_", 1)[-1]
    for path in glob.glob(os.path.join(s.data, "xvad.db*")):
        with open(path, "rb") as f:
            content = f.read()
        for t in (s.token, s.viewer):
            assert t.encode() not in content and t.rsplit("_", 1)[-1].encode() not in content, path
        assert secret.encode() not in content


def test_camera_that_never_opens_is_offline(site):
    s = site

    def cams():
        return {c["name"]: c for c in s.get("/api/cameras").json()}

    wait_for("dead camera offline", lambda: cams()["dead"]["state"] == "offline", 30, s)
    before = cams()
    time.sleep(3)
    after = cams()
    assert after["dead"]["state"] == "offline"
    assert after["gate"]["state"] == "running" and after["hall"]["state"] == "running"
    for name in ("gate", "hall"):
        assert after[name]["live"]["windows"] > before[name]["live"]["windows"], name
    assert after["dead"]["live"] is None or after["dead"]["live"]["windows"] == 0


# -- faults -------------------------------------------------------------------------------------------
def test_kill_9_in_the_middle_of_an_alert(live, serve, tmp_path):
    from xvad.service.store import Database

    s = serve([camera("gate", live.url), camera("hall", FIGHT, loop=True)])
    s.start()
    db = Database(f"sqlite:///{os.path.join(s.data, 'xvad.db')}")
    try:
        wait_for("closed alert with its clip", lambda: closed_with_clip(s, "gate"), 150, s)
        wait_for("open alert of gate", lambda: db.alerts(cameras=["gate"], state="open")[0], 120, s, every=0.1)
        s.proc.kill()
        s.proc.wait(10)
        before, _ = db.alerts(limit=1000)
        was_open = {a["uid"] for a in before if a["state"] == "open"}
        assert was_open and len(was_open) <= 2            # gate's, and hall's (fi003 on a loop never ends)
        s.start()
        after = {a["uid"]: a for a in db.alerts(limit=1000)[0]}
        for a in before:
            b = after[a["uid"]]                           # every alert that had started is still there
            assert b["id"] == a["id"] and b["camera"] == a["camera"]
            if a["uid"] in was_open:
                assert b["state"] == "interrupted" and b["end_reason"] == "interrupted" and b["ended_at"], b
                got = s.get("/api/audit", target=f"alert:{b['id']}").json()["entries"][::-1]
                assert [(e["action"], e["details"].get("reason")) for e in got] == \
                    [("alert.raised", None), ("alert.ended", "interrupted")]      # closed by the next run
                assert b["media_state"] in ("missing", "complete"), b
            assert b["media_state"] != "pending", b
            if b["media_state"] == "complete":            # complete only if the clip really is
                clip = os.path.join(s.data, "media", b["media_dir"], b["files"]["clip"])
                assert decode(clip) > 0
        assert not glob.glob(os.path.join(s.data, "media", "**", "*.part"), recursive=True)
        newest = max(a["id"] for a in before)
        wait_for("new alert after the restart", lambda: [a for a in db.alerts(limit=1000)[0]
                                                         if a["id"] > newest and a["pid"] == s.proc.pid], 120, s)
        rows, total = db.alerts(limit=1000)
        assert len({a["uid"] for a in rows}) == len(rows) == total
        assert len([a for a in rows if a["id"] <= newest]) == len(before)
    finally:
        db.close()
    assert s.stop() == 0


def test_sigterm_drains(serve):
    s = serve([camera("hall", FIGHT, loop=True)])
    s.start()
    a = wait_for("open alert", lambda: s.alerts(state="open"), 60, s)[0]
    assert s.stop(signal.SIGTERM, 60) == 0, s.log()
    from xvad.service.store import Database

    db = Database(f"sqlite:///{os.path.join(s.data, 'xvad.db')}")
    try:
        b = db.alert(a["id"])
    finally:
        db.close()
    assert b["state"] == "closed" and b["end_reason"] == "shutdown" and b["ended_at"], b
    assert b["media_state"] == "complete", b
    clip = os.path.join(s.data, "media", b["media_dir"], b["files"]["clip"])
    assert decode(clip) >= FPS                            # the pre-roll alone is a second
    assert not glob.glob(os.path.join(s.data, "media", "**", "*.part"), recursive=True)


# -- integrations -------------------------------------------------------------------------------------
class Mosquitto:
    def __init__(self, folder: str) -> None:
        import pwd

        self.port = free_port()
        self.config = os.path.join(folder, "mosquitto.conf")
        os.makedirs(os.path.join(folder, "mq"), exist_ok=True)
        with open(self.config, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {os.path.join(folder, 'mq')}/\n"
                    f"user {pwd.getpwuid(os.getuid()).pw_name}\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import socket

        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.config], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                return False

        wait_for("mosquitto", up, 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def subscriber(port: int, topic: str, client_id: str, persistent: bool) -> tuple:
    import paho.mqtt.client as mqtt

    got: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
    subscribed = threading.Event()
    c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    c.on_subscribe = lambda *args: subscribed.set()
    c.on_message = lambda c, u, m: got.put((m.topic, m.payload.decode(), bool(m.retain)))
    c.reconnect_delay_set(1, 2)
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    assert subscribed.wait(10), "no SUBACK from mosquitto"
    return c, got


def drain(got: queue.Queue, into: list) -> list:
    while True:
        try:
            into.append(got.get_nowait())
        except queue.Empty:
            return into


@pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason=f"{MOSQUITTO} not installed (apt-get install mosquitto)")
def test_mqtt_with_a_real_broker(live, serve, tmp_path):
    broker = Mosquitto(str(tmp_path))
    broker.start()
    sub, got = subscriber(broker.port, "xvad/#", "xvad-test-subscriber", persistent=True)
    try:
        s = serve([camera("gate", live.url)], mqtt={"host": "127.0.0.1", "port": broker.port})
        s.start()
        messages: list = []

        def alert_messages(kind: str, alert_id: int | None = None) -> list:
            drain(got, messages)
            out = []
            for topic, body, _ in messages:
                if topic == "xvad/alerts":
                    m = json.loads(body)
                    if m["type"] == kind and (alert_id is None or m["alert"]["id"] == alert_id):
                        out.append(m)
            return out

        start = wait_for("MQTT alert start", lambda: alert_messages("start"), 60, s)[0]
        assert start["alert"]["camera"] == "gate" and start["alert"]["score"] > 0.5
        end = wait_for("MQTT alert end", lambda: alert_messages("end", start["alert"]["id"]), 60, s)[0]
        assert end["alert"]["camera"] == "gate" and end["alert"]["uid"] == start["alert"]["uid"]
        assert any(t == "xvad/cameras/gate/alerts" and json.loads(b)["alert"]["id"] == start["alert"]["id"]
                   for t, b, _ in messages)
        c2, got2 = subscriber(broker.port, "xvad/available", "xvad-test-available", persistent=False)
        try:
            topic, body, retained = wait_for("retained xvad/available", lambda: drain(got2, []), 10)[0]
            assert (topic, body, retained) == ("xvad/available", "online", True)
        finally:
            c2.loop_stop()
            c2.disconnect()

        # the broker goes away: detection goes on, and the messages wait in the outbox
        broker.stop()
        newest = max(a["id"] for a in s.alerts())
        down = wait_for("alert while the broker is down", lambda: [a for a in s.alerts(camera="gate")
                                                                  if a["id"] > newest], 60, s)[-1]
        assert not alert_messages("start", down["id"])
        broker.start()
        wait_for("MQTT start of the alert raised while the broker was down",
                 lambda: alert_messages("start", down["id"]), 120, s)
        assert s.stop() == 0
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()


def test_webhook_signed_and_retried(serve, tmp_path):
    secret = "hook-secret-42"
    calls: list = []
    lock = threading.Lock()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                status = 500 if not calls else 200          # the endpoint fails the first time
                calls.append((dict(self.headers), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        s = serve([camera("hall", FIGHT, loop=True)], webhooks=[{"url": url, "secret": secret}])
        s.start()

        def starts() -> list:
            with lock:
                return [json.loads(b) for _, b, st in calls if st == 200 and json.loads(b).get("type") == "start"]

        start = wait_for("webhook alert start", starts, 60, s)[0]
        assert start["alert"]["camera"] == "hall"
        with lock:
            first_body = calls[0][1]
            assert calls[0][2] == 500
            retried = [c for c in calls[1:] if c[1] == first_body]
        assert retried and retried[0][2] == 200, "the call that got HTTP 500 was not retried"
        with lock:
            for headers, body, _ in calls:
                expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                assert hmac.compare_digest(headers["X-Xvad-Signature"], expected), body
                wrong = "sha256=" + hmac.new(b"another key", body, hashlib.sha256).hexdigest()
                assert headers["X-Xvad-Signature"] != wrong
                assert headers["Content-Type"] == "application/json"
        assert s.stop() == 0
    finally:
        hook.shutdown()
        hook.server_close()



# -- several processes on one PostgreSQL -----------------------------------------------------------------
def test_two_detector_processes_and_an_api_process_share_postgresql(stream, tmp_path, request):
    """As on several hosts: one `xvad serve --no-api` per camera and one `--api-only`, all on the same
    PostgreSQL server; every alert either process raised is listed once by the API process."""
    pg = request.getfixturevalue("postgres_server")
    url = pg.create_database()
    cam = LiveCamera(stream[0], stream[1], speed=SPEED, loop=True)
    cam.start()
    api = Serve(str(tmp_path), [camera("gate", cam.url), camera("hall", cam.url)], db=url)
    workers = []
    try:
        for name in ("gate", "hall"):
            log = open(os.path.join(str(tmp_path), f"{name}.log"), "a")
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "xvad", "serve", "--config", api.config, "--cameras", name, "--no-api"],
                cwd=str(tmp_path), env=_env(), stdout=log, stderr=subprocess.STDOUT))
            log.close()
        log = open(api.logfile, "a")
        api.proc = subprocess.Popen([sys.executable, "-m", "xvad", "serve", "--config", api.config, "--api-only"],
                                    cwd=str(tmp_path), env=_env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for("answer from the API process", api._up, 120, api)

        def both_closed() -> bool:
            got = {a["camera"] for a in api.alerts(state="closed")}
            return {"gate", "hall"} <= got

        wait_for("a closed alert from each detector process", both_closed, 240, api, every=1.0)
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(90) == 0
        rows = api.alerts()
        uids = [a["uid"] for a in rows]
        assert len(uids) == len(set(uids)) and {a["camera"] for a in rows} == {"gate", "hall"}
        assert len({a["pid"] for a in rows}) == 2                    # each camera's alerts from its own process
        assert all(a["state"] == "closed" for a in rows)             # drained: none left open
        assert api.get("/api/alerts", limit=1).json()["total"] == len(rows)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        api.stop(signal.SIGKILL)
        cam.kill()


def test_each_camera_is_decoded_on_one_thread(live):
    """The service decodes each live camera on one thread (its cameras are its parallelism), where
    ``xvad detect``'s reader leaves FFmpeg its own choice; the camera still delivers frames."""
    from xvad.service.camera import CameraRun
    from xvad.service.settings import CameraSettings
    from xvad.stream.frames import FrameQueue
    from xvad.stream.source import Reader
    from xvad.video import parse_source

    cam = CameraRun(CameraSettings(name="gate", source=live.url), xvad.load_model(None))
    cam.start()
    try:
        assert cam.reader._stream.thread_count == 1
        end = time.monotonic() + 30
        while not cam.take(1)[0]:
            assert time.monotonic() < end, "no frame from the camera in 30 s"
            time.sleep(0.05)
    finally:
        cam.stop()
    own = Reader(parse_source(live.url), 8.0, lambda image, partner: None, FrameQueue(4), live=True)
    own.open()
    try:
        assert own._stream.thread_count != 1 or (os.cpu_count() or 1) == 1
    finally:
        own.stop()
