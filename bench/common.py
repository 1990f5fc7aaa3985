"""Shared helpers for the benchmarks: timing, machine description, writing results."""
from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import sys
import time

import torch

SURV_FIGHT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                          "surv-fight")


def surv_fight_clips(every: int, name: str) -> list[tuple[str, dict]]:
    """Every ``every``-th clip of ``../shared/data/surv-fight`` (in groups.csv order): ``(path, row)`` each;
    exits with a line naming benchmark ``name`` when there are none."""
    try:
        with open(os.path.join(SURV_FIGHT, "groups.csv")) as f:
            rows = list(csv.DictReader(f))[::every]
    except OSError:
        rows = []
    if not rows:
        sys.exit(f"{name}: no clips under {SURV_FIGHT}")
    return [(os.path.join(SURV_FIGHT, r["label"], r["clip"] + ".mp4"), r) for r in rows]


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next(line for line in lines if line.startswith("flags")).split()
        extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    except (OSError, StopIteration):
        extras = []
    return {"cpu": cpu, "cpu_features": extras, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def timeit(fn, reps: int = 3, warmup: int = 1, clock=time.perf_counter) -> float:
    """Median time of ``fn()`` over ``reps`` runs after ``warmup`` runs, in seconds: wall time, or
    CPU time of the process with ``clock=time.process_time``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)


def save(name: str, payload: dict) -> str:
    folder = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    with open(path + ".part", "w") as f:
        json.dump({"machine": machine(), **payload}, f, indent=2)
    os.replace(path + ".part", path)
    return path
