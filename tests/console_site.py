"""A small site for the console's tests: a real SQLite file with two cameras (A and B), their alerts with
real clips on disk, users of every role, the real app; helpers to log in through the real login form."""
from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
from fastapi.testclient import TestClient

from servers import free_port

PASSWORD = "secret-pass"
USERS = {"admin": ("admin", None), "rev": ("reviewer", None), "rev_a": ("reviewer", ["A"]),
         "viewer": ("viewer", None)}
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
# camera, minutes after T0, peak score, state
ALERTS = [("A", 0, 0.91, "closed"), ("A", 10, 0.62, "closed"), ("A", 20, 0.97, "open"),
          ("B", 5, 0.88, "closed"), ("B", 15, 0.55, "interrupted")]


@dataclass
class Site:
    folder: str
    db: object
    settings: object
    app: object
    alerts: list[dict] = field(default_factory=list)       # as inserted: id, uid, camera, started_at, score, ...
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, address: str = "testclient", https: bool = False) -> TestClient:
        return TestClient(self.app, base_url="https://testserver" if https else "http://testserver",
                          follow_redirects=False, client=(address, 50000))

    def of(self, camera: str) -> list[dict]:
        return [a for a in self.alerts if a["camera"] == camera]


def write_clip(path: str, frames: int = 8, size: int = 64) -> None:
    """A real H.264 clip (a square moving across a grey field), written by the project's own writer."""
    from xvad.render import VideoWriter

    w = VideoWriter(path, 8.0)
    for i in range(frames):
        image = np.full((size, size, 3), 90, np.uint8)
        image[20:36, 4 + i * 6:20 + i * 6] = (230, 40, 40)
        w.write(image)
    w.close()


def make_site(folder: str, console: dict | None = None, with_media: bool = True) -> Site:
    """The site in ``folder`` (database ``folder/data/xvad.db``), with ``console`` settings."""
    from xvad.service import auth
    from xvad.service.api import create_app
    from xvad.service.settings import ServiceSettings
    from xvad.service.store import Database

    settings = ServiceSettings.model_validate({"data": os.path.join(folder, "data"), "console": console or {}})
    db = Database(settings.db)
    db.migrate()
    for cam in ("A", "B"):
        db.upsert_camera(cam, f"rtsp://camera-{cam}/stream", f"entrance {cam}", {})
    site = Site(folder, db, settings, create_app(db, settings, None))
    for name, (role, cams) in USERS.items():
        auth.create_user(db, name, role, PASSWORD, cams)
        site.tokens[name] = auth.issue_token(db, name)
    for camera, minutes, score, state in ALERTS:
        uid = str(uuid.uuid4())
        started = T0 + timedelta(minutes=minutes)
        rel = os.path.join(camera, uid)
        alert_id = db.alert_started(uid=uid, camera=camera, started_at=started, start_time=minutes * 60.0,
                                    score=score, class_name="fight", class_index=1, checkpoint_id="ckpt-test",
                                    xvad_version="0.1.0", threshold=0.5, policy="3/5", window=16, stride=2,
                                    fps=8.0, media_dir=rel, host="test", pid=1)
        if state != "open":
            db.alert_ended(uid, ended_at=started + timedelta(seconds=30), end_time=minutes * 60.0 + 30,
                           peak_score=score, reason="scores" if state == "closed" else "interrupted", state=state)
        if with_media:
            media = os.path.join(settings.data, "media", rel)
            os.makedirs(media, exist_ok=True)
            write_clip(os.path.join(media, "clip.mp4"))
            db.media_state(uid, "complete", files={"clip": "clip.mp4"})
        site.alerts.append({"id": alert_id, "uid": uid, "camera": camera, "started_at": started, "score": score,
                            "state": state, "media": os.path.join(settings.data, "media", rel)})
    return site


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def login(client: TestClient, name: str, password: str = PASSWORD, next_: str = "/") -> object:
    """Log in through the login form; the response to the form's POST."""
    page = client.get("/login", params={"next": next_})
    assert page.status_code == 200, page.text
    return client.post("/login", data={"username": name, "password": password, "csrf": csrf_of(page.text),
                                       "next": next_})


def session_client(site: Site, name: str, **kw) -> tuple[TestClient, str]:
    """A client logged in as ``name`` and its session's CSRF token (read from a page, as a browser would)."""
    c = site.client(**kw)
    r = login(c, name)
    assert r.status_code == 303, r.text
    return c, csrf_of(c.get("/cameras").text)


@contextmanager
def serving(app: object) -> Iterator[int]:
    """``app`` on a real uvicorn on 127.0.0.1 (raw requests and browsers reach it as they would a
    deployed service); yields its port, and stops it after."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    end = time.monotonic() + 30
    while not server.started and time.monotonic() < end:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        t.join(10)

