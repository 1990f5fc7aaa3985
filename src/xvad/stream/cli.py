"""``xvad detect``: real-time detection on a file, webcam or network stream, from the command line.

``add_detect(subparsers)`` declares the command and ``run_detect(args)`` runs it (exit code 0;
130 after SIGINT, 143 after SIGTERM, both of which stop cleanly). Until the command is registered
in ``xvad.cli``, ``python -m xvad.stream.cli SOURCE ...`` runs it on its own.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from typing import Any

from ..config import engines, precisions
from ..errors import VideoError


def _reconnect(value: str) -> tuple[float, float] | None:
    """``DELAY[:MAX]`` seconds, or ``off``."""
    if value.strip().lower() in ("off", "no", "none", "0"):
        return None
    try:
        parts = [float(p) for p in value.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DELAY[:MAX] in seconds or 'off', not {value!r}") from None
    if len(parts) == 1:
        parts.append(max(10.0, parts[0]))
    if len(parts) != 2 or not 0 < parts[0] <= parts[1] or not all(map(math.isfinite, parts)):
        raise argparse.ArgumentTypeError(f"expected DELAY[:MAX] with 0 < DELAY <= MAX, not {value!r}")
    return parts[0], parts[1]


def _seconds(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number or 'inf'), not {value!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, not {value!r}")
    return v


def _option(value: str) -> tuple[str, str]:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {value!r}")
    k, v = value.split("=", 1)
    return k.strip(), v.strip()


def add_detect(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "detect", help="real-time detection on a video file, webcam or stream (rtsp, http, udp)",
        description="Score a video file, a webcam (0, /dev/video0) or a stream (rtsp://, http(s)://, "
                    "udp://) window by window: each frame goes through the CNN once, windows of the last "
                    "WINDOW frames are scored every STRIDE frames, and an alert is raised when K of the "
                    "last N window scores pass the threshold.")
    p.add_argument("source", help="video file, webcam index or device, or stream URL")
    p.add_argument("--checkpoint", default=None, help="model file (default: the shipped model)")
    p.add_argument("--fps", type=float, default=None,
                   help="frames per second to sample (default: the checkpoint's rate, else 8)")
    p.add_argument("--window", type=int, default=None, help="frames per window (default: the checkpoint's)")
    p.add_argument("--stride", type=int, default=2, help="frames between window scores (default 2)")
    p.add_argument("--threshold", type=float, default=None,
                   help="alert threshold on the window score (default: the model's own, 0.5 unless adapted)")
    p.add_argument("--alert", default="3/5", metavar="K/N",
                   help="an alert starts when K of the last N windows pass the threshold and ends when "
                        "fewer than K do (default 3/5)")
    p.add_argument("--batch", type=int, default=8, help="at most this many frames per CNN call (default 8)")
    p.add_argument("--events", default=None, metavar="FILE",
                   help="append events as JSON lines (alert start/end, gaps, run start/stop)")
    p.add_argument("--log-windows", action="store_true", help="also log every window's score in --events")
    p.add_argument("--out", default=None, metavar="FILE.mp4",
                   help="write the sampled frames with scores, a score timeline and alert banners")
    p.add_argument("--explain-alerts", default=None, metavar="DIR",
                   help="explain each alert's window with Grad-CAM in the background, one folder per alert")
    p.add_argument("--explain-method", default="gradcam", help=argparse.SUPPRESS)
    p.add_argument("--report", default=None, metavar="FILE.html",
                   help="after the run, write the HTML decision report (file sources)")
    p.add_argument("--precision", default="auto", choices=precisions(),
                   help="backbone precision (auto: bf16 where the CPU/GPU has it, fp32 with OpenVINO)")
    p.add_argument("--engine", default="auto", choices=engines(),
                   help="what runs the backbone (auto: OpenVINO when installed and on the CPU, else torch)")
    p.add_argument("--live", default="auto", choices=["auto", "yes", "no"],
                   help="live handling: drop frames when behind and reconnect when the source goes "
                        "away (auto: yes for webcams and URLs)")
    p.add_argument("--realtime", action="store_true",
                   help="pace a file at its own frame rate, as a camera would deliver it")
    p.add_argument("--reconnect", type=_reconnect, default=(0.5, 10.0), metavar="DELAY[:MAX]",
                   help="reopen a lost live source after DELAY s, doubling up to MAX s (default 0.5:10; "
                        "'off' ends the run instead)")
    p.add_argument("--give-up-after", type=_seconds, default=300.0, metavar="S",
                   help="stop reconnecting after S seconds without the source (default 300; 'inf': never)")
    p.add_argument("--timeout", type=_seconds, default=10.0, metavar="S",
                   help="network open/read timeout in seconds (default 10)")
    p.add_argument("--source-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg option for opening the source (e.g. rtsp_transport=udp); repeatable")
    p.add_argument("--quiet", "-q", action="store_true", help="no live display and no alert lines")
    return p


class _Display:
    """The live terminal line (tqdm) when stdout is a terminal; alert lines otherwise."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", dynamic_ncols=True, leave=True, mininterval=0.25)
        self.frames = 0

    def update(self, progress: dict) -> None:
        if self.bar is None:
            return
        self.bar.update(progress["frames"] - self.frames)
        self.frames = progress["frames"]
        post = {"score": "-" if progress["score"] is None else f"{progress['score']:.2f}",
                "latency": "-" if progress["latency"] is None else f"{progress['latency'] * 1000:.0f}ms",
                "dropped": progress["dropped"], "alerts": progress["alerts"]}
        if progress["alert_on"]:
            post["ALERT"] = progress["class"]
        if progress.get("reader") == "reconnecting":
            post["source"] = "reconnecting"
        self.bar.set_postfix(post, refresh=False)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _expected_frames(detector: Any, source: str) -> int | None:
    from ..video import parse_source, probe

    try:
        if parse_source(source).live:
            return None
        info = probe(source)
    except VideoError:
        return None
    return max(1, math.ceil(info.duration * detector.fps - 1e-6)) if info.duration else None


def run_detect(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from .detector import Detector

    model = load_model(args.checkpoint)
    if args.threshold is None:
        from ..evaluate import model_threshold
        args.threshold = model_threshold(model)
    live = {"auto": None, "yes": True, "no": False}[args.live]
    detector = Detector(model, fps=args.fps, window=args.window, stride=args.stride, threshold=args.threshold,
                        alert=args.alert, batch=args.batch, events=args.events, explain_dir=args.explain_alerts,
                        out=args.out, live=live, log_windows=args.log_windows, precision=args.precision,
                        engine=args.engine,
                        realtime=args.realtime, reconnect=args.reconnect, give_up_after=args.give_up_after,
                        timeout=args.timeout, explain_method=args.explain_method,
                        source_options=dict(args.source_option))
    results = detector.run(args.source)            # opens the source: a bad one fails here

    caught: list[int] = []
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        if caught and signum == signal.SIGINT:
            raise KeyboardInterrupt               # a second Ctrl-C: stop right now
        caught.append(signum)
        detector.stop(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    show = not args.quiet
    display = _Display(show and sys.stdout.isatty(), _expected_frames(detector, args.source))
    windows = []
    try:
        for r in results:
            windows.append(r)
            if show and r.event == "start":
                display.write(f"alert {r.alert_id} started at {r.time:.2f} s (frame {r.frame_index}): "
                              f"{r.class_name} {r.score:.2f}")
            elif show and r.event == "end":
                display.write(f"alert {r.alert_id} ended at {r.time:.2f} s (frame {r.frame_index})")
            display.update(detector.progress)
    finally:
        results.close()                             # finishes the events file and the video
        display.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    s = detector.summary()
    if show:
        lat = "n/a" if s["latency_p50"] is None else \
            f"{s['latency_p50'] * 1000:.0f}/{s['latency_p95'] * 1000:.0f} ms"
        fps = "n/a" if s["fps"] is None else f"{s['fps']:.1f}"
        print(f"{s['frames']} frames, {s['windows']} windows, {s['alerts']} alert(s), {s['dropped']} dropped, "
              f"{s['corrupt']} corrupt packet(s), {s['gaps']} gap(s); {fps} frames/s, latency p50/p95 {lat}"
              + (f"; stopped by {signal.Signals(caught[0]).name}" if caught else ""))
        if args.events:
            print(f"events: {args.events}")
        if s.get("out"):
            print(f"annotated video: {s['out']}")
        if args.explain_alerts:
            print(f"explanations: {s.get('explained', 0)} in {args.explain_alerts}"
                  + (f" ({s['explain_failed']} failed)" if s.get("explain_failed") else "")
                  + (f" ({s['explain_skipped']} skipped, worker busy)" if s.get("explain_skipped") else ""))
    if args.report and windows:
        if "://" in args.source or args.source.isdigit() or args.source.startswith("/dev/"):
            print("--report needs a file source (the report re-reads the alert windows); skipped")
        else:
            from ..report import write_report

            write_report(model, args.source, args.report, threshold=args.threshold, alert=args.alert,
                         stride=args.stride, fps=detector.fps, events=args.events, results=windows)
            print(f"report: {args.report}")
    if caught:
        return 128 + int(caught[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m xvad.stream.cli SOURCE ...`` is ``xvad detect SOURCE ...``."""
    from ..cli import main as xvad_main

    return xvad_main(["detect", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
