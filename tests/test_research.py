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
