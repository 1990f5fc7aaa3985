"""The default demo and the shipped model: real outputs from a fresh folder."""
import json
import os
from html import unescape

import av
import numpy as np

import xvad
from xvad.demo import run
from xvad.synthetic import make_clip, write_video


def test_shipped_model_loads_without_a_path():
    m = xvad.load_model()
    assert m.classes == ["noFight", "fight"] and m.config["backbone"] == "efficientnet_lite0"
    assert m.extra["metrics"]["roc_auc"] > 0.6  # the cross-validated figure recorded at training time
    assert m.config["backbone_in_checkpoint"] is False  # backbone weights come from their own package


def test_demo_writes_report_videos_and_events(tmp_path):
    video = str(tmp_path / "clip.mp4")
    write_video(video, make_clip(np.random.default_rng(0), frames=40, size=96).frames, fps=8)
    out = tmp_path / "demo"
    r = run(str(out), videos=[video])
    assert (out / "report.html").is_file() and (out / "annotated_clip.mp4").is_file()
    assert (out / "explanation" / "contact_sheet.png").is_file()
    lines = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "start" and lines[-1]["type"] == "stop"
    assert r["rows"][0]["windows"] == (40 - 16) // 2 + 1
    assert r["rows"][0]["alerts"] == sum(e["type"] == "alert_start" for e in lines)
    with av.open(str(out / "annotated_clip.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 40               # every frame of the clip, annotated
    assert os.path.getsize(out / "report.html") > 10_000
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Each stream's own probability of fight in the peak window: motion images" in unescape(html)   # two streams
