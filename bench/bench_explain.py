"""Cost of an explanation, in forward passes, next to the same explanation through Captum.

For a 16-frame VGG19 clip at 224 x 224 (random-init weights: timing does not depend on them) this
times xvad's gradcam, saliency, smoothgrad (8 samples) and integrated_gradients (16 steps), divides
each by the time of one plain forward pass of the clip, and runs the same explanation through
Captum on the same model in the same process (LayerGradCam on the same layer; Saliency;
NoiseTunnel(Saliency) in smoothgrad mode; IntegratedGradients), the clip given to Captum as the
model takes it, ``[1, T, 3, H, W]``. Sampled methods go through the model in chunks of the same
size on both sides (xvad's ``batch_size``, Captum's ``nt_samples_batch_size`` /
``internal_batch_size``). Both precisions are timed: fp32 and bf16 (autocast of the backbone).

    python bench/bench_explain.py            # the full run (slow on 2 cores: ~20 minutes)
    python bench/bench_explain.py --quick    # 4 frames at 64: under a minute

Ratios are of CPU time (this process, all its threads): on a shared machine CPU time moves far less
with other people's load than wall time does; wall times are recorded too, with the load average.
Each row times a forward pass right before its pair of explanations, and the ratios divide by the
median of the forward passes of that precision.

Writes a table to stdout and the numbers to bench/results/explain.json (explain-quick.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from xvad.explain import explain
from xvad.models import CRNN

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(fn, reps: int) -> tuple[float, float, object]:
    """Median wall time and median CPU time of this process (all its threads), and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus), out


def as_map(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 frames at 64, one repetition")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None, help="repetitions of each explanation (median)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency

    torch.set_num_threads(int(os.environ.get("XVAD_BENCH_THREADS", "2")))
    frames = args.frames or (4 if args.quick else 16)
    size = args.size or (64 if args.quick else 224)
    reps = args.reps or 1
    n_samples, steps, chunk, noise = 8, 16, 2, 0.15
    out_path = args.out or os.path.join(HERE, "results", "explain-quick.json" if args.quick else "explain.json")

    torch.manual_seed(0)
    model = CRNN("vgg19", weights=None, frames=frames, size=size, precision="fp32").eval()
    layer_name = "backbone." + model.backbone.info.cam_layer
    layer = dict(model.named_modules())[layer_name]
    clip = torch.randn(1, frames, 3, size, size)
    target = 1
    sigma = noise * float(clip.max() - clip.min())

    results: dict = {
        "clip": [1, frames, 3, size, size], "backbone": "vgg19 (random init)", "layer": layer_name,
        "smoothgrad_samples": n_samples, "ig_steps": steps, "chunk_clips": chunk, "reps": reps,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor() or
        platform.machine(), "cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0], "rows": []}
    print(f"VGG19 (random init), clip {results['clip']}, {torch.get_num_threads()} threads, "
          f"smoothgrad n={n_samples}, IG steps={steps}, chunks of {chunk} clips", flush=True)

    for precision in args.precisions.split(","):
        model.set_precision(precision)

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return model(clip)

        forward()
        for b in (1, chunk):  # warm-up of every shape timed below (oneDNN builds kernels per shape)
            xs = clip.repeat(b, 1, 1, 1, 1).requires_grad_(True)
            torch.autograd.grad(model(xs)[:, target].sum(), xs)
        forwards = [timed(forward, 1)[:2]]
        print(f"\n[{precision}] one forward pass: {forwards[0][0]:.2f} s wall, {forwards[0][1]:.2f} s CPU",
              flush=True)

        ours = {
            "gradcam": lambda: explain(model, clip, "gradcam", target=target, normalize="none"),
            "saliency": lambda: explain(model, clip, "saliency", target=target, normalize="none"),
            "smoothgrad": lambda: explain(model, clip, "smoothgrad", target=target, normalize="none",
                                          n_samples=n_samples, noise=noise, batch_size=chunk),
            "integrated_gradients": lambda: explain(model, clip, "integrated_gradients", target=target,
                                                    normalize="none", sign="all", steps=steps,
                                                    baseline="zero", batch_size=chunk),
        }
        theirs = {
            "gradcam": lambda: LayerGradCam(model, layer).attribute(clip, target=target, relu_attributions=True),
            "saliency": lambda: Saliency(model).attribute(clip, target=target, abs=True),
            "smoothgrad": lambda: NoiseTunnel(Saliency(model)).attribute(
                clip, nt_type="smoothgrad", nt_samples=n_samples, nt_samples_batch_size=chunk, stdevs=sigma,
                target=target, abs=True),
            "integrated_gradients": lambda: IntegratedGradients(model).attribute(
                clip, baselines=torch.zeros_like(clip), target=target, n_steps=steps,
                method="gausslegendre", internal_batch_size=chunk),
        }
        rows = []
        for name in ours:
            forwards.append(timed(forward, 1)[:2])
            w_ours, t_ours, e = timed(ours[name], reps)
            model.eval()  # Captum runs the model in whatever mode it is in: eval, as ours does
            w_theirs, t_theirs, ref = timed(theirs[name], reps)
            if name == "gradcam":
                ref_map = as_map(ref).reshape(e.raw.shape)
            elif name == "integrated_gradients":
                ref_map = as_map(ref).sum(2)[0]
            else:
                ref_map = as_map(ref).max(2)[0]
            agree = None if name == "smoothgrad" else rel_diff(e.raw, ref_map)  # smoothgrad: own noise
            rows.append({"precision": precision, "method": name, "ours_cpu_s": t_ours, "captum_cpu_s": t_theirs,
                         "ours_wall_s": w_ours, "captum_wall_s": w_theirs,
                         "ours_over_captum": t_ours / t_theirs, "ours_over_captum_wall": w_ours / w_theirs,
                         "max_rel_diff_vs_captum": agree})
            print(f"  {name:<21} CPU s: ours {t_ours:7.2f} | captum {t_theirs:7.2f} | ours/captum "
                  f"{t_ours / t_theirs:4.2f} | forward {forwards[-1][1]:.2f} | wall {w_ours:.1f} / {w_theirs:.1f}"
                  + ("" if agree is None else f" | max rel diff {agree:.1e}"), flush=True)
        w_fwd = statistics.median(f[0] for f in forwards)
        t_fwd = statistics.median(f[1] for f in forwards)
        for row in rows:
            row.update(forward_cpu_s=t_fwd, forward_wall_s=w_fwd, ours_per_forward=row["ours_cpu_s"] / t_fwd,
                       captum_per_forward=row["captum_cpu_s"] / t_fwd)
        results["rows"] += rows
    model.set_precision("fp32")

    print("\nCPU seconds; x fwd = in forward passes of the clip")
    print("precision  method                 forward  ours   x fwd  captum  x fwd  ours/captum (wall)")
    for r in results["rows"]:
        print(f"{r['precision']:<10} {r['method']:<22} {r['forward_cpu_s']:7.2f} {r['ours_cpu_s']:6.1f} "
              f"{r['ours_per_forward']:6.1f} {r['captum_cpu_s']:7.1f} {r['captum_per_forward']:6.1f} "
              f"{r['ours_over_captum']:8.2f} ({r['ours_over_captum_wall']:.2f})")
    results["load_average_end"] = os.getloadavg()[0]
    print(f"load average: {results['load_average_start']:.1f} at start, {results['load_average_end']:.1f} "
          f"at the end, on {os.cpu_count()} cores")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
