"""Many cameras: one ``xvad serve`` process against N separate ``xvad detect`` processes.

N cameras (real CCTV clips from ``../shared/data/surv-fight``, one clip from each of N different
groups, each played over and over on one clock, as a camera watching the scene) are served on loopback
over HTTP MPEG-TS, each frame at its own time. For each N,
side by side in one run and alternating so that drift on a shared machine hits both: (a) one
``xvad serve --config cfg.yaml`` watching all N cameras with the shipped model at its own rate, and
(b) N ``xvad detect URL --events ev.jsonl`` processes on the same URLs, each run for D seconds of
steady state and stopped with SIGTERM. Per camera and in total: sampled frames per second (against
the requested rate), dropped frames, latency p50/p95 from frame to window score, and CPU seconds of
the processes (from /proc/PID/stat utime + stime).

Two kinds of footage: every camera busy all the time (the clip alone, over and over: the worst case),
and, with ``--still S``, each clip followed by S seconds of a still image of its own first frame (the
same scene with nobody moving, as CCTV mostly is), over and over; results go to ``results/serve.json`` and
``results/serve_still.json``. With ``--checkpoint``, both sides run that model instead of the shipped one
(the camera's ``model:`` in the service, ``--checkpoint`` for ``xvad detect``) and the results file is
named after it (``serve_NAME.json``).

The service is read through its HTTP API (``/api/cameras``: each camera's live figures) with a token
of a user made for the run; alert explanations are off in the service, as ``xvad detect`` makes none.

Usage: python bench/bench_serve.py [--cameras 1,2,4,8] [--seconds 30] [--order ab|ba] [--still S]
       [--checkpoint model.pt [--name NAME]] [--engine auto|torch|openvino]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from common import save  # noqa: E402

from xvad.video import read_frames  # noqa: E402

from cameras import LiveCamera, mpegts_bytes  # noqa: E402

DATA = os.path.join(ROOT, "..", "shared", "data", "surv-fight")
XVAD = [sys.executable, "-m", "xvad"]
TICK = os.sysconf("SC_CLK_TCK")
# seconds from the first frame of every camera to the measured seconds: the first windows of every
# camera end together, and with busy cameras all their alerts start together (a burst of clips and
# records that the service then takes a few seconds to catch up on; dropped frames since the start
# are reported too)
SETTLE = 10.0
KEEP_UP = 0.05          # a camera keeps up: no dropped frame and its rate within 5 % of the requested one


def pick_clips(n: int, label: str = "fight") -> list[str]:
    """One ``label`` clip from each of the first ``n`` groups (in group order): different scenes."""
    with open(os.path.join(DATA, "groups.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == label]
    first: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: (r["group"], r["clip"])):
        first.setdefault(r["group"], r["clip"])
    clips = [first[g] for g in sorted(first)][:n]
    if len(clips) < n:
        raise SystemExit(f"{DATA}: only {len(clips)} groups with {label} clips, {n} asked")
    return [os.path.join(DATA, label, c + ".mp4") for c in clips]


def make_camera(path: str, still: float = 0.0, seconds: float = 120.0) -> tuple[LiveCamera, dict]:
    """A loopback camera serving the clip at its own frame rate, followed by ``still`` seconds of its
    first frame (the scene with nobody moving), over and over on one clock for at least ``seconds``
    (then the stream starts over). A stream that restarted every few seconds would not be a camera:
    the reader starts a new segment at each restart, and its sampling clock with it, which asked for
    a few per cent more than the camera's rate of frames."""
    frames, times = read_frames(path)
    fps = (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 else 25.0
    rate = max(1, round(fps))
    moving = len(frames)
    if still > 0:
        frames = np.concatenate([frames, np.repeat(frames[:1], round(still * rate), axis=0)])
    laps = max(1, math.ceil(seconds * rate / len(frames)))
    cam = LiveCamera(mpegts_bytes(frames, rate, laps), laps * len(frames) / rate, speed=1.0, loop=True)
    cam.start()
    return cam, {"clip": os.path.relpath(path, DATA), "frames": len(frames), "laps": laps, "moving_frames": moving,
                 "still_seconds": still, "fps": rate, "size": f"{frames.shape[2]}x{frames.shape[1]}", "url": cam.url}


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK      # fields 14 and 15 of stat(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs: list[subprocess.Popen], timeout: float = 60.0) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(0.1, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def wait_for(check, timeout: float, what: str, procs: list[subprocess.Popen]) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{what}: a process ended early (exit {[p.poll() for p in procs]})")
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not ready after {timeout:g} s")


def run_service(urls: list[str], seconds: float, folder: str, checkpoint: str | None = None,
                settle: float = SETTLE, engine: str = "auto") -> dict:
    """(a) one ``xvad serve`` watching every camera (with ``checkpoint``, or the shipped model); figures
    from ``/api/cameras`` at the start and the end of the ``seconds`` measured, which begin ``settle``
    seconds after every camera has its first frame."""
    port = free_port()
    data = os.path.join(folder, "data")
    cfg = os.path.join(folder, "cfg.yaml")
    lines = [f"data: {data}", "host: 127.0.0.1", f"port: {port}", f"engine: {engine}", "cameras:"]
    for i, url in enumerate(urls):
        lines += [f"  - name: cam{i}", f"    source: {url}", "    explain: false"]
        if checkpoint:
            lines.append(f"    model: {os.path.abspath(checkpoint)}")
    with open(cfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run(XVAD + ["users", "add", "bench", "--role", "admin", "--password", "benchpass123",
                           "--config", cfg], check=True, capture_output=True)
    out = subprocess.run(XVAD + ["users", "token", "bench", "--config", cfg], check=True, capture_output=True,
                         text=True).stdout
    token = out.strip().splitlines()[-1].strip()
    log = open(os.path.join(folder, "serve.log"), "w")
    launched = time.monotonic()
    proc = subprocess.Popen(XVAD + ["serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)

    def cameras() -> list[dict] | None:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/cameras",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.load(r)
        except OSError:
            return None

    def all_live() -> list[dict] | None:
        cams = cameras()
        if cams and len(cams) == len(urls) and all(c.get("live") and c["live"]["frames"] > 0 for c in cams):
            return cams
        return None

    try:
        wait_for(all_live, 180, "xvad serve", [proc])
        time.sleep(settle)
        first = wait_for(all_live, 30, "xvad serve", [proc])
        t0, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
        time.sleep(seconds)
        last = cameras()
        t1, cpu1 = time.monotonic(), cpu_seconds(proc.pid)
    finally:
        code = stop([proc])[0]
        log.close()
    wall = t1 - t0
    before = {c["name"]: c["live"] for c in first}
    per = []
    for c in sorted(last or [], key=lambda c: c["name"]):
        a, b = before[c["name"]], c["live"]
        per.append({"camera": c["name"], "requested_fps": b["fps"],
                    "frames": b["frames"] - a["frames"], "fps": (b["frames"] - a["frames"]) / wall,
                    "dropped_measured": b["dropped"] - a["dropped"], "dropped": b["dropped"],
                    "fps_since_start": b["frames_per_second"],
                    "latency_p50": b["latency_p50"], "latency_p95": b["latency_p95"]})
    return {"cameras": per, "seconds": wall, "cpu_seconds": cpu1 - cpu0, "startup_seconds": t0 - launched,
            "processes": 1, "exit": code}


def run_detect(urls: list[str], seconds: float, folder: str, checkpoint: str | None = None,
               settle: float = SETTLE, engine: str = "auto") -> dict:
    """(b) one ``xvad detect`` per camera (with ``checkpoint``, or the shipped model); figures from the
    ``stop`` line of each events file, and the windows of the ``seconds`` measured (from ``settle``
    seconds after every process has started)."""
    events = [os.path.join(folder, f"ev_{i}.jsonl") for i in range(len(urls))]
    logs = [open(os.path.join(folder, f"detect_{i}.log"), "w") for i in range(len(urls))]
    launched = time.monotonic()
    model = ["--checkpoint", os.path.abspath(checkpoint)] if checkpoint else []
    procs = [subprocess.Popen(XVAD + ["detect", url, "--events", ev, "--log-windows", "--quiet",
                                     "--engine", engine, *model], stdout=lg,
                              stderr=subprocess.STDOUT) for url, ev, lg in zip(urls, events, logs)]

    def lines(path: str) -> list[dict]:
        try:
            with open(path) as f:
                return [json.loads(x) for x in f if x.strip()]
        except (OSError, ValueError):
            return []

    def started() -> bool:
        return all(any(e.get("type") == "start" for e in lines(p)) for p in events)

    try:
        wait_for(started, 180, "xvad detect", procs)
        time.sleep(settle)
        t0, u0, cpu0 = time.monotonic(), time.time(), [cpu_seconds(p.pid) for p in procs]
        time.sleep(seconds)
        t1, u1, cpu1 = time.monotonic(), time.time(), [cpu_seconds(p.pid) for p in procs]
    finally:
        codes = stop(procs)
        for lg in logs:
            lg.close()
    per = []
    for i, path in enumerate(events):
        evs = lines(path)
        start = next((e for e in evs if e.get("type") == "start"), {})
        s = next((e for e in reversed(evs) if e.get("type") == "stop"), None)
        if s is None:
            per.append({"camera": f"cam{i}", "error": f"no stop line in {path} (exit {codes[i]})"})
            continue
        # frames scored in the measured seconds: a window every `stride` frames
        windows = sum(1 for e in evs if e.get("type") == "window" and u0 <= e["unix"] <= u1)
        frames = windows * int(start.get("stride", 1))
        per.append({"camera": f"cam{i}", "requested_fps": start.get("fps"), "frames": frames,
                    "fps": frames / (t1 - t0), "fps_since_start": s["fps"], "frames_run": s["frames"],
                    "dropped": s["dropped"], "run_seconds": s["seconds"],
                    "latency_p50": s["latency_p50"], "latency_p95": s["latency_p95"],
                    "cpu_seconds": cpu1[i] - cpu0[i]})
    return {"cameras": per, "seconds": t1 - t0, "cpu_seconds": sum(b - a for a, b in zip(cpu0, cpu1)),
            "startup_seconds": t0 - launched, "processes": len(procs), "exit": codes}


def totals(run: dict) -> dict:
    """Total frames per second, dropped frames, worst latencies, CPU per frame, and who kept up."""
    cams = [c for c in run["cameras"] if "error" not in c]
    fps = sum(c["fps"] for c in cams)
    frames = sum(c["frames"] for c in cams)
    kept = [c["dropped"] == 0 and c["requested_fps"] and abs(c["fps"] - c["requested_fps"]) <= KEEP_UP *
            c["requested_fps"] for c in cams]
    run_fps = sum(c.get("fps_since_start", c["fps"]) for c in cams)
    p50 = [c["latency_p50"] for c in cams if c["latency_p50"] is not None]
    p95 = [c["latency_p95"] for c in cams if c["latency_p95"] is not None]
    return {"fps": fps, "fps_since_start": sum(c.get("fps_since_start", c["fps"]) for c in cams), "frames": frames,
            "dropped": sum(c["dropped"] for c in cams), "cpu_seconds": run["cpu_seconds"],
            "cpu_per_frame_ms": 1000 * run["cpu_seconds"] / frames if frames else None,
            "cpu_share": run["cpu_seconds"] / run["seconds"],
            "latency_p50_max": max(p50) if p50 else None, "latency_p95_max": max(p95) if p95 else None,
            # the same over each process's whole run (frames per second since start): at a few frames per
            # second a detect process may not fill a window within the measured seconds
            "cpu_per_frame_ms_run": (1000 * run["cpu_seconds"] / (run_fps * run["seconds"])) if run_fps else None,
            "cameras_kept_up": sum(bool(k) for k in kept),
            # the service also counts its drops in the measured seconds alone (xvad detect reports none)
            "dropped_measured": sum(c["dropped_measured"] for c in cams) if all("dropped_measured" in c for c in cams)
            else None,
            "all_kept_up": len(kept) == len(run["cameras"]) and all(kept)}


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_run(n: int, name: str, run: dict) -> None:
    t = run["totals"]
    print(f"N={n} {name}: total {t['fps']:.1f} frames/s, {t['dropped']} dropped, CPU {t['cpu_seconds']:.1f} s "
          f"over {run['seconds']:.1f} s ({_num(t['cpu_per_frame_ms'])} ms/frame), "
          f"{t['cameras_kept_up']}/{n} kept up" + ("" if t["dropped_measured"] is None else
                                                      f" ({t['dropped_measured']} dropped in the measured seconds)")
          + f", startup {run['startup_seconds']:.1f} s")
    for c in run["cameras"]:
        if "error" in c:
            print(f"   {c['camera']}: {c['error']}")
            continue
        print(f"   {c['camera']}: {c['fps']:.2f}/{c['requested_fps']:g} fps, {c['frames']} frames, "
              f"{c['dropped']} dropped, latency p50 {_ms(c['latency_p50'])} ms p95 {_ms(c['latency_p95'])} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", default="1,2,4,8", help="numbers of cameras to run (default 1,2,4,8)")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds measured per run (default 30)")
    ap.add_argument("--settle", type=float, default=SETTLE,
                    help=f"seconds from every camera's first frame to the measured seconds (default {SETTLE:g})")
    ap.add_argument("--order", default="ab", choices=["ab", "ba"],
                    help="which goes first for the first N (then it alternates); default ab")
    ap.add_argument("--still", type=float, default=0.0, metavar="S",
                    help="after each clip, S seconds of a still image of its first frame (default 0: every "
                         "camera busy all the time, the worst case)")
    ap.add_argument("--checkpoint", default=None, help="model file for every camera (default: the shipped model)")
    ap.add_argument("--engine", default="auto", choices=["auto", "torch", "openvino"],
                    help="what runs the backbone on both sides (default auto: OpenVINO when installed)")
    ap.add_argument("--name", default=None,
                    help="results file suffix (default: the checkpoint's folder name; none for the shipped model)")
    a = ap.parse_args()
    if a.checkpoint and not os.path.isfile(a.checkpoint):
        raise SystemExit(f"{a.checkpoint}: no such model file")
    if a.name is None and a.checkpoint:
        a.name = os.path.basename(os.path.dirname(os.path.abspath(a.checkpoint)))
    name = ("serve_still" if a.still > 0 else "serve") + (f"_{a.name}" if a.name else "")
    counts = [int(x) for x in a.cameras.split(",")]
    if not os.path.isdir(DATA):
        raise SystemExit(f"{DATA}: not found (the benchmark needs the surv-fight clips)")
    clips = pick_clips(max(counts))
    load_before = os.getloadavg()
    print(f"load average {load_before[0]:.2f} on {os.cpu_count()} cores; {a.seconds:g} s per run")
    cams, info = [], []
    for path in clips:
        cam, meta = make_camera(path, a.still, a.seconds + a.settle + 60)   # start-up and measured seconds, with room
        cams.append(cam)
        info.append(meta)
        still = f" then {a.still:g} s still" if a.still > 0 else ""
        print(f"camera {len(cams) - 1}: {meta['clip']} {meta['size']} {meta['fps']} fps, "
              f"{meta['moving_frames']} frames{still}, over and over")
    results: list[dict] = []
    meta = {"model": a.checkpoint or "shipped", "engine": a.engine, **describe(a.seconds, info, a.still),
            "settle_seconds": a.settle}
    order = a.order
    try:
        for n in counts:
            urls = [c.url for c in cams[:n]]
            row: dict[str, Any] = {"cameras": n, "order": order, "load_average_before": os.getloadavg()}
            for which in order:
                folder = tempfile.mkdtemp(prefix=f"xvad-bench-serve-{n}{which}-")
                run = (run_service(urls, a.seconds, folder, a.checkpoint, a.settle, a.engine) if which == "a"
                       else run_detect(urls, a.seconds, folder, a.checkpoint, a.settle, a.engine))
                run["totals"] = totals(run)
                run["folder"] = folder
                row["service" if which == "a" else "separate"] = run
                print_run(n, "one xvad serve" if which == "a" else f"{n} x xvad detect", run)
            row["load_average_after"] = os.getloadavg()
            sa, sb = row["service"]["totals"], row["separate"]["totals"]
            row["ratio_fps"] = sa["fps"] / sb["fps"] if sb["fps"] else None
            row["ratio_cpu_per_frame"] = (sa["cpu_per_frame_ms"] / sb["cpu_per_frame_ms"]
                                          if sa["cpu_per_frame_ms"] and sb["cpu_per_frame_ms"] else None)
            row["ratio_fps_since_start"] = (sa["fps_since_start"] / sb["fps_since_start"]
                                            if sb["fps_since_start"] else None)
            row["ratio_cpu_per_frame_since_start"] = (
                sa["cpu_per_frame_ms_run"] / sb["cpu_per_frame_ms_run"]
                if sa["cpu_per_frame_ms_run"] and sb["cpu_per_frame_ms_run"] else None)
            print(f"N={n}: service / separate: total fps x{_num(row['ratio_fps'], 2)}, CPU per frame "
                  f"x{_num(row['ratio_cpu_per_frame'], 2)}; load {row['load_average_after'][0]:.2f}")
            results.append(row)
            save(name, {**meta, "load_average_before": load_before, "load_average_after": os.getloadavg(),
                           "runs": results, "complete": False})
            order = order[::-1]
    finally:
        for c in cams:
            c.kill()
    print()
    print(f"{'N':>2} {'run':<10}{'fps total':>10}{'(run)':>7}{'dropped':>9}{'kept up':>9}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'CPU s':>8}{'CPU ms/frame':>13}")
    for row in results:
        for key in ("service", "separate"):
            t = row[key]["totals"]
            print(f"{row['cameras']:>2} {key:<10}{t['fps']:>10.1f}{t['fps_since_start']:>7.1f}{t['dropped']:>9}"
                  f"{t['cameras_kept_up']:>5}/{row['cameras']:<3}{_ms(t['latency_p50_max']):>8}"
                  f"{_ms(t['latency_p95_max']):>8}{t['cpu_seconds']:>8.1f}{_num(t['cpu_per_frame_ms']):>13}")
        print(f"{'':>2} {'ratio':<10}{_num(row['ratio_fps'], 2):>10}{'':>49}{_num(row['ratio_cpu_per_frame'], 2):>13}")
    print("wrote", save(name, {**meta, "load_average_before": load_before, "load_average_after": os.getloadavg(),
                                  "runs": results, "complete": True}))


def describe(seconds: float, info: list[dict], still: float = 0.0) -> dict:
    """What the figures in the results file mean."""
    return {"seconds": seconds, "clips": info, "keep_up_tolerance": KEEP_UP,
               "footage": (f"each clip then {still:g} s of a still image of its first frame, over and over on one "
                           "clock" if still > 0 else
                           "each clip over and over on one clock: every camera busy all the time (the worst case)"),
               "cpu_measure": "/proc/PID/stat utime+stime over the measured seconds (psutil not installed)",
               "latency": "per camera p50/p95 from frame to window score; totals give the worst camera",
               "service_fps": "frames counted between two /api/cameras reads D seconds apart",
               "service_fps_since_start": "frames over the time since each camera started (the API's "
                                          "frames_per_second)",
               "separate_fps": "window lines (--log-windows) written in the measured seconds, times the stride; "
                               "fps_since_start: the stop line (frames over the detector's run)",
               "dropped": "over the whole run of each process (the stop line; the service's API), so start-up "
                          "drops count; the service's dropped_measured counts only the measured seconds"}


if __name__ == "__main__":
    main()
