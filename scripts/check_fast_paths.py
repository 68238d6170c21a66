"""Check that the fast paths (torch.compile, CUDA graphs, channels_last, fp16/bf16) match eager fp32.

    python scripts/check_fast_paths.py --config cifar10 --device cuda --variants eager:bf16,reduce-overhead:fp16

A variant is `<eager | torch.compile mode>:<precision>[:cl]` (cl = channels_last). For each, the
full pass and the partial pass of every requested branch are compared with
eager fp32 on the same random inputs (relative L2 error, printed and written as JSON), and a
short DeepCache DDIM run is compared too. Eager fp32 with interval 1 must equal no cache bit for bit.
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


def check(config, variants=(("default", False, "fp32"),), device="cpu", branches=None, batch_size=4, steps=10):
    """Compare each (compile mode or None, channels_last, precision) variant with eager fp32."""
    kind, cfg = common.load_any_config(config)
    s = cfg.sampling
    s = type(s)(**{**vars(s), "steps": steps, "cache_interval": 3})
    branches = branches or [s.cache_branch]
    seeds = list(range(batch_size))

    def pipeline(mode=None, cl=False):
        pipe = common.Pipeline(kind, cfg, device, random_init=True, seed=0)
        return pipe.optimize(mode, cl)

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
        xin = x.contiguous(memory_format=torch.channels_last) if getattr(pipe, "channels_last", False) else x
        out = {}
        with pipe.autocast(precision):
            for k in branches:
                eps, cached = pipe.unet.forward_full(xin, t, branch=k, **kw)
                out[f"full/{k}"] = eps.float()
                out[f"partial/{k}"] = pipe.unet.forward_partial(xin, t, cached, branch=k, **kw).float()
        out["sample"] = pipe.sample_x0(seeds, s, CacheSchedule(3, branches[0]), precision=precision).float()
        return out

    base = passes(ref, "fp32")
    plain = ref.sample_x0(seeds, s, CacheSchedule(), precision="fp32")
    interval1 = ref.sample_x0(seeds, s, CacheSchedule(1, branches[0]), precision="fp32")
    results = {"interval_1_equals_no_cache_bitwise": bool(torch.equal(plain, interval1)), "variants": []}
    for mode, cl, precision in variants:
        pipe = ref if (mode, cl) == (None, False) else pipeline(mode, cl)
        errors = {k: rel(v, base[k]) for k, v in passes(pipe, precision).items()}
        within = max(errors[k] for k in errors if k != "sample") <= TOLERANCE[precision]
        results["variants"].append({"compile": mode or "eager", "channels_last": cl, "precision": precision,
                                    "tolerance": TOLERANCE[precision], "ok": within, "relative_l2_error": errors})
    results["ok"] = results["interval_1_equals_no_cache_bitwise"] and all(v["ok"] for v in results["variants"])
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variants", default="default:fp32,eager:bf16",
                   help="comma list of <eager|default|max-autotune|reduce-overhead>:<fp32|fp16|bf16>[:cl]")
    p.add_argument("--branches", help="comma list (default: the config's)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args(argv)
    variants = []
    for item in args.variants.split(","):
        mode, precision, *cl = item.split(":")
        variants.append((None if mode == "eager" else mode, cl == ["cl"], precision))
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
