"""The ``xvad`` command line: train, evaluate, predict, explain, demo."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np

from . import __version__
from .config import methods, precisions


def add_train(sub) -> None:
    from .config import PRESET_HELP, PRESETS, TrainConfig, add_dataclass_arguments

    presets = "; ".join(f"--preset {name}: {text}" for name, text in PRESET_HELP.items())
    p = sub.add_parser("train", help="train a CNN + RNN clip classifier on a folder or CSV of videos",
                       description="Train on DATA/<class>/*.mp4 (or a CSV path,label[,group]); an optional "
                                   "groups.csv keeps clips of one source video on one side of every split.",
                       epilog="The defaults are the shipped model's recipe: EfficientNet-Lite0 (bundled ImageNet "
                              "weights) on frame differences and optical flow, max-pooled, per stream mean and "
                              "max over time and a linear head, three views per training clip, group 5-fold "
                              f"cross-validation. {presets}. Options given explicitly override the preset.")
    p.add_argument("data", help="dataset folder (one subfolder per class) or CSV file")
    p.add_argument("--out", required=True, help="run folder: model.pt, metrics.json, curves.png, predictions.csv")
    add_dataclass_arguments(p, TrainConfig, PRESETS)


def run_train(a) -> int:
    from .config import from_args
    from .train import TrainConfig, train

    m = train(a.data, a.out, from_args(TrainConfig, a))
    print_metrics(m)
    for s in m["skipped"]:
        print(f"skipped: {s['error']}")
    print(f"wrote {os.path.join(a.out, 'model.pt')}, metrics.json, predictions.csv, curves.png")
    return 0


def print_metrics(m: dict) -> None:
    s = m["summary"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"{m['split']} validation on {m['n_used']} clips ({m['n_groups']} groups, {m['n_skipped']} skipped):")
    cv = m.get("cross_validation") or {}
    for k in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        spread = f"  (folds: {cv[k]['mean']:.3f} ± {cv[k]['std']:.3f})" if k in cv else ""
        print(f"  {k:<10} {fmt(s[k])}{spread}")


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a labelled dataset")
    p.add_argument("data")
    p.add_argument("--checkpoint", default=None, help="model file (default: the shipped model)")
    p.add_argument("--out", required=True)
    p.add_argument("--threshold", type=float, default=None, help="alert threshold on p(alert), binary models")


def run_evaluate(a) -> int:
    from .checkpoint import load_model
    from .evaluate import evaluate

    m = evaluate(load_model(a.checkpoint), a.data, a.out, a.threshold)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"{m['n']} clips ({m['n_skipped']} skipped): accuracy {fmt(m['accuracy'])}, "
          f"precision {fmt(m['precision'])}, recall {fmt(m['recall'])}, F1 {fmt(m['f1'])}, ROC-AUC {fmt(m['roc_auc'])}")
    for s in m["skipped"]:
        print(f"skipped: {s['error']}")
    print(f"wrote {os.path.join(a.out, 'metrics.json')} and predictions.csv")
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="score videos: one JSON line per video")
    p.add_argument("videos", nargs="+")
    p.add_argument("--checkpoint", default=None, help="model file (default: the shipped model)")


def run_predict(a) -> int:
    from .checkpoint import load_model
    from .evaluate import predict

    model = load_model(a.checkpoint)
    failed = 0
    for r in predict(model, a.videos):
        print(json.dumps(r), flush=True)
        failed += "error" in r
    return 1 if failed else 0


def add_explain(sub) -> None:
    from .explain import NORMALIZE
    from .render.threshold import MODES as CONTOUR_MODES

    p = sub.add_parser("explain", help="explain a model's decision on a video, frame by frame",
                       description="Writes per-method overlay videos, a contact sheet, maps.npz and "
                                   "explanation.json into --out.")
    p.add_argument("video")
    p.add_argument("--checkpoint", default=None, help="model file (default: the shipped model)")
    p.add_argument("--method", default="gradcam", help=f"comma-separated: {','.join(methods())}")
    p.add_argument("--start", type=float, default=0.0, help="window start in seconds")
    p.add_argument("--frames", type=int, default=None, help="frames in the window (default: the model's)")
    p.add_argument("--target", default=None, help="class index or name (default: the predicted class)")
    p.add_argument("--normalize", default="clip", choices=NORMALIZE)
    p.add_argument("--layer", default=None, help="layer for the CAM methods (default: the backbone's last conv)")
    p.add_argument("--contours", default="top", choices=CONTOUR_MODES,
                   help="contour threshold: the top Q %% of the clip's map, or Otsu's threshold")
    p.add_argument("--q", type=float, default=10.0, help="with --contours top: the share kept, in %%")
    p.add_argument("--precision", default="fp32", choices=precisions(),
                   help="backbone precision (default fp32: bf16 maps drift from fp32 ones; auto: bf16 where "
                        "the CPU/GPU has it, faster)")
    p.add_argument("--out", required=True)


def run_explain(a) -> int:
    from .checkpoint import load_model
    from .explain_video import explain_video

    model = load_model(a.checkpoint).set_precision(a.precision)
    methods = [m.strip() for m in a.method.split(",") if m.strip()]
    target = int(a.target) if a.target is not None and a.target.isdigit() else a.target
    options = {m: {"layer": a.layer} for m in methods if a.layer and m in ("gradcam", "gradcam++", "layercam",
                                                                            "guided_gradcam")}
    r = explain_video(model, a.video, methods, a.out, start=a.start, frames=a.frames, target=target,
                      normalize=a.normalize, contours=a.contours, q=a.q, options=options)
    print(f"{os.path.basename(a.video)}: p({r['class_name']}) = {r['score']:.3f}; "
          f"frames {r['timestamps'][0]:.2f}-{r['timestamps'][-1]:.2f} s")
    for m, e in r["explanations"].items():
        top = np.argsort(-np.asarray(e.frame_importance))[:3]
        print(f"  {m:<22} most important frames: {', '.join(str(int(t)) for t in top)}")
    for path in r["paths"].values():
        print(f"wrote {path}")
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML decision report for a person to review",
                       description="Scores the video as a stream, explains each alert (or the highest-scoring "
                                   "window) with Grad-CAM and saliency, and writes one HTML file.")
    p.add_argument("video")
    p.add_argument("--checkpoint", default=None, help="model file (default: the shipped model)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--threshold", type=float, default=None, help="alert threshold (default: the model's)")
    p.add_argument("--alert", default="3/5", help="k/n: an alert needs k of the last n windows above threshold")
    p.add_argument("--stride", type=int, default=2, help="score a window every N sampled frames")
    p.add_argument("--fps", type=float, default=None, help="sampling rate (default: the model's)")
    p.add_argument("--precision", default="auto", choices=precisions(),
                   help="backbone precision for scoring (auto: bf16 where the CPU/GPU has it)")
    p.add_argument("--map-precision", default="fp32", choices=precisions(),
                   help="backbone precision for the maps (default fp32: bf16 maps drift from fp32 ones)")


def run_report(a) -> int:
    from .checkpoint import load_model
    from .report import write_report

    model = load_model(a.checkpoint).set_precision(a.precision)
    threshold = a.threshold if a.threshold is not None else float((model.extra or {}).get("threshold", 0.5))
    r = write_report(model, a.video, a.out, threshold=threshold, alert=a.alert, stride=a.stride, fps=a.fps,
                     map_precision=a.map_precision)
    print(f"{os.path.basename(a.video)}: {r['windows']} windows, {r['alerts']} alert(s), "
          f"peak score {r['peak_score']:.3f}")
    print(f"wrote {os.path.abspath(a.out)}")
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the review service on the sample footage: alerts, reports, the console",
                       description="Runs the service in this process on xvad's sample footage as two cameras "
                                   "(g21: a street, g29: a night club) playing their clips at their own rate, "
                                   "lets alerts happen, waits for their explanations and prints every alert, "
                                   "its decision report and how to open the console with the demo account.")
    p.add_argument("--out", default="xvad-demo", help="the data folder (database, camera videos, alert media)")
    p.add_argument("--loops", type=int, default=2, help="how many times each camera plays its clips (default 2)")
    p.add_argument("--serve", action="store_true",
                   help="play the cameras on and on and keep the service and console running until Ctrl-C")
    p.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (default: a free one)")
    p.add_argument("--fast", action="store_true",
                   help="play the footage as fast as it is scored, every frame, rather than at its rate "
                        "(no frame dropped on a busy machine; for tests)")
    p.add_argument("--checkpoint", default=None, help="model file (default: the shipped model)")
    p.add_argument("--synthetic", action="store_true",
                   help="instead: train a small model on synthetic clips with a planted anomaly")
    p.add_argument("--quick", action="store_true", help="with --synthetic: fewer clips and epochs")


def run_demo(a) -> int:
    from .demo import run, run_synthetic
    from .errors import ConfigError

    if a.loops < 1:
        raise ConfigError(f"--loops {a.loops}: must be at least 1")
    if not 0 <= a.port <= 65535:
        raise ConfigError(f"--port {a.port}: must be between 0 (a free port) and 65535")
    if a.synthetic:
        run_synthetic(a.out, quick=a.quick)
    else:
        run(a.out, loops=a.loops, serve=a.serve, port=a.port, checkpoint=a.checkpoint, fast=a.fast)
    return 0


def add_detect(sub) -> None:
    from .stream.cli import add_detect as add
    add(sub)


def run_detect(a) -> int:
    from .stream.cli import run_detect as run
    return run(a)


def service_command(name: str) -> tuple:
    """The parser adder and runner of a service command (``xvad.service.cli``), imported when used."""
    def add(sub) -> None:
        from .service.cli import add_parser
        add_parser(sub, name)

    def run(a) -> int:
        from .service.cli import run
        return run(a)

    return add, run


def adapt_command() -> tuple:
    """``xvad adapt`` (:mod:`xvad.adapt.cli`), imported when used."""
    def add(sub) -> None:
        from .adapt.cli import add_parser
        add_parser(sub)

    def run(a) -> int:
        from .adapt.cli import run
        return run(a)

    return add, run


COMMANDS = {"train": (add_train, run_train), "evaluate": (add_evaluate, run_evaluate),
            "predict": (add_predict, run_predict), "explain": (add_explain, run_explain),
            "report": (add_report, run_report), "detect": (add_detect, run_detect),
            "demo": (add_demo, run_demo), "serve": service_command("serve"), "config": service_command("config"),
            "users": service_command("users"), "audit": service_command("audit"),
            "models": service_command("models"), "adapt": adapt_command()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xvad", description="Explainable video anomaly detection")
    parser.add_argument("--version", action="version", version=f"xvad {__version__}")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="what the library logs to stderr (info: camera and alert events; default warning)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import XvadError
    from .models.allocator import keep_freed_memory

    args = build_parser().parse_args(argv)
    logging.basicConfig(format="xvad: %(levelname)s: %(name)s: %(message)s", level=args.log_level.upper())
    keep_freed_memory()      # the backbone's activations reuse freed memory (see xvad.models.allocator)
    try:
        return COMMANDS[args.command][1](args)
    except XvadError as exc:
        print(f"xvad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xvad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
