"""research/ stays apart from the product: not installed, no machine's paths, its scripts start, and
the package's training loop trains their heads."""
import json
import os
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..")
RESEARCH = os.path.join(ROOT, "research")
SCRIPTS = sorted(f for f in os.listdir(RESEARCH) if f.endswith(".py") and f not in ("common.py", "training.py"))
# an absolute path of one machine: /work/..., /tmp/..., /home/..., /root/... (not "a/tmp" or "x/work")
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(work|tmp|home|root)(/|\b)")


def test_no_machine_paths_in_research():
    hits = []
    for name in sorted(os.listdir(RESEARCH)):
        path = os.path.join(RESEARCH, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if MACHINE_PATH.search(line):
                    hits.append(f"{name}:{n}: {line.strip()}")
    assert not hits, "absolute machine paths:\n" + "\n".join(hits)


def test_the_path_check_catches_machine_paths():
    assert MACHINE_PATH.search('DATA = "/work/shared/data/surv-fight"')
    assert MACHINE_PATH.search("caches go to /tmp/xvad-exp")
    assert MACHINE_PATH.search("/root")
    assert not MACHINE_PATH.search("runs/research/tmp/x and ~/work/y")


def test_research_is_not_installed():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == ["src"]
    from setuptools import find_packages

    packages = find_packages(where=os.path.join(ROOT, "src"))
    assert "xvad" in packages and not any(p.split(".")[-1] == "research" for p in packages)
    import xvad

    assert not os.path.exists(os.path.join(os.path.dirname(xvad.__file__), "research"))


DRIVER = """
import json, runpy, sys
sys.path.insert(0, sys.argv[1])
out = {}
for script in sys.argv[2:]:
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(f"{sys.path[0]}/{script}", run_name="__main__")
        out[script] = {"code": 0}
    except SystemExit as exc:
        out[script] = {"code": exc.code or 0}
    except ModuleNotFoundError as exc:
        out[script] = {"missing": exc.name}
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def help_runs():
    """Every script's ``--help`` in one subprocess (torch is imported once)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", DRIVER, RESEARCH, *SCRIPTS], capture_output=True, text=True,
                         env=env, timeout=300)
    line = [x for x in run.stdout.splitlines() if x.startswith("RESULT")]
    assert line, run.stderr[-2000:]
    return json.loads(line[-1][len("RESULT"):])


@pytest.mark.parametrize("script", SCRIPTS)
def test_research_script_help(help_runs, script):
    result = help_runs[script]
    if "missing" in result:
        pytest.skip(f"{script} needs the optional package {result['missing']}")
    assert result["code"] == 0


def _load(name):
    sys.path.insert(0, RESEARCH)
    try:
        return runpy.run_path(os.path.join(RESEARCH, name), run_name=f"research_{name[:-3]}")
    finally:
        sys.path.remove(RESEARCH)


def test_heads_match_the_package_pooled_head(one_torch_thread):
    """head_cv's heads on equal streams compute what CRNN(temporal="pool") computes, with its weights."""
    from xvad.models import CRNN

    torch.manual_seed(0)
    model = CRNN("tiny", input="motion+flow", temporal="pool", classes=["a", "b"]).eval()
    d = model.feature_dim // 2
    heads = _load("head_cv.py")["Heads"]([d, d], ["a", "b"])
    for head in model.head:
        head[0].running_mean.normal_()
        head[0].running_var.uniform_(0.5, 2)
    heads.heads.load_state_dict(model.head.state_dict())
    heads.eval()
    feats = torch.randn(4, 6, 2 * d)
    with torch.no_grad():
        assert torch.allclose(heads.classify(feats).exp(), model.classify(feats).softmax(-1), atol=1e-6)


def test_head_cv_end_to_end_on_separable_features(tmp_path, capsys, monkeypatch, one_torch_thread):
    """head_cv.py, through xvad.train's loop, on per-frame features where one direction separates the
    classes: every held-out clip is right."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    rows = ["clip,label,group"]
    for cls in ["noFight", "fight"]:
        (data / cls).mkdir(parents=True)
        for k in range(40):
            name = f"{cls}{k:02d}"
            (data / cls / f"{name}.mp4").write_bytes(b"")
            rows.append(f"{name},{cls},g{k % 8}")
    (data / "groups.csv").write_text("\n".join(rows) + "\n")
    from xvad.data import load_dataset

    labels = load_dataset(str(data)).labels
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(labels), 8, 12)).astype(np.float32)
    x[:, :, :4] += 2.0 * (2 * labels[:, None, None] - 1)
    (cache / "pooled").mkdir(parents=True)
    np.save(cache / "pooled" / "toy__max.npy", x)
    main = _load("head_cv.py")["main"]
    monkeypatch.setattr(sys, "argv", ["head_cv.py", str(cache), "--data", str(data), "toy__max",
                                      "--seeds", "0", "--epochs", "40"])
    sys.path.insert(0, RESEARCH)
    try:
        main()
    finally:
        sys.path.remove(RESEARCH)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    accuracy = float(re.search(r"accuracy (\S+)", line).group(1))
    assert accuracy == 1.0, line


def test_head_cv_without_data_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XVAD_DATA"}
    env["PYTHONPATH"] = os.path.join(ROOT, "src")
    run = subprocess.run([sys.executable, os.path.join(RESEARCH, "head_cv.py"), str(tmp_path), "x__max"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert "--data" in run.stderr.strip().splitlines()[-1] and "XVAD_DATA" in run.stderr


def _in_research(name):
    """A research module that imports its neighbours (common.py, head_cv.py)."""
    sys.path.insert(0, RESEARCH)
    try:
        return _load(name)
    finally:
        sys.path.remove(RESEARCH)


def _box_sums(energy, side):
    """Every side x side window's sum, by cumulative sums (brute-force reference)."""
    c = np.pad(energy.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[side:, side:] - c[:-side, side:] - c[side:, :-side] + c[:-side, :-side]


def test_motion_crop_holds_the_moving_pixels_and_no_smaller_side_would():
    tiles = _in_research("tiles.py")
    energy = np.zeros((360, 640), np.float32)
    energy[20:70, 500:560] = 3        # a small moving region in a corner ...
    energy[300:320, 30:50] = 1        # ... and a little motion far from it
    top, left, side, held = tiles["motion_box"](energy, 0.67)
    assert side == 224                # the floor: the corner region alone holds 9000 / 9400
    assert 0 <= top <= 360 - side and 0 <= left <= 640 - side
    inside = energy[top:top + side, left:left + side].sum()
    assert inside == 9000 and abs(held - 9000 / 9400) < 0.02
    # centred on the region as far as the frame allows: its centre (row 44.5, column 529.5) would
    # put the square at row -67 and column 418; the frame stops it at row 0 and column 640 - 224
    assert (top, left) == (0, 416)
    energy[:] = 0
    energy[150:200, 300:360] = 1      # away from the edges: centred exactly
    top, left, side, _ = tiles["motion_box"](energy, 0.67)
    assert (top, left, side) == (round(174.5 - 111.5), round(329.5 - 111.5), 224)
    # two equal regions far apart: no side below the short side holds two thirds
    energy = np.zeros((360, 640), np.float32)
    energy[10:40, 10:40] = 1
    energy[320:350, 600:630] = 1
    top, left, side, held = tiles["motion_box"](energy, 0.67)
    for smaller in range(224, side, 8):
        assert _box_sums(energy, smaller).max() < 0.67 * energy.sum()
    assert side == 360 and held == 0.5
    # nothing moves: the centre square
    assert tiles["motion_box"](np.zeros((360, 640), np.float32), 0.67) == (0, 140, 360, 0.0)


def test_tiles_cover_the_frame_with_squares_of_the_short_side():
    tile_boxes = _in_research("tiles.py")["tile_boxes"]
    assert tile_boxes(720, 1280) == [(0, 0, 720), (0, 560, 720)]
    assert tile_boxes(1280, 720) == [(0, 0, 720), (560, 0, 720)]
    assert tile_boxes(360, 360) == [(0, 0, 360)]
    assert tile_boxes(100, 290) == [(0, 0, 100), (0, 95, 100), (0, 190, 100)]
    for h, w in [(314, 640), (240, 352), (1080, 1920), (100, 290)]:
        covered = np.zeros((h, w), bool)
        for top, left, side in tile_boxes(h, w):
            assert top + side <= h and left + side <= w
            covered[top:top + side, left:left + side] = True
        assert covered.all() or (w - covered.sum(1).max()) / w < 0.03   # 640x314: 628 of 640 columns


def test_score_max_over_places_is_the_largest_place_probability(one_torch_thread):
    """tiles_cv's MaxOver: p(fight) of the clip = the largest of its places' p(fight), each place
    scored by the same two-stream heads."""
    max_over = _in_research("tiles_cv.py")["MaxOver"]
    torch.manual_seed(0)
    model = max_over([4, 4], 3, ["noFight", "fight"]).eval()
    places = [torch.randn(5, 6, 8) for _ in range(3)]
    with torch.no_grad():
        out = model(torch.cat(places, 2)).exp()
        each = torch.stack([model.inner(p).exp()[:, 1] for p in places])
    assert torch.allclose(out[:, 1], each.max(0).values, atol=1e-6)
    assert torch.allclose(out.sum(1), torch.ones(5), atol=1e-5)
