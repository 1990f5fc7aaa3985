"""Tests for xvad.stream: ring-buffer scores equal the naive window re-run, k-of-n hysteresis, the
events file, dropping on live sources, alert explanations, the annotated video and bad sources.

Models are tiny CRNNs (random weights, sharpened so scores spread); videos are synthetic clips.
Network sources and killing a run are in test_stream_live.py.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time

import av
import numpy as np
import pytest
import torch

from xvad.models import CRNN
from xvad.stream import AlertPolicy, Detector, StreamError, alert_spans, parse_alert, window_scores
from xvad.stream.cli import add_detect, run_detect
from xvad.stream.cli import main as detect_main
from xvad.stream.frames import Frame, FrameQueue
from xvad.stream.source import Sampler
from xvad.synthetic import make_clip, write_video
from xvad.video import VideoError, model_images, parse_source, preprocess, read_frame_pairs, read_frames, shrink_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int = 0, classes: int = 2, frames: int = 8, fps: float | None = None,
               **options) -> CRNN:
    """A tiny CRNN whose GRU and head weights are scaled up so window scores vary (not all ~0.5)."""
    torch.manual_seed(seed)
    model = CRNN("tiny", num_classes=classes, size=32, frames=frames, fps=fps, hidden=32, **options).eval()
    with torch.no_grad():
        for name, p in [(n, p) for part in model.temporal_modules() for n, p in part.named_parameters()]:
            p.mul_(40.0 if "weight_ih" in name or model.gru is None else 4.0)
    return model.set_precision("fp32")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    out = {}
    clip = make_clip(1, frames=72, size=40)
    out["16fps"] = str(root / "clip16.mp4")
    write_video(out["16fps"], clip.frames, fps=16)          # sampled at 8: every other frame
    out["8fps"] = str(root / "clip8.mp4")
    write_video(out["8fps"], make_clip(2, frames=96, size=40).frames, fps=8)
    # dark and bright stretches, for a model whose score follows brightness
    frames = np.concatenate([np.full((16, 32, 32, 3), v, np.uint8) for v in (20, 230, 20, 230, 20)])
    out["blink"] = str(root / "blink.mp4")
    write_video(out["blink"], frames, fps=8)
    out["root"] = str(root)
    return out


def naive_scores(model, path, fps, window, stride):
    """The reference: every window's frames through the whole model, window by window."""
    return [(end, t, float(p[1])) for end, t, p in naive_probs(model, path, fps, window, stride)]


def naive_probs(model, path, fps, window, stride):
    """(last frame, its time, class probabilities) of every window, by the naive re-run."""
    frames, partners, times = read_frame_pairs(path, fps=fps)
    cfg = model.config
    if cfg.get("shrink") == "first":   # shrunk to the input first (tests/test_video.py checks it by hand)
        frames, partners = shrink_images(frames, cfg), shrink_images(partners, cfg)
    if cfg["input"] == "motion":   # by hand: 4 |frame - the decoded frame after it|, clipped
        frames = np.clip(4 * np.abs(frames.astype(int) - partners.astype(int)), 0, 255).astype(np.uint8)
    elif cfg["input"] != "rgb":    # flow streams: the images of the whole file's pairs at once
        frames = model_images(frames, partners, cfg)
    x = preprocess(frames, cfg["size"], cfg["mean"], cfg["std"], cfg["crop"])
    out = []
    with torch.no_grad():
        for end in range(window - 1, len(x), stride):
            p = model(x[None, end - window + 1: end + 1]).softmax(-1)[0]
            out.append((end, float(times[end]), p.numpy()))
    return out


# -- equivalence -------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride,batch", [(1, 8), (2, 3), (3, 5)])
def test_ring_buffer_scores_equal_naive_rerun(videos, stride, batch):
    model = tiny_model()
    results = list(Detector(model, fps=8, stride=stride, batch=batch).run(videos["16fps"]))
    ref = naive_scores(model, videos["16fps"], 8, 8, stride)
    assert [r.frame_index for r in results] == [e for e, _, _ in ref]
    assert np.allclose([r.time for r in results], [t for _, t, _ in ref])
    got, want = np.array([r.score for r in results]), np.array([s for _, _, s in ref])
    assert want.std() > 0.005                        # the check means something: scores do vary
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    assert all(r.start_frame == r.frame_index - 7 for r in results)


@pytest.mark.parametrize("options", [dict(input="motion"), dict(input="motion", temporal="pool", pooling="max"),
                                     dict(input="motion+flow", temporal="pool", pooling="max")])
def test_motion_and_pooled_models_score_like_the_naive_rerun(videos, options):
    model = tiny_model(**options)
    results = list(Detector(model, fps=8, stride=2, batch=5).run(videos["16fps"]))
    ref = naive_scores(model, videos["16fps"], 8, 8, 2)
    assert [r.frame_index for r in results] == [e for e, _, _ in ref]
    got, want = np.array([r.score for r in results]), np.array([s for _, _, s in ref])
    assert want.std() > 0.005
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_each_frame_goes_through_the_backbone_once(videos):
    model = tiny_model()
    seen = []
    original = model.frame_features

    def counting(x):
        seen.append(len(x))
        return original(x)

    model.frame_features = counting
    det = Detector(model, fps=8, stride=1, batch=8)
    results = list(det.run(videos["8fps"]))
    assert sum(seen) == det.summary()["frames"] == 96
    assert max(seen) <= 8
    assert len(results) == 96 - 8 + 1


def test_defaults_come_from_the_model(videos):
    model = tiny_model(frames=6, fps=4)
    det = Detector(model)
    assert (det.fps, det.window, det.stride) == (4.0, 6, 2)
    results = list(det.run(videos["8fps"]))   # 12 s at 4 fps: 48 frames
    assert det.summary()["frames"] == 48
    assert results[0].frame_index == 5 and results[1].frame_index == 7


def test_multiclass_reports_the_top_non_normal_class():
    logits = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 1.0], [1.0, 2.0]][:2])
    score, cls = window_scores(logits)
    assert cls.tolist() == [2, 1]
    p = logits.softmax(-1)
    assert torch.allclose(score, torch.stack([p[0, 2], p[1, 1]]))
    s2, c2 = window_scores(torch.tensor([[0.0, 1.0]]))
    assert c2.tolist() == [1] and abs(s2.item() - torch.tensor([0.0, 1.0]).softmax(-1)[1].item()) < 1e-6


def test_multiclass_detector_names_classes(videos):
    seen = set()
    for seed in (0, 5):                                             # models favouring class 1, class 2
        model = tiny_model(seed=seed, classes=3)
        results = list(Detector(model, fps=8, stride=4).run(videos["8fps"]))
        ref = naive_probs(model, videos["8fps"], 8, 8, 4)
        assert [r.frame_index for r in results] == [e for e, _, _ in ref]
        top = [1 + int(np.argmax(p[1:])) for _, _, p in ref]       # the likeliest class other than normal
        assert [r.class_index for r in results] == top
        assert [r.class_name for r in results] == [f"class_{c}" for c in top]
        np.testing.assert_allclose([r.score for r in results], [p[c] for (_, _, p), c in zip(ref, top)], atol=1e-5)
        seen.update(top)
    assert seen == {1, 2}


# -- alert policy ------------------------------------------------------------------------------------

def test_parse_alert():
    assert parse_alert("3/5") == (3, 5) and parse_alert("1") == (1, 1) and parse_alert((2, 4)) == (2, 4)
    for bad in ("5/3", "0/2", "a/b", "3/", ""):
        with pytest.raises(StreamError):
            parse_alert(bad)


def test_hysteresis_k_of_n():
    hi, lo = 0.9, 0.1
    # 3 of 5: starts at the third pass, holds through single dips, ends when passes fall below 3
    scores = [lo, hi, lo, hi, lo, hi, hi, lo, hi, lo, lo, lo, lo, hi, hi, hi]
    #         0   1   2   3   4   5   6   7   8   9   10  11  12  13  14  15
    assert alert_spans(scores, 0.5, "3/5") == [(5, 10), (15, None)]
    assert alert_spans([hi, lo, hi, lo], 0.5, "1/1") == [(0, 1), (2, 3)]
    assert alert_spans([hi] * 3 + [lo] * 4, 0.5, "2/2") == [(1, 3)]
    assert alert_spans([lo] * 10, 0.5, "1/3") == []
    assert alert_spans([0.5, 0.5], 0.5, "2/2") == [(1, None)]      # passing means score >= threshold
    policy = AlertPolicy(0.5, 2, 3)
    assert [policy.update(s) for s in (hi, hi, lo, lo, hi)] == [None, "start", None, "end", None]


# -- events ------------------------------------------------------------------------------------------

def read_events(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def check_alert_pairs(events):
    """Alert starts and ends alternate, ids match, each alert ends once."""
    open_id = None
    for e in events:
        if e["type"] == "alert_start":
            assert open_id is None
            open_id = e["alert"]
        elif e["type"] == "alert_end":
            assert e["alert"] == open_id
            open_id = None
    return open_id


def brightness_model(video: str, threshold_side: float = 1.0) -> CRNN:
    """A tiny CRNN whose alert score is ~1 on bright frames and ~0 on dark ones (head replaced by a
    differentiable function of the mean feature, calibrated on this video)."""
    model = tiny_model(3)
    frames, _ = read_frames(video)
    cfg = model.config
    x = preprocess(frames, cfg["size"], cfg["mean"], cfg["std"])
    with torch.no_grad():
        m = model.frame_features(x).mean(1)
    dark, bright = m[frames.reshape(len(frames), -1).mean(1) < 128], m[frames.reshape(len(frames), -1).mean(1) >= 128]
    mid, sign = float((dark.mean() + bright.mean()) / 2), float(torch.sign(bright.mean() - dark.mean()))
    gain = 20.0 / max(float((bright.mean() - dark.mean()).abs()), 1e-6)

    def classify(feats):
        z = (feats.float().mean(dim=(1, 2)) - mid) * sign * gain
        return torch.stack([torch.zeros_like(z), z], dim=1)

    model.classify = classify
    return model


def test_events_file_alerts_and_windows(videos, tmp_path):
    model = brightness_model(videos["blink"])
    events = tmp_path / "events.jsonl"
    det = Detector(model, fps=8, window=4, stride=1, alert="2/3", events=events, log_windows=True)
    results = list(det.run(videos["blink"]))
    ev = read_events(events)
    types = [e["type"] for e in ev]
    assert types[0] == "start" and types[-1] == "stop"
    assert ev[-1]["reason"] == "end" and ev[-1]["frames"] == 80
    assert types.count("window") == len(results)
    starts = [e for e in ev if e["type"] == "alert_start"]
    ends = [e for e in ev if e["type"] == "alert_end"]
    assert len(starts) == 2 and len(ends) == 2 and check_alert_pairs(ev) is None
    # bright stretches are frames 16-31 and 48-63: each alert starts a window or two in
    assert 16 <= starts[0]["frame"] <= 20 and 48 <= starts[1]["frame"] <= 52
    assert 32 <= ends[0]["frame"] <= 36 and 64 <= ends[1]["frame"] <= 68
    for e in starts:
        assert {"time", "frame", "score", "class", "checkpoint", "wall", "window_frames"} <= set(e)
        assert e["class"] == "alert" and e["score"] >= 0.5
        assert abs(e["time"] - e["frame"] / 8) < 1e-6
    assert ends[0]["reason"] == "scores" and ends[0]["started"] == starts[0]["time"]
    assert [r.event for r in results].count("start") == 2
    assert det.summary()["alerts"] == 2


def test_events_are_flushed_while_running(videos, tmp_path):
    model = tiny_model()
    events = tmp_path / "live.jsonl"
    det = Detector(model, fps=8, stride=1, threshold=0.0, alert="1/1", events=events)
    seen = None
    for r in det.run(videos["8fps"]):
        if r.event == "start":
            seen = read_events(events)               # read while the detector is mid-run
            break
    assert seen is not None and [e["type"] for e in seen] == ["start", "alert_start"]
    ev = read_events(events)                         # breaking out closed the run properly
    assert [e["type"] for e in ev] == ["start", "alert_start", "alert_end", "stop"]
    assert ev[-2]["reason"] == "closed" and ev[-1]["reason"] == "closed"


def test_stop_from_another_thread(videos, tmp_path):
    det = Detector(tiny_model(), fps=8, stride=1, events=tmp_path / "e.jsonl", realtime=True, live=False)
    threading.Timer(1.8, det.stop).start()
    t = time.monotonic()
    n = len(list(det.run(videos["8fps"])))           # 12 s of video, paced
    assert time.monotonic() - t < 6 and 0 < n < 89
    ev = read_events(tmp_path / "e.jsonl")
    assert ev[-1]["type"] == "stop" and ev[-1]["reason"] == "stopped"


# -- live dropping -----------------------------------------------------------------------------------

def test_live_source_drops_when_behind_and_file_never_does(videos):
    model = tiny_model()
    live = Detector(model, fps=8, stride=1, batch=2, live=True, queue_size=2)
    n = 0
    for _ in live.run(videos["8fps"]):
        n += 1
        time.sleep(0.03)                             # a slow consumer
    s = live.summary()
    assert s["dropped"] > 0
    assert s["frames"] + s["dropped"] == 96

    file = Detector(model, fps=8, stride=1, batch=2, queue_size=2)
    for _ in file.run(videos["8fps"]):
        time.sleep(0.005)
    s = file.summary()
    assert s["dropped"] == 0 and s["frames"] == 96 and s["windows"] == 89


def test_frame_queue_drops_oldest_frames_but_keeps_markers():
    q = FrameQueue(2)
    stop = threading.Event()
    f = [Frame(i, i / 8, None, None, 0.0) for i in range(4)]
    assert q.put(f[0], True, stop) == 0 and q.put("marker", True, stop) == 0 and q.put(f[1], True, stop) == 0
    assert q.put(f[2], True, stop) == 1            # f[0] goes, the marker stays
    assert q.put(f[3], True, stop) == 1
    assert [q.get_nowait() for _ in range(3)] == ["marker", f[2], f[3]]
    assert q.get(timeout=0.01) is None


def test_sampler_picks_nearest_frame():
    s = Sampler(4.0)
    picked = [p for t in np.arange(0, 2, 0.1) for p in s.push(round(t, 1), round(t, 1))]
    # ticks 0, .25, .5, ...; frames every .1 s: nearest, ties to the earlier frame
    assert [p[0] for p in picked] == [0.0, 0.2, 0.5, 0.7, 1.0, 1.2, 1.5, 1.7]
    assert Sampler(None).push("x", 3.0) == [("x", 3.0)]


# -- explanations and the annotated video -------------------------------------------------------------

def test_explain_alerts_in_background(videos, tmp_path):
    model = brightness_model(videos["blink"])
    events, folder, out = tmp_path / "ev.jsonl", tmp_path / "alerts", tmp_path / "annotated.mp4"
    det = Detector(model, fps=8, window=4, stride=1, alert="2/3", events=events, explain_dir=folder, out=out)
    t = time.perf_counter()
    results = list(det.run(videos["blink"]))
    assert time.perf_counter() - t < 30
    assert [r.event for r in results].count("start") == 2
    assert not det._explainer._thread.is_alive()    # worker joined at the end
    ev = read_events(events)
    expl = [e for e in ev if e["type"] == "explanation"]
    assert len(expl) == 2 and all("error" not in e for e in expl), expl
    for e in expl:
        assert os.path.isdir(e["dir"])
        for key in ("overlay_gradcam", "contact_sheet", "json"):
            assert os.path.isfile(e["files"][key])
        assert e["frames"][1] - e["frames"][0] == 3
    # the explanation line comes after its alert's start line (it never delays it)
    order = [(e["type"], e.get("alert")) for e in ev]
    assert order.index(("alert_start", 1)) < order.index(("explanation", 1))
    assert sorted(os.listdir(folder)) == ["alert_0001", "alert_0002"]
    s = det.summary()
    assert s["explained"] == 2 and s["out"] == str(out)
    assert decoded_frames(out) == 80


def test_explanation_queue_full_skips_without_waiting(videos, tmp_path):
    from xvad.stream.events import EventLog
    from xvad.stream.explainer import ExplainWorker, Job

    gate = threading.Event()
    log = EventLog(tmp_path / "ev.jsonl")
    worker = ExplainWorker(tiny_model(), tmp_path / "x", log, 8.0, "test", maxsize=1)
    worker._explain = lambda job: gate.wait(5)      # a stuck worker
    job = Job(1, np.zeros((2, 8, 8, 3), np.uint8), torch.zeros(2, 3, 32, 32), [0.0, 0.1], [0, 1], 1, 0.9, "alert")
    t = time.perf_counter()
    results = [worker.submit(job) for _ in range(4)]
    assert time.perf_counter() - t < 0.5
    assert results.count(False) >= 2
    gate.set()
    worker.close(timeout=5)
    log.close()
    assert any("skipped" in e for e in read_events(tmp_path / "ev.jsonl"))


def decoded_frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_annotated_video_plays_and_marks_alerts(videos, tmp_path):
    model = brightness_model(videos["blink"])
    out = tmp_path / "a.mp4"
    Detector(model, fps=8, window=4, stride=1, alert="2/3", out=out).process(videos["blink"])
    assert not os.path.exists(str(out) + ".part")
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 80
    h, w = frames[0].shape[:2]
    assert h % 2 == 0 and w >= 240
    # the header is red during an alert (frames 20-31) and dark before (frames 0-15)
    def red(img):
        return img[:6, w // 2: w // 2 + 20].reshape(-1, 3).mean(0)

    assert red(frames[26])[0] > 150 and red(frames[26])[1] < 90
    assert red(frames[8])[0] < 60


# -- corrupt data and bad sources ----------------------------------------------------------------------

def test_corrupt_packets_are_skipped_and_counted(tmp_path):
    """Every tenth packet of an MJPEG clip replaced by junk: those fail to decode, the rest is used."""
    clip = make_clip(0, frames=80, size=48)
    clean = io.BytesIO()
    with av.open(clean, "w", format="avi") as out:
        s = out.add_stream("mjpeg", rate=8)
        s.width = s.height = 48
        s.pix_fmt = "yuvj420p"
        for f in clip.frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())
    clean.seek(0)
    path = tmp_path / "damaged.avi"
    rng = np.random.default_rng(0)
    with av.open(clean) as src, av.open(str(path), "w", format="avi") as dst:
        ist = src.streams.video[0]
        ost = dst.add_stream_from_template(ist)
        for i, packet in enumerate(p for p in src.demux(ist) if p.size):
            if i % 10 == 5:
                junk = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
                packet = junk
            packet.stream = ost
            dst.mux(packet)
    det = Detector(tiny_model(), fps=8, stride=4)
    s = det.process(str(path))
    assert s["corrupt"] == 8 and s["decoded"] == 72 and s["end"] == "end"
    assert s["frames"] == 80          # the nearest good frame stands in for each lost one


def one_line_error(source, tmp_path, **kw):
    with pytest.raises(VideoError) as info:
        Detector(tiny_model(), events=tmp_path / "e.jsonl", out=tmp_path / "o.mp4", **kw).run(source)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 300
    assert not os.path.exists(tmp_path / "o.mp4") and not os.path.exists(tmp_path / "e.jsonl")
    return msg


def test_bad_sources_give_one_line_errors(tmp_path):
    assert "no such file" in one_line_error(str(tmp_path / "missing.mp4"), tmp_path)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    one_line_error(str(garbage), tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    one_line_error(str(text), tmp_path)
    import socket
    with socket.socket() as s:                       # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    msg = one_line_error(f"http://127.0.0.1:{port}/live.ts", tmp_path, timeout=3)
    assert time.monotonic() - t < 10 and "127.0.0.1" in msg
    assert "no such camera" in one_line_error("/dev/video97", tmp_path)


def test_bad_options_are_stream_errors():
    model = tiny_model()
    for kw in ({"stride": 0}, {"threshold": 1.5}, {"alert": "4/2"}, {"fps": -1}, {"out": "x.avi"},
               {"precision": "fp8"}):
        with pytest.raises(StreamError):
            Detector(model, **kw)


def test_parse_source():
    assert parse_source("0").format == "v4l2" and parse_source("0").url == "/dev/video0"
    assert parse_source("/dev/video2").kind == "webcam"
    assert parse_source("rtsp://127.0.0.1/cam").options["rtsp_transport"] == "tcp"
    assert parse_source("udp://127.0.0.1:5000").live
    assert not parse_source("clip.mp4").live
    with pytest.raises(VideoError):
        parse_source("gopher://x")


# -- command line ---------------------------------------------------------------------------------------

def detect_args(argv):
    parser = argparse.ArgumentParser(prog="xvad")
    add_detect(parser.add_subparsers(dest="command"))
    return parser.parse_args(["detect", *argv])


def test_cli_run(videos, tmp_path, capsys):
    from xvad.checkpoint import save_model

    ckpt = tmp_path / "tiny.pt"
    save_model(tiny_model(fps=8), str(ckpt))
    events, out = tmp_path / "ev.jsonl", tmp_path / "out.mp4"
    args = detect_args([videos["8fps"], "--checkpoint", str(ckpt), "--threshold", "0", "--alert", "1/1",
                        "--events", str(events), "--out", str(out), "--stride", "4", "--log-windows"])
    assert args.reconnect == (0.5, 10.0) and args.give_up_after == 300
    assert run_detect(args) == 0
    text = capsys.readouterr().out
    assert "alert 1 started" in text and "96 frames" in text
    ev = read_events(events)
    assert ev[0]["checkpoint"] and len(ev[0]["checkpoint"]) == 12
    assert {e["type"] for e in ev} == {"start", "alert_start", "window", "alert_end", "stop"}
    assert decoded_frames(out) == 96
    a = detect_args(["x", "--reconnect", "off", "--give-up-after", "inf"])
    assert a.reconnect is None and a.give_up_after == float("inf")


def test_cli_errors_are_one_line(tmp_path, capsys):
    from xvad.checkpoint import save_model

    ckpt = tmp_path / "tiny.pt"
    save_model(tiny_model(), str(ckpt))
    assert detect_main([str(tmp_path / "nope.mp4"), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xvad: error:") and "no such file" in err and "\n" not in err
    assert detect_main([str(tmp_path / "nope.mp4"), "--checkpoint", str(ckpt), "--alert", "9/3"]) == 2
    assert "9/3" in capsys.readouterr().err


def test_window_results_match_the_events_file_and_a_hand_count(videos, tmp_path):
    """Each WindowResult against a hand computation (window bounds from window and stride, times at the
    file's 8 fps, scores from the naive re-run, the alert state by counting passes k of n) and against
    the events file the same run wrote."""
    model = brightness_model(videos["blink"])
    window, stride, k, n = 4, 2, 2, 3
    events = tmp_path / "events.jsonl"
    det = Detector(model, fps=8, window=window, stride=stride, alert=f"{k}/{n}", events=events, log_windows=True)
    results = list(det.run(videos["blink"]))
    ends = list(range(window - 1, 80, stride))
    assert [r.frame_index for r in results] == ends
    assert [r.start_frame for r in results] == [e - window + 1 for e in ends]
    np.testing.assert_allclose([r.time for r in results], np.array(ends) / 8, atol=1e-9)
    np.testing.assert_allclose([r.start_time for r in results], (np.array(ends) - window + 1) / 8, atol=1e-9)
    assert all(r.latency >= 0 for r in results)
    ref = naive_scores(model, videos["blink"], 8, window, stride)
    np.testing.assert_allclose([r.score for r in results], [s for _, _, s in ref], atol=1e-5)
    passes = [r.score >= 0.5 for r in results]
    on = [sum(passes[max(0, i - n + 1): i + 1]) >= k for i in range(len(results))]
    assert [r.alert_on for r in results] == on
    was = [False] + on[:-1]
    assert [r.event for r in results] == [
        "start" if now and not before else "end" if before and not now else None for now, before in zip(on, was)]
    ids, alert = [], 0
    for now, before in zip(on, was):
        alert += now and not before
        ids.append(alert if now or before else None)
    assert [r.alert_id for r in results] == ids and alert == 2      # one alert per bright stretch

    ev = read_events(events)
    lines = [e for e in ev if e["type"] == "window"]
    assert len(lines) == len(results)
    for r, e in zip(results, lines):
        assert (e["frame"], e["start_frame"], e["class"], e["alert"]) == (r.frame_index, r.start_frame,
                                                                          r.class_name, r.alert_on)
        assert e["time"] == pytest.approx(r.time) and e["start_time"] == pytest.approx(r.start_time)
        assert e["score"] == pytest.approx(r.score, abs=1e-6) and e["latency"] == pytest.approx(r.latency, abs=1e-4)
    started = [r for r in results if r.event == "start"]
    ended = [r for r in results if r.event == "end"]
    assert len(ended) == len(started) == 2                               # both end before the file does
    assert [(e["alert"], e["frame"], e["window_frames"]) for e in ev if e["type"] == "alert_start"] == [
        (r.alert_id, r.frame_index, [r.start_frame, r.frame_index]) for r in started]
    assert [(e["alert"], e["frame"], e["started"]) for e in ev if e["type"] == "alert_end"] == [
        (r.alert_id, r.frame_index, s.time) for r, s in zip(ended, started)]


def test_warm_up_meets_every_call_shape_of_a_batch():
    """The service warms each backbone up before its cameras open: every backbone call shape that a
    batch of 1 to 16 frames makes (calls of at most CHUNK_PIXELS) was met during the warm-up."""
    import xvad
    from xvad.stream.inference import Scorer

    model = xvad.load_model(None)
    seen: list[tuple[int, ...]] = []
    inner = model.feature_maps

    def record(x):
        seen.append(tuple(x.shape))
        return inner(x)

    model.feature_maps = record
    scorer = Scorer(model)
    scorer.warm_up(16)
    warmed = set(seen)
    assert len(seen) == len(warmed)          # no shape twice: the warm-up is short
    seen.clear()
    s = model.config["size"]
    for n in range(1, 17):
        scorer.features([torch.zeros(6, s, s)] * n)
    assert set(seen) <= warmed and len(set(seen)) == 4


def test_the_inference_thread_takes_one_frame_of_each_camera_in_turn():
    """A batch takes the cameras' frames one of each in turn: a camera behind by a few frames catches
    up in the room the others leave, a marker ends a camera's share, and the batch is never exceeded."""
    from types import SimpleNamespace

    from xvad.service.camera import CameraRun
    from xvad.service.runtime import Service
    from xvad.stream.frames import End, Frame, FrameQueue

    class Cam:                 # a camera's queue and its own take(), without a reader thread
        take = CameraRun.take

        def __init__(self, name: str, items: list, state: str = "running") -> None:
            self.name, self.state = name, state
            self.reader = SimpleNamespace(queue=FrameQueue(16))
            for item in items:
                self.reader.queue.put(item, drop=False, stop=threading.Event())

        @property
        def items(self) -> list:
            return list(self.reader.queue._items)

    def frames(n: int) -> list:
        return [Frame(i, i / 8, None, None, 0.0) for i in range(n)]

    end = End("end")
    cams = {"a": Cam("a", frames(6)), "b": Cam("b", frames(1)), "c": Cam("c", [*frames(2), end, *frames(3)]),
            "d": Cam("d", frames(4), state="stopped")}
    svc = SimpleNamespace(cameras=cams, batch=8, _backbone={n: "k" for n in cams})
    taken, markers = Service._gather(svc)
    order = [(c.name, f.index) for c, f in taken["k"]]
    assert order == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("c", 1), ("a", 2), ("a", 3), ("a", 4)]
    assert markers == [(cams["c"], end)]
    assert len(cams["a"].items) == 1 and len(cams["c"].items) == 3 and len(cams["d"].items) == 4
