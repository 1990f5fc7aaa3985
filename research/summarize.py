"""Print a markdown table of every cv.py result (mean ± std over the 5 outer folds, pooled OOF).

Usage: python summarize.py RESULTS_DIR [--errors VARIANT_s0 --meta CACHE/meta.json]
(the second form lists the out-of-fold errors by group; meta.json is written by extract.py)
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from collections import defaultdict

import numpy as np


def fmt(cv, k):
    return f"{cv[k]['mean']:.3f} ± {cv[k]['std']:.3f}" if k in cv else "-"


def table(results_dir: str) -> str:
    rows = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        rows.append(r)
    rows.sort(key=lambda r: (r["seed"], -r["cv"]["roc_auc"]["mean"]))
    out = ["| variant | seed | dim | acc | ROC-AUC | precision | recall | pooled acc | pooled AUC | "
           "acc (optimistic ES) | chosen E*/C per fold | s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cv, p = r["cv"], r["pooled"]
        es = r["cv_optimistic_early_stop"]
        out.append(f"| {r['variant']} | {r['seed']} | {r['dim']} | {fmt(cv, 'accuracy')} | {fmt(cv, 'roc_auc')} | "
                   f"{fmt(cv, 'precision')} | {fmt(cv, 'recall')} | {p['accuracy']:.3f} | {p['roc_auc']:.3f} | "
                   f"{es['accuracy']['mean']:.3f} | {r['chosen']} | {r['seconds']:.0f} |")
    return "\n".join(out)


def errors(results_dir: str, run: str, meta_path: str) -> str:
    with open(os.path.join(results_dir, f"{run}.json")) as f:
        r = json.load(f)
    with open(meta_path) as f:
        meta = json.load(f)
    p = np.array(r["oof_proba"])[:, 1]
    y = np.array(meta["labels"])
    wrong = (p >= 0.5).astype(int) != y
    by_group = defaultdict(lambda: [0, 0, 0, 0])   # clips, errors, fights, fight errors
    for g, w, lab in zip(meta["groups"], wrong, y):
        by_group[g][0] += 1
        by_group[g][1] += int(w)
        by_group[g][2] += int(lab)
        by_group[g][3] += int(w and lab)
    lines = ["| group | clips | fights | errors | missed fights | false alarms |", "|---|---|---|---|---|---|"]
    for g, (n, e, nf, ef) in sorted(by_group.items(), key=lambda kv: -kv[1][1] / kv[1][0]):
        lines.append(f"| {g} | {n} | {nf} | {e} | {ef} | {e - ef} |")
    lines.append("")
    lines.append("errors (clip, label, p_fight): " + ", ".join(
        f"{os.path.basename(meta['paths'][i])}({meta['classes'][y[i]]},{p[i]:.2f})" for i in np.where(wrong)[0]))
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="the folder of cv.py's <variant>_s<seed>.json")
    ap.add_argument("--errors", metavar="VARIANT_sSEED", help="list this run's out-of-fold errors by group")
    ap.add_argument("--meta", help="with --errors: the cache's meta.json (clip paths, labels, groups)")
    a = ap.parse_args()
    if a.errors and not a.meta:
        ap.error("--errors needs --meta CACHE/meta.json (the cache cv.py ran on)")
    print(errors(a.results, a.errors, a.meta) if a.errors else table(a.results))
