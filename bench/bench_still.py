"""Skipping the backbone on frames in which nothing moves (``Detector(skip_still=True)``): how often it
skips, how much it changes the window scores and the alerts, and what it saves, on real footage.

Every clip of ``../shared/data/surv-fight`` and ``../shared/data/demo-footage`` is scored as a stream by
the shipped model twice in turns, with and without skipping (bf16, stride 2); the largest change of a
window score, the alerts (k/n = 3/5 at the model's threshold) that appear or vanish, the share of
frames skipped and the wall-time ratio are written to ``bench/results/still.json``.

Usage: python bench/bench_still.py [--limit N] [--precision auto]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save  # noqa: E402

import xvad  # noqa: E402
from xvad.stream import Detector, alert_spans  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def clips() -> list[str]:
    return sorted(glob.glob(os.path.join(SHARED, "surv-fight", "*", "*.mp4"))
                  + glob.glob(os.path.join(SHARED, "demo-footage", "*", "*.mp4")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N clips (a quick look)")
    ap.add_argument("--precision", default="auto")
    a = ap.parse_args()
    paths = clips()[: a.limit]
    if not paths:
        sys.exit(f"bench_still: no clips under {SHARED}")
    model = xvad.load_model().set_precision(a.precision)
    threshold = float(model.extra.get("threshold", 0.5))
    rows, seconds = [], {False: 0.0, True: 0.0}
    for i, path in enumerate(paths):
        scores, skipped, frames = {}, 0, 0
        for skip in ((False, True) if i % 2 == 0 else (True, False)):   # alternate the order
            det = Detector(model, stride=2, skip_still=skip)
            t = time.perf_counter()
            scores[skip] = np.array([r.score for r in det.run(path)])
            seconds[skip] += time.perf_counter() - t
            if skip:
                s = det.summary()
                skipped, frames = s["still_skipped"], s["frames"]
        spans = {k: alert_spans(v, threshold, "3/5") for k, v in scores.items()}
        rows.append({"clip": os.path.relpath(path, SHARED), "frames": frames, "skipped": skipped,
                     "max_change": float(np.abs(scores[True] - scores[False]).max()) if len(scores[True]) else 0.0,
                     "alerts": len(spans[False]), "alerts_skipping": len(spans[True]),
                     "same_alerts": spans[True] == spans[False]})
        print(f"{i + 1}/{len(paths)} {rows[-1]['clip']}: skipped {skipped}/{frames}, "
              f"max change {rows[-1]['max_change']:.2e}", flush=True)
    total = sum(r["frames"] for r in rows)
    out = {"clips": len(rows), "frames": total, "skipped_share": sum(r["skipped"] for r in rows) / max(1, total),
           "max_score_change": max(r["max_change"] for r in rows),
           "clips_with_other_alerts": sum(not r["same_alerts"] for r in rows),
           "seconds_plain": seconds[False], "seconds_skipping": seconds[True],
           "speedup": seconds[False] / max(1e-9, seconds[True]), "load_average": os.getloadavg(),
           "precision": model.precision, "rows": rows}
    print({k: v for k, v in out.items() if k != "rows"})
    print("wrote", save("still", out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
