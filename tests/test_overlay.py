"""The console's overlay files of an alert (explanation.json, maps.png, key_N.jpg), checked against
independent references: Grad-CAM run directly on each window, the clip's own frame timestamps read with
PyAV, the decision report's frame importance and votes, the threshold boundary of each map, and the shape
the console's design gives for the JSON."""
from __future__ import annotations

import json
import os

import av
import cv2
import numpy as np
import pytest

import xvad
from xvad.explain import explain
from xvad.explain_video import read_window
from xvad.render import VideoWriter
from xvad.render.place import LOW, OPACITY, Placement, whole_frame
from xvad.report import write_report
from xvad.service.overlay import windows_around, write_overlay
from xvad.stream import Detector
from xvad.video import preprocess, read_frames, shrink_images
from xvad.video.crop import Region

from conftest import SURV_FIGHT

FIGHT = os.path.join(SURV_FIGHT, "fight", "fi003.mp4")
CALM = os.path.join(SURV_FIGHT, "noFight", "nofi002.mp4")
DEMO = os.path.join(SURV_FIGHT, "..", "demo-footage", "fight", "fi089.mp4")
FPS = 8.0

real = pytest.mark.skipif(not (os.path.exists(FIGHT) and os.path.exists(CALM)),
                          reason="surv-fight footage (fi003, nofi002) not found")


# -- the pieces, by hand ----------------------------------------------------------------------------------
def test_windows_tile_the_clip_on_the_grid_of_the_peak_window():
    # 73 frames, windows of 16, the peak window from frame 20: the grid starts at 4 and 20 (and -12, 36,
    # 52, 68); the first and the last windows are read inside the clip
    every = [(0, 0, 4), (4, 4, 20), (20, 20, 36), (36, 36, 52), (52, 52, 68), (57, 68, 73)]
    assert windows_around(20, 73, 16, 8) == every
    assert windows_around(20, 73, 16, 6) == every
    assert windows_around(20, 73, 16, 3) == [(4, 4, 20), (20, 20, 36), (36, 36, 52)]   # nearest the peak
    assert windows_around(20, 73, 16, 4) == [(0, 0, 4), (4, 4, 20), (20, 20, 36), (36, 36, 52)]  # earlier first
    assert windows_around(0, 16, 16, 8) == [(0, 0, 16)]
    assert windows_around(32, 48, 16, 8) == [(0, 0, 16), (16, 16, 32), (32, 32, 48)]
    with pytest.raises(ValueError):
        windows_around(0, 15, 16, 8)


@pytest.mark.parametrize("crop,height,width", [("center", 36, 60), ("center", 60, 36), ("pad", 36, 60),
                                                ("full", 36, 60)])
def test_placement_puts_map_pixels_where_the_model_saw_them(crop, height, width):
    """A bright column of the frame lands in some column of the model's input; the placement maps that
    input column back to the frame column (in 0..1 of the frame)."""
    size = 24
    place = Placement.of({"size": size, "crop": crop}, height, width)
    for column in (20, 30, 40) if width > height else (10, 18, 26):
        frame = np.zeros((1, height, width, 3), np.uint8)
        frame[0, :, column] = 255
        x = preprocess(frame, size, [0, 0, 0], [1, 1, 1], crop=crop)[0, 0].numpy()
        seen = x.sum(0)
        at = float((seen * np.arange(size)).sum() / seen.sum())       # the column's centre in the input
        u = place.points([[at, size / 2]])[0, 0]
        assert u * width - 0.5 == pytest.approx(column, abs=0.6)


@pytest.mark.parametrize("region", [Region(10, 70, 40, 40), Region(0, 0, 60, 60), Region(20, 35, 24, 24)])
def test_placement_of_a_motion_crop_square(region):
    """With the motion crop, a frame's square (its region) goes to the model's input: a bright column
    inside it lands in some input column, which the placement maps back to the frame column; the tile (at
    the centre crop's scale) holds the map inside the square only."""
    height, width, size = 60, 120, 24
    config = {"size": size, "crop": "motion", "shrink": "first"}
    place = Placement.of(config, height, width, region)
    for column in range(region.left + 3, region.left + region.width - 3, 7):
        frame = np.zeros((1, height, width, 3), np.uint8)
        frame[0, :, column] = 255
        x = shrink_images(frame, config, [region])[0, ..., 0].astype(float)
        seen = x.sum(0)
        at = float((seen * np.arange(size)).sum() / seen.sum())
        u = place.points([[at, size / 2]])[0, 0]
        # a one-pixel column lands in one input pixel when the square shrinks: half an input pixel off at most
        assert u * width - 0.5 == pytest.approx(column, abs=max(0.6, 0.5 * region.width / size + 0.05))
    tile, cover = place.tile(np.ones((size, size), np.float32))
    assert tile.shape == (size, size * 2)                    # the frame at the centre crop's scale
    k = size / height
    inside = cover > 0.5
    rows, cols = np.nonzero(inside)
    assert rows.min() == pytest.approx(region.top * k, abs=1) and cols.min() == pytest.approx(region.left * k, abs=1)
    assert rows.max() + 1 == pytest.approx((region.top + region.height) * k, abs=1)
    assert cols.max() + 1 == pytest.approx((region.left + region.width) * k, abs=1)
    assert not tile[~inside].any() or tile[~inside].max() < 0.5


def test_whole_frame_draws_the_map_inside_the_square_only():
    """The report's whole-frame picture: a grey frame, a map that is 1 everywhere in the model's view: the
    colour goes inside the frame's square only, and its outline is drawn on the square's edge."""
    height, width, size = 90, 160, 24
    region = Region(20, 100, 48, 48)
    place = Placement.of({"size": size, "crop": "motion"}, height, width, region)
    frame = np.full((height, width, 3), 128, np.uint8)
    out = whole_frame(frame, np.ones((size, size), np.float32), [], place, box=True).astype(int)
    changed = np.abs(out - 128).sum(-1) > 0
    inner = changed[region.top + 3:region.top + region.height - 3, region.left + 3:region.left + region.width - 3]
    assert inner.all()                                             # the map, over the whole square
    outside = np.ones_like(changed)
    outside[region.top - 2:region.top + region.height + 2, region.left - 2:region.left + region.width + 2] = False
    assert not changed[outside].any()                              # nothing beyond it and its outline


# -- a real alert clip, as the service records it ----------------------------------------------------------
@pytest.fixture(scope="module")
def alert(tmp_path_factory):
    """A fight between calm footage at 8 fps, written as the service writes an alert's clip; the report
    and the overlay as the report worker writes them, and the detector's windows on the clip."""
    folder = str(tmp_path_factory.mktemp("alert"))
    calm, _ = read_frames(CALM, fps=FPS)
    fight, _ = read_frames(FIGHT, fps=FPS)
    clip = os.path.join(folder, "clip.mp4")
    with VideoWriter(clip, FPS) as w:
        for frame in np.concatenate([calm[:12], fight, calm[:16]]):
            w.write(frame)
    model = xvad.load_model()
    own = model.precision
    summary = write_report(model, clip, os.path.join(folder, "report.html"), threshold=0.5, alert="3/5", stride=2,
                           fps=FPS, map_precision="fp32")
    files = write_overlay(model, clip, folder, summary["results"], 0.5, views=summary["views"], fps=FPS)
    assert model.precision == own                                  # the maps' fp32 was undone
    with open(os.path.join(folder, files["explanation"])) as f:
        data = json.load(f)
    return {"folder": folder, "clip": clip, "model": model, "files": files, "json": data, "summary": summary}


def clip_times(path: str) -> list[float]:
    """The presentation times of the clip's frames, from its packets (PyAV), from the stream's start."""
    with av.open(path) as c:
        s = c.streams.video[0]
        start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        return sorted(float(p.pts * p.time_base) - start for p in c.demux(s) if p.size)


def tiles(folder: str, data: dict) -> list[np.ndarray]:
    """The sprite sheet cut into its tiles, RGBA."""
    sheet = cv2.cvtColor(cv2.imread(os.path.join(folder, data["sprite"]["file"]), cv2.IMREAD_UNCHANGED),
                         cv2.COLOR_BGRA2RGBA)
    w, h, c = data["sprite"]["tile_width"], data["sprite"]["tile_height"], data["sprite"]["columns"]
    assert sheet.shape[1] == c * w and sheet.shape[0] % h == 0
    return [sheet[r * h:(r + 1) * h, k * w:(k + 1) * w] for i in range(len(data["frames"]))
            for r, k in [divmod(i, c)]]


_references: dict = {}


def reference(model, clip: str, start: float) -> object:
    """Grad-CAM of the window from ``start``, run directly, in fp32 (the model's precision restored), its
    times and where each frame's map lies in the frame (the motion crop's squares, chosen by the clip
    loader)."""
    if (clip, start) not in _references:
        _references[(clip, start)] = _reference(model, clip, start)
    return _references[(clip, start)]


def _reference(model, clip: str, start: float) -> object:
    own = model.config["precision"]
    model.set_precision("fp32")
    try:
        win = read_window(model, clip, start=start, frames=16, fps=FPS)
        e = explain(model, win.x, method="gradcam", target=1)
    finally:
        model.set_precision(own)
    return e, win.times, win.places


def check_tile(tile: np.ndarray, map_: np.ndarray, place: Placement, box: list[float]) -> None:
    """A sprite tile holds the map where ``place`` puts it, transparent elsewhere: nothing outside the
    square (one pixel of blending aside), the strongest opacity where the map peaks, the box the JSON
    gives that square's."""
    h, w = tile.shape[:2]
    x0, y0, x1, y1 = place.box(h, w)
    assert box == pytest.approx([x0 / w, y0 / h, x1 / w, y1 / h], abs=1e-3)
    outside = np.ones((h, w), bool)
    outside[max(0, int(np.floor(y0)) - 1):int(np.ceil(y1)) + 1, max(0, int(np.floor(x0)) - 1):int(np.ceil(x1)) + 1] = 0
    assert not tile[outside].any()                                   # transparent where the model did not look
    alpha = tile[..., 3].astype(float)
    assert alpha.max() == pytest.approx(np.clip((map_.max() - LOW) / (1 - LOW), 0, 1) * OPACITY * 255, abs=3)
    py, px = np.unravel_index(int(np.argmax(map_)), map_.shape)
    u, v = place.points([[px, py]])[0]
    near = alpha[max(0, int(v * h) - 3):int(v * h) + 4, max(0, int(u * w) - 3):int(u * w) + 4]
    assert near.max() >= alpha.max() - 3                             # the map's peak is where it should be


def check_shape(d: dict) -> None:
    """explanation.json has the shape the console's design gives."""
    number = (int, float)
    assert d["version"] == 1
    c = d["clip"]
    assert c["file"].endswith(".mp4") and all(isinstance(c[k], number) and c[k] > 0
                                            for k in ("fps", "frames", "duration", "width", "height"))
    assert isinstance(c["frames"], int) and isinstance(c["width"], int) and isinstance(c["height"], int)
    assert 0 <= d["threshold"] <= 1 and isinstance(d["class_name"], str) and isinstance(d["class_index"], int)
    assert d["model_fps"] > 0 and isinstance(d["window"], int) and d["window"] > 0
    assert d["streams"] and all(isinstance(s, str) for s in d["streams"])
    assert d["windows"] and all(set(w) == {"start", "time", "score"} and 0 <= w["score"] <= 1 and
                                w["start"] <= w["time"] for w in d["windows"])
    assert d["frames"]
    for i, f in enumerate(d["frames"]):
        assert {"t", "importance", "tile", "contours"} <= set(f) and f["tile"] == i
        assert 0 <= f["importance"] <= 1 and f["t"] >= 0
        for line in f["contours"]:
            assert len(line) >= 4 and line[0] == line[-1]            # closed
            assert all(len(p) == 2 and 0 <= p[0] <= 1 and 0 <= p[1] <= 1 for p in line)
    ts = [f["t"] for f in d["frames"]]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    s = d["sprite"]
    assert set(s) == {"file", "columns", "tile_width", "tile_height"} and s["file"] == "maps.png"
    for k in d["key_frames"]:
        assert k["t"] in ts and k["file"].startswith("key_") and k["file"].endswith(".jpg")
        assert 0 <= k["importance"] <= 1
    assert all(set(v) == {"stream", "p", "agrees"} and 0 <= v["p"] <= 1 and isinstance(v["agrees"], bool)
               for v in d["votes"])
    assert isinstance(d["agree"], bool)
    assert set(d["peak"]) == {"score", "time"} and 0 <= d["peak"]["score"] <= 1


@real
def test_json_has_the_designed_shape_and_names_every_file(alert):
    d, folder = alert["json"], alert["folder"]
    check_shape(d)
    files = alert["files"]
    assert files["explanation"] == "explanation.json" and files["maps"] == "maps.png"
    assert [files[f"key_{i}"] for i in range(len(d["key_frames"]))] == [k["file"] for k in d["key_frames"]]
    assert len(d["key_frames"]) == 4
    for name in files.values():
        assert os.path.isfile(os.path.join(folder, name)) and not os.path.exists(os.path.join(folder, name + ".part"))
    for k in d["key_frames"]:   # the clip's frames at full size, the map and contours drawn on them
        image = cv2.imread(os.path.join(folder, k["file"]))
        assert image.shape[:2] == (d["clip"]["height"], d["clip"]["width"])
    assert d["class_name"] == "fight" and d["class_index"] == 1 and d["streams"] == ["motion", "flow"]
    assert d["clip"]["frames"] == len(clip_times(alert["clip"])) == 12 + 19 + 16


@real
def test_every_frame_of_the_clip_has_a_map_at_its_own_time(alert):
    """The clip is at the model's rate, so every frame the detector scored is a model frame; their times
    are the clip's frame timestamps (what the browser's currentTime reports)."""
    d = alert["json"]
    results = alert["summary"]["results"]
    times = clip_times(alert["clip"])
    assert [f["t"] for f in d["frames"]] == pytest.approx(times, abs=1e-9)   # also past the last scored window
    assert results[-1].frame_index + 1 < len(times)
    assert d["explained"] == pytest.approx([times[0], times[-1]])
    # the windows: the detector's scores over the clip, run again here
    again = list(Detector(xvad.load_model(), fps=FPS, stride=2, threshold=0.5, alert="3/5").run(alert["clip"]))
    assert [w["start"] for w in d["windows"]] == pytest.approx([r.start_time for r in again])
    assert [w["time"] for w in d["windows"]] == pytest.approx([r.time for r in again])
    assert [w["score"] for w in d["windows"]] == pytest.approx([r.score for r in again], abs=1e-6)
    top = max(again, key=lambda r: r.score)
    assert d["peak"] == pytest.approx({"score": top.score, "time": top.time}, abs=1e-6)


@real
def test_maps_are_gradcam_of_each_window_and_importance_is_the_reports(alert):
    d, model = alert["json"], alert["model"]
    results = alert["summary"]["results"]
    peak = max(results, key=lambda r: r.score)
    times = [f["t"] for f in d["frames"]]
    plan = windows_around(peak.start_frame, len(times), 16, 8)
    cut = tiles(alert["folder"], d)
    cfg = model.config
    s = cfg["size"]
    assert (d["sprite"]["tile_width"], d["sprite"]["tile_height"]) == (round(480 * s / 360), s)
    for read, first, end in plan:
        e, ts, places = reference(model, alert["clip"], times[read])
        assert list(ts[first - read:end - read]) == pytest.approx(times[first:end])
        imp = relative(e.frame_importance)
        for i in range(first, end):
            j = i - read
            check_tile(cut[i], e.maps[j], places[j], d["frames"][i]["box"])
            assert d["frames"][i]["importance"] == pytest.approx(imp[j], abs=1e-6)
    # the peak window: the report's own importance, key frames and votes
    view = next(v for v in alert["summary"]["views"] if v.window_times[0] == times[peak.start_frame])
    gc = view.explanations["gradcam"]
    at = peak.start_frame
    assert [f["importance"] for f in d["frames"][at:at + 16]] == pytest.approx(list(relative(gc.frame_importance)),
                                                                               abs=1e-6)
    best = sorted(np.argsort(-gc.frame_importance)[:4].tolist())
    assert [k["t"] for k in d["key_frames"]] == pytest.approx([times[at + i] for i in best])
    assert [v["stream"] for v in d["votes"]] == [name for name, _ in view.votes] == ["motion", "flow"]
    assert [v["p"] for v in d["votes"]] == pytest.approx([p for _, p in view.votes])
    leans = [p > 0.5 for _, p in view.votes]
    assert d["agree"] == (len(set(leans)) == 1)
    assert [v["agrees"] for v in d["votes"]] == [lean == (peak.score > 0.5) for lean in leans]


def relative(importance: np.ndarray) -> np.ndarray:
    """Importance as a share of the window's largest; a window where no frame raised the score (every value
    zero or below, which happens away from the peak) is all zero rather than 0/0."""
    raw = np.clip(np.asarray(importance, dtype=np.float64), 0, None)
    return raw / raw.max() if raw.max() > 0 else np.zeros_like(raw)


def on_boundary(m: np.ndarray, px: float, py: float, kept_min: float, dropped_max: float) -> bool:
    """Whether the point lies (within the JSON's rounding) on a grid edge of map ``m`` between a kept pixel
    centre and a dropped one, where the map interpolates linearly to a level between the two classes."""
    tol = 0.05                                    # map pixels: the rounding of the coordinates to 1e-4 of the frame
    # a line past the frame's edge (between the border pixels and the padding) is cut back to the edge:
    # there it must run along kept border pixels
    for along, (fixed, moving), size in ((0, (py, px), m.shape[0]), (1, (px, py), m.shape[1])):
        for edge, border in ((0.5, 1), (size - 1.5, size - 2)):
            if abs(fixed - edge) <= tol:
                lo, hi = max(1, int(np.floor(moving)) - 1), min(size - 2, int(np.ceil(moving)) + 1)
                line = m[border, lo:hi + 1] if along == 0 else m[lo:hi + 1, border]
                if (line >= kept_min).any():
                    return True
    for along_y in (True, False):                 # on a vertical edge (x whole), or a horizontal one
        fixed, moving = (px, py) if along_y else (py, px)
        if abs(fixed - round(fixed)) > tol:
            continue
        c = int(round(fixed))
        for lo in {int(np.floor(moving - tol)), int(np.floor(moving + tol))}:   # near a pixel centre: either edge
            a, b = (m[lo, c], m[lo + 1, c]) if along_y else (m[c, lo], m[c, lo + 1])
            v = a + float(np.clip(moving - lo, 0, 1)) * (b - a)
            slack = abs(b - a) * tol + 1e-6
            if (a >= kept_min) != (b >= kept_min) and dropped_max - slack <= v <= kept_min + slack:
                return True
    return False


def top_tenth(maps: np.ndarray) -> tuple[float, float]:
    """The smallest value kept and the largest dropped when the top 10 % of a window's map values are
    kept, a tie at the cut kept or dropped whole, whichever lands nearer 10 % (Grad-CAM maps can be
    mostly exact zeros: then the zeros are dropped and every positive value kept)."""
    values = np.sort(maps.ravel())[::-1]
    k = round(values.size * 0.10)
    cut = values[k - 1]
    above, at_least = int((values > cut).sum()), int((values >= cut).sum())
    if above > 0 and abs(above - k) <= abs(at_least - k):
        return float(values[values > cut].min()), float(cut)
    return float(cut), float(values[values < cut].max())


@real
def test_contour_points_lie_on_the_threshold_of_the_window(alert):
    """Every contour point, taken back to map pixels, lies on a grid edge between a pixel in the top 10 %
    of its window's map values and one outside them, where the map interpolates to the level between."""
    d, model = alert["json"], alert["model"]
    results = alert["summary"]["results"]
    peak = max(results, key=lambda r: r.score)
    times = [f["t"] for f in d["frames"]]
    checked = 0
    for read, first, end in windows_around(peak.start_frame, len(times), 16, 8):
        e, _, places = reference(model, alert["clip"], times[read])
        kept_min, dropped_max = top_tenth(e.maps)                 # the cut lies between these
        for i in range(first, end):
            frame = e.maps[i - read]
            place = places[i - read]                                   # where this frame's map lies
            # outside the map: its floor, dropped; a frame kept whole (its floor above the cut) is closed
            # by a fill a unit below the level, as the contour code closes lines along the border
            fill = frame.min() if frame.min() < kept_min else dropped_max - 1.0
            m = np.pad(frame, 1, constant_values=fill)
            for line in d["frames"][i]["contours"]:
                p = np.asarray(line)
                x = (p[:, 0] * place.width - place.left) / place.step - 0.5 + 1     # padded map pixels
                y = (p[:, 1] * place.height - place.top) / place.step - 0.5 + 1
                for px, py in zip(x, y):
                    assert on_boundary(m, px, py, kept_min, dropped_max), (px, py)
                    checked += 1
    assert checked > 50


@pytest.mark.skipif(not os.path.exists(DEMO), reason="demo footage not found")
def test_a_clip_at_another_rate_and_shape(tmp_path):
    """A 30 fps, 848 x 480 clip: the model's frames are the clip frames nearest each 1/8 s tick, the tiles
    are the frame's shape at the model's scale, and without the report's views the peak is explained here."""
    model = xvad.load_model()
    results = list(Detector(model, fps=FPS, stride=2, threshold=0.5, alert="3/5").run(DEMO))
    files = write_overlay(model, DEMO, str(tmp_path), results, 0.5, fps=FPS)
    with open(tmp_path / files["explanation"]) as f:
        d = json.load(f)
    check_shape(d)
    times = clip_times(DEMO)
    ticks = [k / FPS for k in range(int(times[-1] * FPS + 1e-9) + 1)]        # every tick up to the last frame
    nearest = [min(times, key=lambda t: (abs(t - tick), t)) for tick in ticks]
    assert [f["t"] for f in d["frames"]] == pytest.approx(nearest, abs=1e-9)
    s = model.config["size"]
    assert (d["sprite"]["tile_width"], d["sprite"]["tile_height"]) == (round(848 * s / 480), s)
    e, _, places = reference(model, DEMO, d["frames"][0]["t"])
    cut = tiles(str(tmp_path), d)
    check_tile(cut[5], e.maps[5], places[5], d["frames"][5]["box"])
    assert [v["stream"] for v in d["votes"]] == ["motion", "flow"]
    x = read_window(model, DEMO, start=d["frames"][0]["t"], frames=16, fps=FPS).x
    p = model.stream_proba(x)[:, 1].tolist()
    assert [v["p"] for v in d["votes"]] == pytest.approx(p, abs=1e-6)


@pytest.mark.skipif(not os.path.exists(DEMO), reason="demo footage not found")
def test_the_report_worker_writes_and_records_the_overlay_files(tmp_path):
    """The service's background worker writes the report and, beside it, the overlay files, and hands
    every name to its callback (which merges them into the alert's files)."""
    import shutil

    from xvad.service.media import ReportJob, ReportWorker

    clip = str(tmp_path / "clip.mp4")
    shutil.copy(DEMO, clip)
    done: list[tuple] = []
    worker = ReportWorker(lambda *args: done.append(args))
    assert worker.submit(ReportJob("u1", "door", clip, str(tmp_path), xvad.load_model(), 0.5, "3/5", 2, FPS))
    worker.close(timeout=600)
    assert len(done) == 1
    uid, state, files, error = done[0]
    assert (uid, state, error) == ("u1", "complete", None)
    with open(tmp_path / "explanation.json") as f:
        d = json.load(f)
    check_shape(d)
    keys = {f"key_{i}": k["file"] for i, k in enumerate(d["key_frames"])}
    assert files == {"report": "report.html", "explanation": "explanation.json", "maps": "maps.png", **keys}
    assert all(os.path.isfile(tmp_path / name) for name in files.values())
    assert d["clip"]["file"] == "clip.mp4" and d["model_fps"] == FPS
