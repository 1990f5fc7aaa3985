"""Reference outputs of the shipped model, saved when it was last replaced (192 px, each frame's square
around what moved, streams made from frames shrunk first, batch norms folded for inference), so that
refactoring cannot change its scores.

Run from the repository root with ../shared beside it:
    .venv/bin/python tests/data/make_golden.py
It writes tests/data/golden.json: the window scores of the demo footage scored as streams (the
detector's defaults) and p(fight) of every surv-fight clip (``xvad predict``), in the default
precision and in fp32. tests/test_golden.py compares the current code with it.
"""
from __future__ import annotations

import json
import os
import sys

import torch

import xvad
from xvad.evaluate import predict
from xvad.stream import Detector

ROOT = os.environ.get("XVAD_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def bf16_kernels() -> str:
    """Which bf16 kernels this CPU runs (oneDNN picks them by what the CPU has), as tests/conftest.py names
    them: the saved bf16 outputs are compared strictly on CPUs of the same kind only."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import bf16_kernels as kind

    return kind()


def clips(name: str) -> list[str]:
    base = os.path.join(SHARED, name)
    return sorted(os.path.relpath(os.path.join(d, f), base) for d, _, fs in os.walk(base)
                  for f in fs if f.endswith(".mp4"))


def main() -> int:
    torch.manual_seed(0)
    out: dict = {"xvad_version": xvad.__version__, "torch": torch.__version__, "bf16_kernels": bf16_kernels()}
    for precision in ("auto", "fp32"):
        model = xvad.load_model().set_precision(precision)
        demo = {}
        for rel in clips("demo-footage"):
            det = Detector(model, stride=2)
            demo[rel] = [[r.frame_index, round(r.time, 6), r.score] for r in
                         det.run(os.path.join(SHARED, "demo-footage", rel))]
        out[precision] = {"demo_windows": demo}
        if precision == "fp32":   # fp32 predictions on all 232 clips take several times longer; bf16 covers them
            continue
        paths = [os.path.join(SHARED, "surv-fight", rel) for rel in clips("surv-fight")]
        preds = {os.path.relpath(r["video"], os.path.join(SHARED, "surv-fight")): r["scores"]["fight"]
                 for r in predict(model, paths, progress=True)}
        out[precision]["surv_fight"] = preds
        print(precision, "done", file=sys.stderr)
    with open(os.path.join(ROOT, "tests", "data", "golden.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
