"""Shared helpers for the benchmarks: timing, machine description, writing results."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import torch


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
