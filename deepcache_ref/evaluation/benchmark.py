"""Side-by-side speed and quality of DeepCache against the uncached sampler and fewer-step DDIM.

Every setting samples the same seeds with one pipeline; repeats run round-robin; each speedup is the
median of per-round ratios to the uncached baseline; the device is synchronised around each timed
run and the decoder is not timed. The ideal speedup is T / (k + (T-k) f) with f the partial/full MAC
ratio and k the number of full steps; the loop overhead is the wall time outside model calls.
"""

import statistics
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from ..core.macs import ideal_speedup, unet_macs
from ..families import build_model
from ..runs.files import write_json, write_text
from ..runs.versions import versions
from ..samplers import SAMPLERS, CacheSchedule


class Timed:
    """Wraps a denoiser and adds up the seconds spent in model calls (device synchronised)."""

    def __init__(self, unet, device):
        self.unet, self.device, self.seconds = unet, torch.device(device), 0.0
        self.num_branches = unet.num_branches

    def _timed(self, fn, *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out

    def __call__(self, *a, **k):
        return self._timed(self.unet, *a, **k)

    def forward_full(self, *a, **k):
        return self._timed(self.unet.forward_full, *a, **k)

    def forward_partial(self, *a, **k):
        return self._timed(self.unet.forward_partial, *a, **k)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_run(pipe, seeds, s, cache):
    """(seconds, x0) of sampling `seeds` once, device synchronised (the decoder is not timed)."""
    sync(pipe.device)
    start = time.perf_counter()
    x0 = pipe.sample_x0(seeds, s, cache)
    sync(pipe.device)
    return time.perf_counter() - start, x0


def loop_overhead(pipe, seeds, s, cache):
    """Fraction of the wall time spent outside model calls."""
    timed = []
    sync(pipe.device)
    start = time.perf_counter()
    pipe.sample_x0(seeds, s, cache, wrap=lambda d: timed.append(Timed(d, pipe.device)) or timed[-1])
    sync(pipe.device)
    wall = time.perf_counter() - start
    return max(wall - timed[0].seconds, 0.0) / wall


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def macs_per_branch(model, branches, guidance_scale=1.0):
    """{"full": MACs, "partial": {branch: MACs}} of one U-Net call per image (on `meta`; a guided
    call counts both halves of its doubled batch). Counted on a copy of the architecture on `meta`."""
    model = build_model(model.config, "meta")
    x, t, kwargs = model.unet_inputs(1, "meta")
    macs = unet_macs(model.unet, x, t, branches, **kwargs)
    k = 1 if guidance_scale == 1.0 else 2
    return {"full": k * macs["full"], "partial": {b: k * v for b, v in macs["partial"].items()}}


def rows_for_variant(pipe, s, seeds, macs, branches, intervals, ddim_steps=(), warmup=1, repeats=3, overhead=True):
    """(rows, uint8 images of each row): the uncached sampler of sampling section `s`, DeepCache at
    each interval and branch, and fewer-step DDIM, for one pipeline (one fast-path variant). Repeats
    run round-robin over the settings, so slow drifts of the machine hit all of them alike; speedups
    are medians of per-round ratios to the baseline."""
    variant = pipe.fast
    timesteps = lambda s2: pipe.model.timesteps(s2.steps, s2.skip_type)  # noqa: E731
    T = len(timesteps(s))
    solver = SAMPLERS[s.sampler].label
    settings = [(solver, s.steps, 1, None)] + [("DeepCache", s.steps, N, b) for b in branches for N in intervals if N > 1]
    settings += [(solver, S, 1, None) for S in ddim_steps]
    runs = []
    for method, steps, N, branch in settings:
        s2 = replace(s, steps=steps)
        runs.append((s2, CacheSchedule(N, branch or 0)))
        for _ in range(warmup):  # compilation, autotuning, allocator
            pipe.sample_x0(seeds, s2, runs[-1][1])
    seconds = [[] for _ in runs]
    for _ in range(repeats):
        for i, (s2, cache) in enumerate(runs):
            t, x0 = timed_run(pipe, seeds, s2, cache)
            seconds[i].append(t)
            if len(seconds[i]) == repeats:
                runs[i] = (s2, cache, pipe.to_images(x0))
    base_images = runs[0][2]
    overhead = overhead and not variant.cuda_graph
    rows = []
    for (method, steps, N, branch), (s2, cache, images), times in zip(settings, runs, seconds):
        T2 = len(timesteps(s2))
        k = len(cache.full_steps(T2))
        f = macs["partial"][branch] / macs["full"] if branch is not None else 1.0
        speedup = statistics.median(b / t for b, t in zip(seconds[0], times))
        rows.append(dict(method=method, steps=T2, N=N, branch=branch, ideal=ideal_speedup(T2, k, f) * T / T2,
                         seconds=statistics.median(times), speedup=speedup,
                         overhead=loop_overhead(pipe, seeds, s2, cache) if overhead else None,
                         psnr=psnr(images, base_images), mae=float(np.abs(images.astype(np.float64) - base_images).mean()),
                         macs_step=(k * macs["full"] + (T2 - k) * f * macs["full"]) / T2))
    for r in rows:
        r.update(variant=str(variant), **asdict(variant), batch=len(seeds), baseline=r is rows[0],
                 images_per_s=len(seeds) / r["seconds"], fraction_of_ideal=r["speedup"] / r["ideal"])
    return rows, [images for _, _, images in runs]


def markdown(rows, header):
    cols = ["variant", "method", "steps", "N", "branch", "macs_step", "ideal", "speedup",
            "fraction_of_ideal", "images_per_s", "vs_eager_fp32", "overhead", "psnr", "mae"]
    names = ["variant", "method", "steps", "N", "branch", "GMACs/step/image", "ideal", "speedup",
             "of ideal", "img/s", "vs eager fp32", "loop overhead", "PSNR dB", "MAE"]
    fmt = {"macs_step": lambda v: f"{v / 1e9:.2f}", "ideal": lambda v: f"{v:.2f}x", "speedup": lambda v: f"{v:.2f}x",
           "fraction_of_ideal": lambda v: f"{100 * v:.1f}%", "images_per_s": lambda v: f"{v:.2f}",
           "overhead": lambda v: "-" if v is None else f"{100 * v:.1f}%", "psnr": lambda v: "-" if v == float("inf") else f"{v:.1f}",
           "mae": lambda v: f"{v:.2f}", "vs_eager_fp32": lambda v: "-" if v is None else f"{v:.2f}x", "branch": lambda v: "-" if v is None else str(v)}
    lines = [header, "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, str)(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def report(out, rows, header, device, args=None):
    """Write the rows so far as Markdown and JSON; returns the Markdown."""
    ref = next((r for r in rows if r["variant"] in ("eager:fp32", "eager:fp32:cl") and r["baseline"]), None)
    for r in rows:
        r["vs_eager_fp32"] = ref["seconds"] / r["seconds"] if ref else None
    table = markdown(rows, header)
    write_json(out.with_suffix(".json"), {"device": device, "args": args, "rows": rows, "versions": versions()})
    write_text(out.with_suffix(".md"), table)  # after its record: the pair is recognised as this script's
    return table
