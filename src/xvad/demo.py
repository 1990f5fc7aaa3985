"""``xvad demo``: the review service on the sample footage, end to end, in a few minutes on a CPU.

The default demo runs the service in this process (:class:`xvad.service.runtime.Service` and its HTTP
API on a free loopback port) on xvad's sample footage as two cameras, ``g21`` (a street: a fight and
a non-fight) and ``g29`` (a night club: two fights and a non-fight), each playing its clips at their
own rate (``fast``: as fast as they are scored), ``loops`` times. It lets the alerts happen, waits
for their clips and explanations, and prints what happened: every alert, its decision report, and
how to open the console with the demo account. ``serve=True`` (``xvad demo --serve``) plays the
cameras on and on and keeps the service and its console running until Ctrl-C or SIGTERM.
``--synthetic`` instead trains a small model on synthetic clips with a planted anomaly and scores
fresh ones.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import threading
import time
from typing import Any

import numpy as np
import torch

from .checkpoint import load_model
from .errors import ConfigError
from .evaluate import score_video
from .report import architecture
from .samples import SCENES, CameraVideo, camera_video, demo_cameras, demo_footage
from .synthetic import make_clip, make_dataset, write_video
from .train import TrainConfig, train

DEMO_USER = "demo"
MARKER = ".xvad-demo"               # a folder holding this file was made by the demo: it may start it afresh
MADE = ("xvad.db", "xvad.db-wal", "xvad.db-shm", "media", "cameras")   # what a run leaves there


def prepare(out: str) -> str:
    """The data folder ``out``, emptied of an earlier demo run; a folder the demo did not make must be
    empty (nothing of anyone else's is ever deleted)."""
    out = os.path.abspath(out)
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, MARKER)):
        raise ConfigError(f"--out {out}: the folder is not empty and was not made by `xvad demo`; "
                          "give an empty or new folder")
    os.makedirs(out, exist_ok=True)
    for name in MADE:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    mark(out)
    return out


def mark(out: str) -> None:
    """Say that ``out`` is the demo's folder (so a later run may empty it)."""
    with open(os.path.join(out, MARKER), "w", encoding="utf-8") as f:
        f.write("made by `xvad demo`; the next run empties this folder\n")


def demo_settings(out: str, videos: dict[str, CameraVideo], port: int, loop: bool, checkpoint: str | None,
                  fast: bool = False) -> Any:
    """The service's settings: one camera per video, played at its rate (``fast``: as fast as it is
    scored, every frame), again and again when ``loop``."""
    from .service.settings import ServiceSettings

    cameras = [{"name": name, "source": v.path, "loop": loop, "realtime": not fast, "model": checkpoint,
                "purpose": f"xvad demo: sample footage, {SCENES.get(name, name)}"} for name, v in videos.items()]
    return ServiceSettings.model_validate({"data": out, "host": "127.0.0.1", "port": port,
                                           "disk_min_free_mb": 100, "cameras": cameras})


def loopback_socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (``port`` 0: a free port), handed to uvicorn as it is."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


class HttpThread:
    """The API app served by uvicorn in a thread of its own, on ``sock``."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        self.sock = sock
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="xvad-http",
                                       daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        end = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < end:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def on_signals(done: threading.Event) -> dict:
    """SIGINT (Ctrl-C) and SIGTERM set ``done`` (the demo then drains and reports), a second one stops
    at once; returns the handlers they had, to put back."""
    def handler(*_: Any) -> None:
        if done.is_set():
            raise KeyboardInterrupt
        done.set()

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in before:
        signal.signal(sig, handler)
    return before


def run(out: str = "xvad-demo", loops: int = 2, serve: bool = False, port: int = 0,
        checkpoint: str | None = None, fast: bool = False) -> dict:
    """The service on the sample footage (see the module's docstring); prints as it goes and returns
    ``{"out", "db", "alerts", "user", "password", "url", "seconds"}``."""
    from .service.api import create_app
    from .service.auth import create_user, issue_token
    from .service.runtime import Service
    from .service.store.database import Database

    t0 = time.time()
    model = load_model(checkpoint)
    threshold = float(model.extra.get("threshold", 0.5))
    card = model.extra.get("metrics", {})
    print(f"xvad demo: the review service on the sample footage, with the model {architecture(model.config)} "
          f"(classes {', '.join(model.classes)}; checkpoint {model.checkpoint_id}; threshold {threshold:.2f})")
    if card:
        print(f"  cross-validated on surv-fight: accuracy {card['accuracy']:.2f}, ROC-AUC {card['roc_auc']:.2f}; "
              "these cameras it has never seen (see MODEL_CARD.md)")
    out = prepare(out)
    folder = os.path.join(out, "cameras")
    os.makedirs(folder, exist_ok=True)
    videos = {name: camera_video(clips, os.path.join(folder, f"{name}.mp4"), loops)
              for name, clips in demo_cameras().items()}
    for name, v in videos.items():
        clips = ", ".join(f"{c.name} ({c.label})" for _, _, c in v.timeline[:len(demo_cameras()[name])])
        print(f"  camera {name}: {SCENES.get(name, name)}, {v.size[1]}x{v.size[0]} at {v.fps:.2f} fps: "
              f"{clips}" + (" again and again" if serve else f", {loops} time(s): {v.duration:.1f} s")
              + (", as fast as they are scored" if fast else ""))
    sock = loopback_socket(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = demo_settings(out, videos, sock.getsockname()[1], serve, checkpoint, fast)
    db = Database(settings.db)
    db.migrate()
    password = secrets.token_urlsafe(12)
    create_user(db, DEMO_USER, "reviewer", password)
    service = Service(settings, db, models=lambda key: model)      # every camera: the one model loaded above
    app = create_app(db, settings, service)
    console = any(getattr(r, "path", None) == "/login" for r in app.routes)
    http = HttpThread(app, sock)
    done = threading.Event()
    handlers = on_signals(done)
    alerts: list[dict] = []
    stopped = False
    try:
        http.start()
        service.start()
        print(f"\nservice: {url} (API{' and console' if console else ''}); demo account: "
              f"user {DEMO_USER}, password {password} (role reviewer)")
        if serve:
            token = issue_token(db, DEMO_USER)
            if console:
                print(f"  open {url}/ in a browser and log in as {DEMO_USER}")
            print(f"  the API: curl -H 'Authorization: Bearer {token}' {url}/api/alerts")
            print("  running until Ctrl-C")
        watch(service, db, videos, done, None if serve else max(v.duration for v in videos.values()) + 120)
        print("cameras stopped; finishing the alerts' clips and explanations"
              + (" (Ctrl-C again: stop at once)" if done.is_set() else "") + " ...", flush=True)
        service.stop(timeout=600)
        stopped = True
        alerts = sorted(db.alerts(limit=100_000)[0], key=lambda a: (a["camera"], a["id"]))
        print_summary(service, alerts, videos, out)
    finally:
        if not stopped:
            service.stop(timeout=30)
        http.stop()
        db.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    seconds = time.time() - t0
    data = os.path.relpath(out)
    print(f"\ndemo account: user {DEMO_USER}, password {password} (role reviewer)")
    print(f"to review these alerts in the console: xvad serve --data {data} --api-only --port 8000, then open "
          f"http://127.0.0.1:8000/ and log in as {DEMO_USER}")
    if not serve:
        print("  or run the demo live: xvad demo --serve (the cameras loop and the console stays open until Ctrl-C)")
    if not console:
        print(f"  (this build has no console yet: the same address serves the API, /api/alerts, with a token "
              f"from `xvad users token {DEMO_USER} --data {data}`)")
    print(f"finished in {seconds:.0f} s; everything is in {out}/")
    return {"out": out, "db": settings.db, "alerts": alerts, "user": DEMO_USER, "password": password, "url": url,
            "seconds": seconds}


def watch(service: Any, db: Any, videos: dict[str, CameraVideo], done: threading.Event,
          timeout: float | None) -> None:
    """Print each alert as it starts and ends, until every camera's source has ended (``timeout``
    seconds at most) or ``done`` is set (None: only then)."""
    end = None if timeout is None else time.monotonic() + timeout
    said: dict[int, str] = {}
    while True:
        for a in sorted(db.alerts(limit=1000)[0], key=lambda a: a["id"]):
            if said.get(a["id"]) == a["state"]:
                continue
            if a["id"] not in said:
                print(f"  {a['camera']}: alert {a['id']} ({a['class_name']}) starts at {a['start_time']:.1f} s, "
                      f"score {a['score']:.2f}", flush=True)
            if a["state"] != "open":
                print(f"  {a['camera']}: alert {a['id']} ends at {a['end_time']:.1f} s ({a['end_reason']}), "
                      f"peak {a['peak_score']:.2f}", flush=True)
            said[a["id"]] = a["state"]
        if done.is_set() or (end is not None and time.monotonic() > end):
            return
        if timeout is not None and all(cam.ended for cam in service.cameras.values()):
            return
        done.wait(0.5)


def footage(a: dict, videos: dict[str, CameraVideo]) -> str:
    """The clips an alert's windows saw, from its first window's first frame to its end (a looping
    camera's clock runs on over its loops: its times are taken modulo the video's duration)."""
    v = videos.get(a["camera"])
    if v is None or a["start_time"] is None:
        return ""
    first = a["start_time"] - (a["window"] - 1) / a["fps"]
    span = (a["end_time"] if a["end_time"] is not None else a["start_time"]) - first
    if span >= v.duration:
        return "all its clips"
    start = max(0.0, first) % v.duration
    seen = v.clips_between(start, start + span) + v.clips_between(0.0, start + span - v.duration)
    return ", ".join(dict.fromkeys(c.name for c in seen))


def report_path(a: dict, out: str) -> str:
    name = (a["files"] or {}).get("report")
    if not name or not a["media_dir"]:
        return "-"
    return os.path.relpath(os.path.join(out, "media", a["media_dir"], name))


def print_summary(service: Any, alerts: list[dict], videos: dict[str, CameraVideo], out: str) -> None:
    """Per camera, what it saw; then the table of alerts and where their decision reports are."""
    print()
    for cam in service.snapshot():
        n = sum(a["camera"] == cam["name"] for a in alerts)
        print(f"camera {cam['name']}: {cam['frames']} frames scored at {cam['fps']:g} fps, {cam['windows']} "
              f"windows, {cam['dropped']} dropped, {n} alert(s)")
    if not alerts:
        print("\nno alert was raised")
        return
    head = (f"{'camera':<7} {'alert':>5} {'start s':>8} {'end s':>7} {'peak':>5}  {'class':<8} {'footage':<22} "
            f"{'media':<9} {'explained':<10} report")
    print("\n" + head + "\n" + "-" * len(head))
    for a in alerts:
        end = "" if a["end_time"] is None else f"{a['end_time']:.1f}"
        print(f"{a['camera']:<7} {a['id']:>5} {a['start_time']:>8.1f} {end:>7} {a['peak_score']:>5.2f}  "
              f"{a['class_name']:<8} {footage(a, videos):<22} {a['media_state']:<9} "
              f"{a['explanation_state'] or '-':<10} {report_path(a, out)}")
    print(f"\ndecision reports: {os.path.relpath(os.path.join(out, 'media'))}/CAMERA/ALERT/report.html "
          "(one self-contained HTML file per alert, with its clip.mp4 beside it)")
    unfinished = [a["id"] for a in alerts if a["explanation_state"] in ("pending", "running")]
    if unfinished:
        print(f"still not explained when the demo stopped: alert(s) {', '.join(map(str, unfinished))}")


def run_synthetic(out: str = "xvad-demo", quick: bool = False) -> dict:
    """Train on synthetic clips, score fresh ones and the sample footage, print a table; returns the rows."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    if not os.path.isdir(out) or not os.listdir(out):      # a new folder: the demo's (the default one too)
        os.makedirs(out, exist_ok=True)
        mark(out)
    per_class, frames, size = (16, 8, 48) if quick else (60, 12, 64)
    print("xvad demo --synthetic: a SYNTHETIC task, trained here in a minute or two.")
    print(f"  Clips of {frames} frames at {size}x{size}: 'alert' clips contain a flickering object that starts")
    print("  to jump around erratically at a known place and time; 'normal' clips only drift smoothly.\n")
    data = make_dataset(os.path.join(out, "data"), per_class=per_class, frames=frames, size=size, seed=0)
    cfg = TrainConfig.preset("paper", backbone="tiny", weights=None, frames=frames, size=size, pooling="max",
                             hidden=64, epochs=8 if quick else 30, patience=6, lr=2e-3, finetune=True,
                             batch_size=8, precision="fp32", cache_dir=os.path.join(out, "cache"))
    metrics = train(data, os.path.join(out, "run"), cfg)
    s = metrics["summary"]
    print(f"trained in {time.time() - t0:.0f} s; validation accuracy {s['accuracy']:.2f}, "
          f"ROC-AUC {s['roc_auc']:.2f} ({metrics['n_used']} clips, group-wise hold-out)\n")

    model = load_model(os.path.join(out, "run", "model.pt"))
    fresh = os.path.join(out, "fresh")
    os.makedirs(fresh, exist_ok=True)
    rng = np.random.default_rng(1234)
    videos = []
    for i in range(6):
        clip = make_clip(rng, frames, size, anomaly=i % 2 == 1)
        path = os.path.join(fresh, f"fresh_{i}_{'alert' if clip.label else 'normal'}.mp4")
        write_video(path, clip.frames)
        videos.append((path, "alert" if clip.label else "normal"))
    videos += [(c.path, f"real {c.label} (no planted anomaly)") for c in demo_footage()]

    rows = [{**score_video(model, p), "truth": truth} for p, truth in videos]
    print(f"{'video':<34} {'truth':<34} {'p(alert)':>8}  predicted")
    for r in rows:
        print(f"{os.path.basename(r['video']):<34} {r['truth']:<34} {r['scores']['alert']:>8.3f}  {r['predicted']}")
    print(f"\nfinished in {time.time() - t0:.0f} s; outputs in {os.path.abspath(out)}/")
    return {"metrics": metrics, "rows": rows}
