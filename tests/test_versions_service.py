"""A running service and its cameras' model versions, on real footage over loopback: one backbone call per
batch for cameras whose models differ only in their heads (counted with wrappers), a camera whose backbone
differs getting its own; `xvad serve` swapping a camera's model when another process adopts a version or
rolls back, an open alert going on through the swap, every alert naming the version that raised it.

The models are the shipped one with its heads set by hand: every weight 0 and the fight bias ``b``, so
every window scores exactly sigmoid(b) whatever the footage, and which model scored a window is plain
from its score.
"""
from __future__ import annotations

import hashlib
import math
import os
import signal
import time

import pytest
import test_service
import torch
from test_service import FIGHT, SPEED, Serve, camera, wait_for, xvad_cli

from cameras import LiveCamera

stream = test_service.stream          # the fixture: fi003 then nofi002 as one MPEG-TS stream

pytestmark = pytest.mark.skipif(not os.path.exists(FIGHT), reason="surv-fight footage (fi003, nofi002) not found")


def sigmoid(b: float) -> float:
    return 1.0 / (1.0 + math.exp(-b))


def fixed_head(path, bias: float, nudge_backbone: bool = False) -> str:
    """The shipped model with every head weight 0 and the fight bias ``bias`` (p(fight) = sigmoid(bias)
    for every window); ``nudge_backbone`` also changes one backbone weight (saved with the backbone)."""
    from xvad.checkpoint import load_model, save_model

    model = load_model()
    with torch.no_grad():
        for head in model.head:                      # one head per stream (motion, flow)
            head[-1].weight.zero_()
            head[-1].bias.copy_(torch.tensor([0.0, bias]))
        if nudge_backbone:
            next(model.backbone.parameters()).view(-1)[0] += 0.01
    return save_model(model, str(path), extra={"threshold": 0.5}, include_backbone=nudge_backbone)


def sha12(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


# -- in this process: which backbone runs, how often ----------------------------------------------------
def test_one_backbone_call_per_batch_for_heads_that_share_it(stream, tmp_path):
    """gate and hall run different heads on the same backbone: each round of the inference thread calls
    one backbone once for both cameras' frames (hall's model's own backbone never runs) and each head
    once; hall's adopted version with another backbone gets a backbone call of its own."""
    from xvad.service import versions
    from xvad.service.runtime import Service
    from xvad.service.settings import ServiceSettings
    from xvad.service.store import Database

    fight, calm = fixed_head(tmp_path / "fight.pt", 6.0), fixed_head(tmp_path / "calm.pt", -6.0)
    own = fixed_head(tmp_path / "own.pt", 3.0, nudge_backbone=True)
    cam = LiveCamera(stream[0], stream[1], speed=SPEED, loop=True)
    cam.start()
    settings = ServiceSettings.model_validate({"data": str(tmp_path / "data"), "disk_min_free_mb": 0, "cameras": [
        camera("gate", cam.url, model=fight), camera("hall", cam.url, model=calm)]})
    db = Database(settings.db)
    db.migrate()
    service = Service(settings, db)
    shelf = service.shelf
    assert len(shelf.backbones) == 1 and len(shelf.heads) == 2
    models = {name: service.cameras[name].model for name in ("gate", "hall")}
    calls: dict[str, list[int]] = {"gate": [], "hall": []}        # batch sizes of each model's backbone calls
    heads: dict[str, int] = {"gate": 0, "hall": 0}

    def counting(name: str) -> None:
        m = models[name]
        frame_features, classify = m.frame_features, m.classify

        def ff(frames):
            calls[name].append(frames.shape[0])
            return frame_features(frames)

        def cl(feats):
            heads[name] += 1
            return classify(feats)

        m.frame_features, m.classify = ff, cl

    for name in models:
        counting(name)
    rounds: list[tuple[int, int, dict]] = []      # (gate frames, hall frames, backbone calls by key) per round
    by_key: dict[str, int] = {}
    real_features, real_step = shelf.features, service.step

    def features(key, tensors):
        by_key[key] = by_key.get(key, 0) + 1
        return real_features(key, tensors)

    last = [time.monotonic()]

    def step():
        # wait (up to 0.5 s) until each camera has a frame queued, so that rounds mix both cameras' frames:
        # the inference thread is quick, and two cameras' frames arriving out of phase would rarely meet
        waiting = not all(c.reader.queue.peek_is_frame() for c in service.cameras.values())
        if waiting and time.monotonic() - last[0] < 0.5:
            return False
        last[0] = time.monotonic()
        before = {n: c.stats.frames for n, c in service.cameras.items()}
        keys = dict(by_key)
        busy = real_step()
        rounds.append((service.cameras["gate"].stats.frames - before["gate"],
                       service.cameras["hall"].stats.frames - before["hall"],
                       {k: by_key[k] - keys.get(k, 0) for k in by_key if by_key[k] != keys.get(k, 0)}))
        return busy

    warmed: list[int] = []
    real_warm_up = service._warm_up

    def warm_up():       # before any camera opens: the backbone at each batch shape, once
        real_warm_up()
        warmed.append(sum(calls["gate"]))

    shelf.features, service.step, service._warm_up = features, step, warm_up
    try:
        service.start()
        both = lambda: sum(1 for g, h, _ in rounds if g and h) >= 20       # noqa: E731
        wait_for("20 rounds with frames of both cameras", both, 180)
        with service._lock:
            frames = sum(c.stats.frames for c in service.cameras.values())
            assert warmed and warmed[0] > 0 and calls["hall"] == []
            assert sum(calls["gate"]) - warmed[0] == frames       # one backbone for both cameras
            assert all(len(k) == 1 and sum(k.values()) == 1 for g, h, k in rounds if g or h)
            assert all(not k for g, h, k in rounds if not (g or h))
            assert heads["gate"] > 0 and heads["hall"] > 0
            assert service.cameras["gate"].stats.last_score == pytest.approx(sigmoid(6.0), abs=1e-5)
            assert service.cameras["hall"].stats.last_score == pytest.approx(sigmoid(-6.0), abs=1e-5)

        assert versions.adopt(db, settings.data, "hall", own, actor="test", metrics={}) == 1
        wait_for("hall on its v1", lambda: service.cameras["hall"].model_version == "v1", 120)
        hall = service.cameras["hall"]
        assert len(shelf.backbones) == 2 and service.cameras["gate"].model is models["gate"]
        start = len(rounds)
        wait_for("hall scored by v1", lambda: hall.stats.windows > 2 and sum(
            1 for g, h, _ in rounds[start:] if g and h) >= 5, 180)
        with service._lock:
            mixed = [k for g, h, k in rounds[start:] if g and h]
            assert mixed and all(len(k) == 2 and set(k.values()) == {1} for k in mixed)   # one call per backbone
            assert hall.stats.last_score == pytest.approx(sigmoid(3.0), abs=1e-5)
            assert service.cameras["gate"].stats.last_score == pytest.approx(sigmoid(6.0), abs=1e-5)
    finally:
        service.stop()
        db.close()
        cam.kill()


# -- `xvad serve` following versions adopted and rolled back from another process -------------------------
def test_serve_swaps_a_cameras_model_when_a_version_is_adopted_elsewhere(stream, tmp_path):
    from xvad.service import versions
    from xvad.service.store import Database

    configured = fixed_head(tmp_path / "configured.pt", 6.0)
    v1_file, v2_file = fixed_head(tmp_path / "sharper.pt", 7.0), fixed_head(tmp_path / "calm.pt", -6.0)
    cam = LiveCamera(stream[0], stream[1], speed=SPEED, loop=True)
    cam.start()
    s = Serve(str(tmp_path), [camera("gate", cam.url, model=configured)])
    db = None
    try:
        s.start()
        db = Database(f"sqlite:///{os.path.join(s.data, 'xvad.db')}")

        def live() -> dict:
            return {c["name"]: c for c in s.get("/api/cameras").json()}["gate"]

        first = wait_for("an alert of the configured model", lambda: s.alerts(), 180, s)[0]
        assert first["state"] == "open" and first["model_version"] is None
        assert first["checkpoint_id"] == sha12(configured)
        assert first["score"] == pytest.approx(sigmoid(6.0), abs=1e-5)
        frames = wait_for("frames counted", lambda: (live()["live"] or {}).get("frames", 0) > 8 and
                          live()["live"]["frames"], 60, s)

        # another process adopts v1: the open alert goes on, scored by v1 from the swap on
        assert versions.adopt(db, s.data, "gate", v1_file, actor="adapt", metrics={"accuracy": 0.9}) == 1
        wait_for("gate running v1", lambda: (live()["live"] or {}).get("model_version") == "v1", 60, s)
        row = live()
        assert row["model_version"] == "v1" and row["live"]["checkpoint_id"] == sha12(v1_file)
        assert row["live"]["frames"] >= frames and row["live"]["state"] == "running"   # the same run, its reader
        raised = wait_for("the open alert's peak from v1", lambda: [a for a in s.alerts() if a["peak_score"] ==
                                                                    pytest.approx(sigmoid(7.0), abs=1e-5)], 60, s)
        assert [a["id"] for a in raised] == [first["id"]] and raised[0]["state"] == "open"
        assert len(s.alerts()) == 1

        # v2 says "no fight" everywhere: the alert ends on its scores
        assert versions.adopt(db, s.data, "gate", v2_file, actor="adapt", metrics={"accuracy": 0.95}) == 2
        ended = wait_for("the alert ended by v2's scores", lambda: [a for a in s.alerts() if a["state"] == "closed"],
                         60, s)
        assert ended[0]["id"] == first["id"] and ended[0]["end_reason"] == "scores"
        assert live()["live"]["model_version"] == "v2"

        # one command goes back to v1 (the version active when v2 came): its alert names it
        out = xvad_cli("models", "rollback", "gate", "--config", s.config, cwd=s.folder)
        assert out.strip() == "camera gate now runs v1"
        second = wait_for("an alert raised by v1", lambda: [a for a in s.alerts() if a["id"] != first["id"]], 60, s)
        assert len(second) == 1 and second[0]["model_version"] == "v1"
        assert second[0]["checkpoint_id"] == sha12(v1_file)
        assert second[0]["score"] == pytest.approx(sigmoid(7.0), abs=1e-5)

        entries = s.get("/api/audit", action="alert.raised").json()["entries"]
        assert {e["target"]: e["details"]["model_version"] for e in entries} == {
            f"alert:{first['id']}": None, f"alert:{second[0]['id']}": "v1"}
        listing = xvad_cli("models", "list", "gate", "--config", s.config, cwd=s.folder).splitlines()
        assert listing[0] == "camera gate runs v1; 2 adopted version(s)"
        assert "audit log intact" in xvad_cli("audit", "verify", "--config", s.config, cwd=s.folder)
        assert s.stop() == 0
    finally:
        s.stop(signal.SIGKILL)
        if db is not None:
            db.close()
        cam.kill()
