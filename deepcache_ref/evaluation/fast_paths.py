"""The fast paths checked against eager fp32: each `FastPath` variant's full and partial passes and
sampled x_0 (random weights), a whole-run CUDA graph also against its own step-by-step loop, and
interval 1 against no cache, bit for bit."""

from dataclasses import asdict, replace

import torch

from ..families import build_model, load_config
from ..fast import FastPath
from ..pipeline import Pipeline, check_sampling
from ..samplers import CacheSchedule

TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}  # relative L2 error against eager fp32


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def check_config(config, branches=None, batch_size=4, steps=10):
    """(config, its checked sampling section, branches) of a check, every value checked before any work."""
    cfg = load_config(config)
    s = replace(cfg.sampling, steps=steps, cache_interval=3, batch_size=batch_size)
    meta = build_model(cfg, "meta")
    for b in branches or [s.cache_branch]:
        check_sampling(meta, replace(s, cache_branch=b))
    return cfg, s, branches or [s.cache_branch]


def check_fast_paths(config, variants=(FastPath("default", "fp32"),), device="cpu", branches=None, batch_size=4, steps=10):
    """Compare each `FastPath` with eager fp32 (random weights)."""
    cfg, s, branches = check_config(config, branches, batch_size, steps)
    seeds = list(range(batch_size))
    device = torch.device(device)

    def pipeline(v=FastPath()):
        torch.manual_seed(0)
        return Pipeline(build_model(cfg), device, v)

    ref = pipeline()
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch_size, *ref.model.sample_shape, generator=gen, device=device)
    t = torch.full((batch_size,), 500, device=device)
    labels = list(range(batch_size)) if ref.model.num_classes else None
    kw = ref.model.denoiser(labels)[1].get("model_kwargs", {})

    @torch.no_grad()
    def passes(pipe, precision):
        xin = x.contiguous(memory_format=torch.channels_last) if pipe.fast.channels_last else x
        out = {}
        with pipe.fast.autocast(device):
            for k in branches:
                eps, cached = pipe.model.unet.forward_full(xin, t, branch=k, **kw)
                out[f"full/{k}"] = eps.float()
                out[f"partial/{k}"] = pipe.model.unet.forward_partial(xin, t, cached, branch=k, **kw).float()
        out.update(samples(pipe, precision))
        return out

    def samples(pipe, precision):
        return {name: pipe.sample_x0([first + i for i in seeds], s, CacheSchedule(3, branches[0])).float()
                for name, first in (("sample", 0), ("sample_other_seeds", batch_size))}

    base = passes(ref, "fp32")
    plain = ref.sample_x0(seeds, s, CacheSchedule())
    interval1 = ref.sample_x0(seeds, s, CacheSchedule(1, branches[0]))
    results = {"interval_1_equals_no_cache_bitwise": bool(torch.equal(plain, interval1)), "variants": []}
    for v in variants:
        pipe = ref if v == FastPath() else pipeline(v)
        out = passes(pipe, v.precision)
        errors = {k: rel(out[k], base[k]) for k in out}
        within = max(errors[k] for k in errors if not k.startswith("sample")) <= TOLERANCE[v.precision]
        if v.cuda_graph:  # the graph replays what the step-by-step loop computes, for any seeds
            pipe.fast = replace(v, cuda_graph=False)
            loop = samples(pipe, v.precision)
            pipe.fast = v
            errors["graph_vs_loop"] = max(rel(out[k], loop[k]) for k in loop)
            within = within and errors["graph_vs_loop"] <= TOLERANCE[v.precision]
        results["variants"].append({"variant": str(v), **asdict(v), "tolerance": TOLERANCE[v.precision],
                                    "ok": within, "relative_l2_error": errors})
    results["ok"] = results["interval_1_equals_no_cache_bitwise"] and all(v["ok"] for v in results["variants"])
    return results
