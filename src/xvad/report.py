"""The decision report: one self-contained HTML file a person reviews an automated alert with.

GDPR Article 22 asks that an automated decision affecting a person be open to human review. The
report shows the video's score over time and the alerts, and for each alert the key frames with
Grad-CAM (where the model looked, with contours) and saliency (which pixels moved the score), how
much each frame counted, what the model is, and what these pictures do and do not mean.
"""
from __future__ import annotations

import base64
import html
import io
import os
import time
from dataclasses import dataclass

import numpy as np

from . import __version__
from .atomic import atomic_path
from .models import CRNN
from .models.precision import resolve_precision
from .video import input_streams

METHODS = ("gradcam", "saliency")
SEEN = {"rgb": "frame", "motion": "frame differences", "flow": "optical flow"}   # what the backbone sees
SHOWN = {"rgb": "frames", "motion": "motion images", "flow": "optical-flow images"}


VIEWS = {"rgb": "the frames themselves",
         "motion": "what changed between each frame and the one just after it",
         "flow": "where each part of the picture moved to in the next frame (optical flow)"}


def seeing(streams: list[str]) -> str:
    """What a model that does not look at frames alone sees, in plain words."""
    views = [VIEWS[s] for s in streams]
    listed = views[0] if len(views) == 1 else ", ".join(views[:-1]) + " and " + views[-1]
    adds = {1: "", 2: " Each map adds up both.", 3: " Each map adds up all three."}[len(streams)]
    if "rgb" not in streams:
        return (f"This model does not look at the pictures themselves but at {listed}.{adds} The maps are "
                "drawn on the frames a person would see, but they point at movement: a still person in a "
                "bright region did not move the score.")
    return (f"This model looks at {listed}.{adds} The maps are drawn on the frames a person would see; "
            "they can point at movement or at still parts of the scene.")


def meaning(config: dict) -> list[str]:
    """What the pictures mean, in plain words, for a model with ``config``."""
    streams = input_streams(config.get("input", "rgb"))
    text = [
        "Grad-CAM (red = strong) shows the regions of each frame whose features pushed the score of the "
        "reported class up, at the resolution of the network's last convolutional layer (coarse by design). "
        "The white contours enclose the top 10 % of that map over the whole window.",
        "Saliency shows the pixels whose small changes would change the score the most. It is finer but noisier.",
    ]
    if streams != ["rgb"]:
        text.append(seeing(streams))
    if config.get("temporal") == "pool":
        text.append("Frame importance says how much each frame contributed to the score (Grad-CAM's gradient "
                    "x activation summed over the frame). The model averages the frames and also keeps, for "
                    "each feature, its strongest frame, so one or two frames can carry most of the score.")
    else:
        text.append("Frame importance says how much each frame contributed to the score (Grad-CAM's gradient "
                    "x activation summed over the frame). The model reads frames in order through a recurrent "
                    "layer, so later frames often weigh more.")
    text.append("These maps show what the model used, not what happened. A bright region is not proof of an "
                "incident, and a faint one does not prove its absence. The model can be wrong, and it can be "
                "right for the wrong reason, such as a camera or a scene that looked like the training "
                "footage. A person must watch the footage before acting.")
    return text


def architecture(config: dict) -> str:
    """One line: what the network is."""
    streams = input_streams(config.get("input", "rgb"))
    seen = " and ".join(SEEN[s] for s in streams)
    heads = "linear head" if len(streams) == 1 else "a linear head per stream, probabilities averaged"
    over = (f"mean and max over {config['frames']} frames, {heads}" if config.get("temporal") == "pool"
            else f"GRU({config['hidden']}) over {config['frames']} frames, MLP head")
    return f"{config['backbone']} per {seen} ({config['weights']} weights), {config['pooling']}-pooled, {over}"


@dataclass
class AlertView:
    """One reviewed window: the alert (or the highest-scoring window) with its explanations."""
    title: str
    start: float
    end: float | None
    peak_score: float
    class_name: str
    window_times: np.ndarray
    frames: np.ndarray
    explanations: dict
    votes: list[tuple[str, float]]   # each stream's own probability of the class, at the scoring precision


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img_png(array: np.ndarray) -> str:
    import matplotlib.image as mpimg
    buf = io.BytesIO()
    mpimg.imsave(buf, np.ascontiguousarray(array), format="png")
    return base64.b64encode(buf.getvalue()).decode()


def timeline_plot(times, scores, threshold: float, spans: list[tuple[float, float]]) -> str:
    """Score over time with the threshold and the alert intervals shaded; base64 PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 2.8))
    for a, b in spans:
        ax.axvspan(a, b, color="#d62728", alpha=0.18, lw=0)
    ax.plot(times, scores, color="#1f3b73", lw=1.6, label="window score")
    ax.axhline(threshold, color="#d62728", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set(xlabel="time in the video (s)", ylabel="alert score", ylim=(-0.02, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def importance_plot(importance: np.ndarray, times: np.ndarray, key: list[int]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.2))
    colours = ["#d62728" if t in key else "#8aa1c9" for t in range(len(importance))]
    ax.bar(np.arange(len(importance)), importance, color=colours)
    ax.set_xticks(np.arange(len(importance)), [f"{t:.1f}" for t in times], fontsize=7, rotation=90)
    ax.set(xlabel="frame time (s)", ylabel="importance", title="How much each frame counted (red: key frames)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def key_frames(importance: np.ndarray, k: int = 4) -> list[int]:
    """The ``k`` frames that counted most, in time order."""
    return sorted(int(t) for t in np.argsort(-np.asarray(importance))[:k])


def frame_panels(view: AlertView, key: list[int]) -> list[dict]:
    """Per key frame: the frame, its Grad-CAM overlay with contours, its saliency overlay (PNGs)."""
    from .render import blend, clip_contours, draw_polygons, resize_maps

    gc, sal = view.explanations["gradcam"], view.explanations["saliency"]
    scale = max(1, 256 // min(view.frames.shape[1:3]))  # small model inputs are enlarged for the eye
    frames = view.frames.repeat(scale, axis=1).repeat(scale, axis=2)
    regions = [[r.scaled(scale, scale) for r in frame] for frame in clip_contours(gc, mode="top", q=10.0)]
    panels = []
    for t in key:
        big = frames.shape[1:3]
        cam = blend(frames[t], resize_maps(gc.maps[t:t + 1], big)[0], alpha=0.45)
        draw_polygons(cam, regions[t])
        sal_map = resize_maps(sal.maps[t:t + 1], big)[0]
        panels.append({"time": float(view.window_times[t]), "index": t,
                       "importance": float(gc.frame_importance[t]),
                       "frame": _img_png(frames[t]), "gradcam": _img_png(cam),
                       "saliency": _img_png(blend(frames[t], sal_map, alpha=0.55, cmap="inferno")),
                       "regions": len(regions[t])})
    return panels


def stream_votes(votes: list[tuple[str, float]], class_name: str) -> str:
    """One sentence on what each stream's head said about a window, whose score is their mean."""
    said = ", ".join(f"{SHOWN[name]} {p:.2f}" for name, p in votes)
    above = [SHOWN[name] for name, p in votes if p > 0.5]
    if 0 < len(above) < len(votes):
        verdict = (f"They disagree: only the {' and '.join(above)} lean towards {class_name}, "
                   "so weigh this alert with care.")
    else:
        verdict = "They agree."
    return (f"Each stream's own probability of {class_name} in the peak window: {said}. The peak window score is "
            f"their mean. {verdict}")


def review_windows(model: CRNN, video: str, results: list, fps: float, window: int, max_alerts: int,
                   map_precision: str | None = "fp32") -> list[AlertView]:
    """Explain the peak window of each alert (or, with no alert, the highest-scoring window); the maps
    are computed at ``map_precision`` (None: the model's own), since bf16 maps drift from fp32 ones."""
    from .explain import explain
    from .explain_video import read_window

    alerts: dict[int, list] = {}
    for r in results:
        if r.alert_id is not None:
            alerts.setdefault(r.alert_id, []).append(r)
    picks = []
    for aid, rs in list(alerts.items())[:max_alerts]:
        on = [r for r in rs if r.alert_on]
        peak = max(on or rs, key=lambda r: r.score)
        end = next((r.time for r in rs if r.event == "end"), None)  # None: still on when the video ended
        picks.append((f"Alert {aid}", rs[0].time, end, peak))
    if not picks and results:
        peak = max(results, key=lambda r: r.score)
        picks.append(("Highest-scoring window (no alert raised)", peak.start_time, peak.time, peak))
    views, clips = [], []
    own = model.config["precision"]
    try:
        model.set_precision(map_precision or own)
        for title, start, end, peak in picks:
            clip, shown, ts = read_window(model, video, start=peak.start_time, frames=window, fps=fps)
            target = peak.class_index
            expl = {m: explain(model, clip, method=m, target=target) for m in METHODS}
            views.append(AlertView(title, start, end, float(peak.score), peak.class_name or str(target), ts,
                                   shown, expl, []))
            clips.append((clip, target))
    finally:
        model.set_precision(own)
    if model.stream_heads:   # each stream's vote, at the precision that scored the alert
        for view, (clip, target) in zip(views, clips):
            view.votes = list(zip(model.stream_heads, model.stream_proba(clip)[:, target].tolist()))
    return views


def maps_precision(model: CRNN, map_precision: str | None) -> str:
    """The precision the maps are drawn at ("fp32" or "bf16"): ``map_precision``, else the model's own."""
    return resolve_precision(map_precision or model.config["precision"], model.device)


def model_card(model: CRNN, map_precision: str | None = None) -> list[tuple[str, str]]:
    cfg, extra = model.config, getattr(model, "extra", {}) or {}
    metrics = extra.get("metrics") or {}
    maps = maps_precision(model, map_precision)
    rows = [("checkpoint", f"{os.path.basename(getattr(model, 'checkpoint_path', '') or 'in memory')} "
                           f"(id {getattr(model, 'checkpoint_id', 'n/a')})"),
            ("xvad version", __version__),
            ("architecture", architecture(cfg)),
            ("input", f"{cfg['frames']} {' + '.join(SHOWN[s] for s in input_streams(cfg.get('input', 'rgb')))} "
                      f"at {cfg['size']} px, "
                      f"{'%g fps' % cfg['fps'] if cfg.get('fps') else 'spread over the clip'}, crop {cfg.get('crop')}"),
            ("classes", ", ".join(cfg["classes"])),
            ("precision", f"{model.precision} for the scores, {maps} for the maps")]
    if metrics:
        rows.append(("validation", ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))))
    if extra.get("card"):
        rows.append(("model card", str(extra["card"])))
    return rows


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1b1f24}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#555}.verdict{padding:10px 14px;border-radius:6px;margin:14px 0;font-weight:600}
.alert{background:#fde2e1;border:1px solid #d62728}.calm{background:#e3f1e3;border:1px solid #2ca02c}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:.92em;text-align:left}
.frames{display:grid;grid-template-columns:repeat(3,1fr);gap:6px;margin:8px 0 16px}
.frames figure{margin:0}.frames img{width:100%;image-rendering:pixelated;border:1px solid #999}
figcaption{font-size:.8em;color:#444}img.plot{max-width:100%}
.note{background:#f6f8fa;border-left:4px solid #8aa1c9;padding:8px 12px;font-size:.93em}
"""


def render_html(video: str, model: CRNN, results: list, views: list[AlertView], threshold: float,
                alert_spec: str, events: list[dict], files: dict[str, str], map_precision: str | None = None) -> str:
    esc = html.escape
    times = [r.time for r in results]
    spans = [(v.start, v.end if v.end is not None else times[-1]) for v in views if v.title.startswith("Alert")]
    n_alerts = len(spans)
    peak = max((r.score for r in results), default=0.0)
    verdict = (f'<div class="verdict alert">{n_alerts} alert(s) raised. Peak score {peak:.2f}.</div>' if n_alerts
               else f'<div class="verdict calm">No alert raised. Peak score {peak:.2f}, threshold {threshold:.2f}.</div>')
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>xvad decision report: "
           f"{esc(os.path.basename(video))}</title><style>{CSS}</style></head><body>",
           f"<h1>Decision report: {esc(os.path.basename(video))}</h1>",
           f"<div class='sub'>Written {time.strftime('%Y-%m-%d %H:%M:%S')} by xvad {__version__} for human review "
           "of an automated decision (GDPR Article 22).</div>", verdict,
           "<h2>Score over time</h2>",
           f"<img class='plot' alt='score over time' src='data:image/png;base64,"
           f"{timeline_plot(times, [r.score for r in results], threshold, spans)}'>",
           f"<p class='sub'>An alert starts when {alert_spec.split('/')[0]} of the last {alert_spec.split('/')[1]} "
           f"window scores pass {threshold:.2f}, and ends when fewer do. Shaded: alert intervals.</p>"]
    maps = maps_precision(model, map_precision)
    rescored = f" when re-scored in {maps}, the maps' precision" if maps != model.precision else ""
    for v in views:
        gc = v.explanations["gradcam"]
        key = key_frames(gc.frame_importance)
        end = f"to {v.end:.1f} s" if v.end is not None else "on until the end of the video"
        out.append(f"<h2>{esc(v.title)}: from {v.start:.1f} s, {end}</h2>")
        out.append(f"<p>Class <b>{esc(v.class_name)}</b>, peak window score <b>{v.peak_score:.3f}</b> "
                   f"(explained window {v.window_times[0]:.1f}-{v.window_times[-1]:.1f} s, score {gc.score:.3f}"
                   f"{rescored}). "
                   "Key frames, the ones that counted most:</p>")
        if v.votes:
            out.append(f"<p>{esc(stream_votes(v.votes, v.class_name))}</p>")
        out.append("<div class='frames'>")
        for p in frame_panels(v, key):
            cap = f"{p['time']:.2f} s (frame {p['index']} of the window), importance {p['importance']:.3g}"
            out.append(f"<figure><img alt='frame at {p['time']:.2f} s' src='data:image/png;base64,{p['frame']}'>"
                       f"<figcaption>{cap}</figcaption></figure>"
                       f"<figure><img alt='Grad-CAM at {p['time']:.2f} s' src='data:image/png;base64,{p['gradcam']}'>"
                       f"<figcaption>Grad-CAM with contours ({p['regions']} region(s))</figcaption></figure>"
                       f"<figure><img alt='saliency at {p['time']:.2f} s' src='data:image/png;base64,{p['saliency']}'>"
                       "<figcaption>saliency</figcaption></figure>")
        out.append("</div>")
        out.append(f"<img class='plot' alt='frame importance' src='data:image/png;base64,"
                   f"{importance_plot(gc.frame_importance, v.window_times, key)}'>")
    out.append("<h2>What the pictures mean</h2><div class='note'>" + "".join(f"<p>{esc(t)}</p>" for t in meaning(model.config))
               + "</div>")
    out.append("<h2>The model</h2><table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                                                   for k, v in model_card(model, map_precision)) + "</table>")
    out.append("<h2>Events</h2>")
    if events:
        out.append("<table><tr><th>event</th><th>time (s)</th><th>frame</th><th>score</th><th>class</th></tr>")
        for e in events:
            out.append(f"<tr><td>{esc(str(e.get('type')))}</td><td>{e.get('time', '')}</td><td>{e.get('frame', '')}"
                       f"</td><td>{e.get('score', '')}</td><td>{esc(str(e.get('class', '')))}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>No alert events.</p>")
    out.append("<h2>Files</h2><table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                                                for k, v in files.items()) + "</table></body></html>")
    return "\n".join(out)


def alert_events(results: list) -> list[dict]:
    """Alert start and end rows from the per-window results."""
    rows = []
    for r in results:
        if r.event in ("start", "end"):
            rows.append({"type": f"alert {r.event}", "time": round(r.time, 2), "frame": r.frame_index,
                         "score": round(r.score, 3), "class": r.class_name})
    return rows


def write_report(model: CRNN, video: str, out_html: str, threshold: float = 0.5, alert: str = "3/5",
                 stride: int = 2, fps: float | None = None, max_alerts: int = 5, events: str | None = None,
                 results: list | None = None, map_precision: str | None = "fp32") -> dict:
    """Score ``video`` as a stream, explain its alerts and write the report; returns a summary.
    Scores use the model's precision, maps ``map_precision`` (default fp32: the maps are evidence)."""
    from .stream import Detector

    det = Detector(model, fps=fps, stride=stride, threshold=threshold, alert=alert, events=events)
    if results is None:
        results = list(det.run(video))
    if not results:
        from .video import VideoError
        raise VideoError(f"{video}: too short for one window of {det.window} frames at {det.fps:g} fps")
    views = review_windows(model, video, results, det.fps, det.window, max_alerts, map_precision)
    files = {"video": os.path.abspath(video), "checkpoint": getattr(model, "checkpoint_path", "in memory")}
    if events:
        files["events"] = os.path.abspath(events)
    page = render_html(video, model, results, views, threshold, f"{det.k}/{det.n}", alert_events(results), files,
                       map_precision)
    with atomic_path(out_html) as part, open(part, "w", encoding="utf-8") as f:
        f.write(page)
    return {"report": out_html, "windows": len(results), "alerts": sum(v.title.startswith("Alert") for v in views),
            "peak_score": max(r.score for r in results), "views": views, "results": results}
