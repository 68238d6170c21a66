"""Speed and quality of DeepCache against the uncached sampler and fewer-step DDIM, side by side.

    python scripts/benchmark.py --config cifar10 --random-init --batch-size 16 --intervals 2,3,5,10 --branches 0,2
    python scripts/benchmark.py --config cin256-v2 --random-init --batch-size 16 --intervals 5,10 --branches 0 \
        --variants eager:fp32,eager:fp16:graph,reduce-overhead:fp16,default:fp16:graph --device cuda

A variant is `<eager | torch.compile mode>:<fp32 | fp16 | bf16>[:cl][:graph]`: cl = channels_last,
graph = each whole sampling run recorded as one CUDA graph (reduce-overhead records each pass instead).
For each variant the uncached baseline runs in the same process; every row reports MACs per step
(full, partial, average), the ideal speedup T / (k + (T-k) f), the measured time (median of
--repeats after --warmup runs, device synchronised), the speedup and its fraction of the ideal, the
sampling loop's own overhead (wall time beyond the model calls; not measurable inside a whole-run
graph), and a quality proxy against the baseline images of the same seeds (PSNR in dB, mean
absolute error in uint8 levels). With --random-init no checkpoint is needed; speed does not depend
on the weights, but the quality columns then mean little.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from deepcache_ref import FastPath, Pipeline, build_model, check_sampling, load_config, load_model
from deepcache_ref.errors import UserError
from deepcache_ref.evaluation.benchmark import macs_per_branch, report, rows_for_variant
from deepcache_ref.fast import resolve_device
from deepcache_ref.runs.cli import ArgumentParser, int_list, positive_int, run
from deepcache_ref.runs.files import claim_outputs, json_record, output_prefix, text_record
from deepcache_ref.runs.versions import device_name

REPO = Path(__file__).resolve().parent.parent


def variants(text):
    try:
        return [FastPath.parse(v) for v in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--random-init", action="store_true", help="random weights instead of the checkpoint")
    p.add_argument("--ckpt")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--steps", type=positive_int, help="sampler steps (default: the config's)")
    p.add_argument("--intervals", type=int_list, default=[2, 3, 5, 10])
    p.add_argument("--branches", type=int_list, help="cache branches (default: the config's)")
    p.add_argument("--ddim-steps", type=int_list, default=[], help="fewer-step DDIM baselines, e.g. 50,20,10")
    p.add_argument("--variants", type=variants, default="eager:fp32",
                   help="comma list of <eager|compile mode>:<fp32|fp16|bf16>[:cl][:graph]")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--warmup", type=int, default=1, choices=range(0, 100), metavar="N",
                   help="untimed runs per setting before timing")
    p.add_argument("--no-overhead", dest="overhead", action="store_false",
                   help="skip the extra run that measures the loop overhead")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--out", help="output prefix for .json and .md (default: results/benchmark_<config>)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)

    if args.random_init and args.ckpt:
        raise UserError("give --random-init or --ckpt, not both")
    if 0 in args.intervals:
        raise UserError("--intervals: a cache interval is an integer >= 1 (1 = no cache), got 0")
    out = output_prefix(args.out) if args.out is not None else None
    cfg = load_config(args.config, args.overrides)
    s = cfg.sampling if args.steps is None else replace(cfg.sampling, steps=args.steps)
    branches = args.branches or [s.cache_branch]
    meta = build_model(cfg, "meta")
    for N in args.intervals:  # every setting checked before any work
        for b in branches:
            check_sampling(meta, replace(s, cache_interval=N, cache_branch=b))
    for S in args.ddim_steps:
        check_sampling(meta, replace(s, steps=S, cache_interval=1))
    device = resolve_device(args.device)
    for v in args.variants:
        v.check(device, s)
    seeds = list(range(args.batch_size))
    header = (f"### {cfg.name or args.config}: batch {args.batch_size}, {len(meta.timesteps(s.steps, s.skip_type))} "
              f"{s.sampler} steps, {device_name(device)}{' (random weights)' if args.random_init else ''}\n\n"
              f"`python scripts/benchmark.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
    out = out or REPO / "results" / f"benchmark_{cfg.name or Path(args.config).stem}"
    ours = json_record("device", "args", "rows")
    claim_outputs({"--out (.json)": (out.with_suffix(".json"), ours),
                   "--out (.md)": (out.with_suffix(".md"),
                                   lambda p: text_record("### ")(p) and ours(out.with_suffix(".json")))},
                  {"--config": args.config if Path(args.config).is_file() else None, "--ckpt": args.ckpt})
    macs = macs_per_branch(meta, branches, getattr(s, "scale", 1.0))
    rows = []
    for variant in args.variants:
        if args.random_init:
            torch.manual_seed(0)
            model = build_model(cfg)
        else:
            model = load_model(cfg, args.ckpt)
        pipe = Pipeline(model, device, variant)
        print(f"[{variant}] ...", file=sys.stderr)
        rows += rows_for_variant(pipe, s, seeds, macs, branches, args.intervals, args.ddim_steps, args.warmup,
                                 args.repeats, args.overhead)[0]
        del pipe, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        args_record = {k: (str(v) if k == "variants" else v) for k, v in vars(args).items()}
        table = report(out, rows, header, device_name(device), args_record)  # after every variant: a time-out keeps what is done
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
