"""Check that the fast paths (torch.compile, CUDA graphs, channels_last, fp16/bf16) match eager fp32.

    python scripts/check_fast_paths.py --config cifar10 --device cuda --variants eager:bf16,reduce-overhead:fp16

A variant is `<eager | torch.compile mode>:<precision>[:cl][:graph]` (cl = channels_last, graph =
whole-run CUDA graph). For each, the full pass and the partial pass of every requested branch are
compared with eager fp32 on the same random inputs (relative L2 error, printed and written as
JSON), and so are two short DeepCache DDIM runs of different seeds (with :graph the second one
replays the graph recorded for the first). Eager fp32 with interval 1 must equal no cache bit for bit.
"""

import argparse
import json
import sys

import torch

import common
from samplers import CacheSchedule

TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}  # relative L2 error against eager fp32


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def check(config, variants=(common.Variant("default", "fp32"),), device="cpu", branches=None, batch_size=4, steps=10):
    """Compare each `common.Variant` with eager fp32."""
    kind, cfg = common.load_any_config(config)
    s = cfg.sampling
    s = type(s)(**{**vars(s), "steps": steps, "cache_interval": 3})
    branches = branches or [s.cache_branch]
    seeds = list(range(batch_size))

    def pipeline(v=common.Variant(None, "fp32")):
        pipe = common.Pipeline(kind, cfg, device, random_init=True, seed=0)
        return pipe.optimize(v.compile_mode, v.channels_last, v.cuda_graph)

    ref = pipeline()
    c, h, w = ref.shape
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch_size, c, h, w, generator=gen, device=device)
    t = torch.full((batch_size,), 500, device=device)
    kw = {}
    if kind == "ldm":
        kw = {"context": ref.model.get_learned_conditioning(torch.arange(batch_size, device=device))}

    @torch.no_grad()
    def passes(pipe, precision):
        xin = x.contiguous(memory_format=torch.channels_last) if pipe.channels_last else x
        out = {}
        with pipe.autocast(precision):
            for k in branches:
                eps, cached = pipe.unet.forward_full(xin, t, branch=k, **kw)
                out[f"full/{k}"] = eps.float()
                out[f"partial/{k}"] = pipe.unet.forward_partial(xin, t, cached, branch=k, **kw).float()
        out.update(samples(pipe, precision))
        return out

    def samples(pipe, precision):
        return {name: pipe.sample_x0([first + i for i in seeds], s, CacheSchedule(3, branches[0]),
                                     precision=precision).float()
                for name, first in (("sample", 0), ("sample_other_seeds", batch_size))}

    base = passes(ref, "fp32")
    plain = ref.sample_x0(seeds, s, CacheSchedule(), precision="fp32")
    interval1 = ref.sample_x0(seeds, s, CacheSchedule(1, branches[0]), precision="fp32")
    results = {"interval_1_equals_no_cache_bitwise": bool(torch.equal(plain, interval1)), "variants": []}
    for v in variants:
        pipe = ref if v._replace(precision="fp32") == common.Variant(None, "fp32") else pipeline(v)
        out = passes(pipe, v.precision)
        errors = {k: rel(out[k], base[k]) for k in out}
        within = max(errors[k] for k in errors if not k.startswith("sample")) <= TOLERANCE[v.precision]
        if v.cuda_graph:  # the graph replays what the step-by-step loop computes, for any seeds
            pipe.cuda_graph = False
            loop = samples(pipe, v.precision)
            pipe.cuda_graph = True
            errors["graph_vs_loop"] = max(rel(out[k], loop[k]) for k in loop)
            within = within and errors["graph_vs_loop"] <= TOLERANCE[v.precision]
        results["variants"].append({"variant": str(v), **v._asdict(), "tolerance": TOLERANCE[v.precision],
                                    "ok": within, "relative_l2_error": errors})
    results["ok"] = results["interval_1_equals_no_cache_bitwise"] and all(v["ok"] for v in results["variants"])
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variants", default="default:fp32,eager:bf16",
                   help="comma list of <eager|compile mode>:<fp32|fp16|bf16>[:cl][:graph]")
    p.add_argument("--branches", help="comma list (default: the config's)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args(argv)
    try:
        variants = [common.parse_variant(v) for v in args.variants.split(",")]
        for v in variants:
            common.check_fast_path(args.device, v.compile_mode, v.cuda_graph)
    except common.UsageError as e:
        p.error(str(e))
    res = check(args.config, variants, args.device,
                [int(b) for b in args.branches.split(",")] if args.branches else None, batch_size=args.batch_size)
    res["device"] = common.device_name(args.device)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        common.write_json(args.out, res)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
