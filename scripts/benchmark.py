"""Speed and quality of DeepCache against the uncached sampler and fewer-step DDIM, side by side.

    python scripts/benchmark.py --config cifar10 --random-init --batch-size 16 --intervals 2,3,5,10 --branches 0,2
    python scripts/benchmark.py --config cin256-v2 --random-init --batch-size 16 --intervals 5,10 --branches 0 \
        --variants eager:fp32,eager:fp16:graph,reduce-overhead:fp16,default:fp16:graph --device cuda

A variant is `<eager | torch.compile mode>:<fp32 | fp16 | bf16>[:cl][:graph]`: cl = channels_last,
graph = each whole sampling run recorded as one CUDA graph (reduce-overhead records each pass instead).
For each variant the uncached baseline runs in the same process;
every row reports MACs per step (full, partial, average), the ideal speedup T / (k + (T-k) f), the
measured time (median of --repeats after --warmup runs, device synchronised), the speedup and its
fraction of the ideal, the sampling loop's own overhead (wall time beyond the model calls; not
measurable inside a whole-run graph), and a
quality proxy against the baseline images of the same seeds (PSNR in dB, mean absolute error in
uint8 levels). With --random-init no checkpoint is needed; speed does not depend on the weights,
but the quality columns then mean little.
"""

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import common
from ddpm import ideal_speedup, unet_macs
from samplers import CacheSchedule


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


def timed_run(pipe, seeds, s, cache, precision):
    """(seconds, x0) of sampling `seeds` once, device synchronised (the decoder is not timed)."""
    sync(pipe.device)
    start = time.perf_counter()
    x0 = pipe.sample_x0(seeds, s, cache, precision=precision)
    sync(pipe.device)
    return time.perf_counter() - start, x0


def loop_overhead(pipe, seeds, s, cache, precision):
    """Fraction of the wall time spent outside model calls."""
    timed = Timed(pipe.unet, pipe.device)
    sync(pipe.device)
    start = time.perf_counter()
    pipe.sample_x0(seeds, s, cache, precision=precision, denoiser=timed)
    sync(pipe.device)
    wall = time.perf_counter() - start
    return max(wall - timed.seconds, 0.0) / wall


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def macs_per_branch(pipe, branches):
    c, h, w = pipe.shape
    x, t = torch.randn(1, c, h, w, device="meta"), torch.ones(1, device="meta", dtype=torch.long)
    if pipe.kind == "ddpm":
        unet, kwargs = common.ddpm.build_unet(pipe.cfg.model, "meta"), {}
    else:
        unet = common.ldm.build_model(pipe.cfg, "meta").unet
        kwargs = {"context": torch.randn(1, 1, pipe.cfg.model.params.unet_config.params.context_dim, device="meta")}
    macs = unet_macs(unet, x, t, branches, **kwargs)
    if pipe.kind == "ldm" and pipe.cfg.sampling.scale != 1.0:  # guidance doubles the batch
        macs = {"full": 2 * macs["full"], "partial": {k: 2 * v for k, v in macs["partial"].items()}}
    return macs


def rows_for_variant(pipe, args, s, seeds, macs, variant):
    """(rows, uint8 images of each row) for every setting of one variant. Repeats run round-robin over
    the settings, so slow drifts of the machine hit all of them alike; speedups are medians of
    per-round ratios to the baseline."""
    T = len(pipe.timesteps(s))
    settings = [("DDIM", T, 1, None)] + [("DeepCache", T, N, b) for b in args.branches for N in args.intervals if N > 1]
    settings += [("DDIM", S, 1, None) for S in args.ddim_steps]
    runs = []
    for method, steps, N, branch in settings:
        s2 = replace(s, steps=steps) if method == "DDIM" else s
        runs.append((s2, CacheSchedule(N, branch or 0)))
        for _ in range(args.warmup):  # compilation, autotuning, allocator
            pipe.sample_x0(seeds, s2, runs[-1][1], precision=variant.precision)
    seconds = [[] for _ in runs]
    for _ in range(args.repeats):
        for i, (s2, cache) in enumerate(runs):
            t, x0 = timed_run(pipe, seeds, s2, cache, variant.precision)
            seconds[i].append(t)
            if len(seconds[i]) == args.repeats:
                runs[i] = (s2, cache, pipe.to_images(x0, variant.precision))
    base_images = runs[0][2]
    overhead = args.overhead and not variant.cuda_graph
    rows = []
    for (method, steps, N, branch), (s2, cache, images), times in zip(settings, runs, seconds):
        T2 = len(pipe.timesteps(s2))
        k = len(cache.full_steps(T2))
        f = macs["partial"][branch] / macs["full"] if branch is not None else 1.0
        speedup = statistics.median(b / t for b, t in zip(seconds[0], times))
        rows.append(dict(method=method, steps=T2, N=N, branch=branch, ideal=ideal_speedup(T2, k, f) * T / T2,
                         seconds=statistics.median(times), speedup=speedup,
                         overhead=loop_overhead(pipe, seeds, s2, cache, variant.precision) if overhead else None,
                         psnr=psnr(images, base_images), mae=float(np.abs(images.astype(np.float64) - base_images).mean()),
                         macs_step=(k * macs["full"] + (T2 - k) * f * macs["full"]) / T2))
    for r in rows:
        r.update(variant=str(variant), **variant._asdict(), batch=len(seeds), baseline=r is rows[0],
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


def report(out, rows, header, device, args):
    """Write the rows so far as Markdown and JSON; returns the Markdown."""
    ref = next((r for r in rows if r["variant"] in ("eager:fp32", "eager:fp32:cl") and r["baseline"]), None)
    for r in rows:
        r["vs_eager_fp32"] = ref["seconds"] / r["seconds"] if ref else None
    table = markdown(rows, header)
    common.write_text(out.with_suffix(".md"), table)
    common.write_json(out.with_suffix(".json"), {"device": device, "args": vars(args), "rows": rows,
                                                 "versions": common.versions()})
    return table

def variants(text):
    try:
        return [common.parse_variant(v) for v in text.split(",")]
    except common.UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def ints(text):
    return [int(x) for x in text.split(",") if x]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--random-init", action="store_true", help="random weights instead of the checkpoint")
    p.add_argument("--ckpt")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, help="sampler steps (default: the config's)")
    p.add_argument("--intervals", type=ints, default=[2, 3, 5, 10])
    p.add_argument("--branches", type=ints, help="cache branches (default: the config's)")
    p.add_argument("--ddim-steps", type=ints, default=[], help="fewer-step DDIM baselines, e.g. 50,20,10")
    p.add_argument("--variants", type=variants, default="eager:fp32",
                   help="comma list of <eager|compile mode>:<fp32|fp16|bf16>[:cl][:graph]")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per setting before timing")
    p.add_argument("--no-overhead", dest="overhead", action="store_false",
                   help="skip the extra run that measures the loop overhead")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="output prefix for .json and .md (default: results/benchmark_<config>)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)

    kind, cfg = common.load_any_config(args.config, args.overrides)
    s = cfg.sampling if args.steps is None else replace(cfg.sampling, steps=args.steps)
    args.branches = args.branches or [s.cache_branch]
    try:
        for v in args.variants:
            common.check_fast_path(args.device, v.compile_mode, v.cuda_graph, s)
    except common.UsageError as e:
        p.error(str(e))
    seeds = list(range(args.batch_size))
    device = common.device_name(args.device)
    header = (f"### {cfg.name or args.config}: batch {args.batch_size}, {len(common.make_timesteps(s.steps, s.skip_type))} "
              f"{s.sampler} steps, {device}{' (random weights)' if args.random_init else ''}\n\n"
              f"`python scripts/benchmark.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
    out = Path(args.out or common.REPO / "results" / f"benchmark_{cfg.name or Path(args.config).stem}")
    rows = []
    for variant in args.variants:
        pipe = common.Pipeline(kind, cfg, args.device, ckpt=args.ckpt, random_init=args.random_init)
        pipe.optimize(variant.compile_mode, variant.channels_last, variant.cuda_graph)
        print(f"[{variant}] ...", file=sys.stderr)
        rows += rows_for_variant(pipe, args, s, seeds, macs_per_branch(pipe, args.branches), variant)[0]
        del pipe
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        table = report(out, rows, header, device, args)  # after every variant: a time-out keeps what is done
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
