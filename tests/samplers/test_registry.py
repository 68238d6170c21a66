"""Every registered sampler, driven by the registry: a new `SamplerSpec` is tested here without
editing this file."""

from dataclasses import replace

import pytest
import torch

from conftest import tiny_ddpm
from deepcache_ref import SAMPLERS, CacheSchedule, Pipeline, build_model, check_sampling, load_config
from deepcache_ref.ddpm.config import DiffusionConfig
from deepcache_ref.ddpm.model import alphas_cumprod
from deepcache_ref.errors import UserError
from deepcache_ref.runs.record import run_settings
from deepcache_ref.samplers import PerImageRNG, SamplerSpec, make_timesteps
from deepcache_ref.samplers.registry import all_options

ALPHAS = alphas_cumprod(DiffusionConfig())
SEEDS = [5, 9]


class CallLog:
    """A U-Net wrapper that records each call: (kind, t, identity of the feature it used or made)."""

    def __init__(self, unet):
        self.unet, self.num_branches, self.calls = unet, unet.num_branches, []

    def __call__(self, x, t):
        self.calls.append(("plain", int(t[0]), None))
        return self.unet(x, t)

    def forward_full(self, x, t, branch):
        eps, cached = self.unet.forward_full(x, t, branch=branch)
        self.calls.append(("full", int(t[0]), id(cached)))
        return eps, cached

    def forward_partial(self, x, t, cached, branch):
        self.calls.append(("partial", int(t[0]), id(cached)))
        return self.unet.forward_partial(x, t, cached, branch=branch)


def _sample(spec, unet, cache=None, sampling=None):
    """The sampler of `spec` on a batch of two seeds, its noise per image (drawn afresh per call)."""
    sampling = sampling or load_config("digits").sampling
    rng = PerImageRNG(SEEDS)
    x_T = PerImageRNG(SEEDS).randn((len(SEEDS), 3, 16, 16))
    kw = spec.kwargs(sampling, build_model(load_config("digits"), "meta"))
    if spec.draws_noise(sampling):
        kw["noise_fn"] = rng.randn_like
    return spec.fn(unet, x_T, make_timesteps(10, "uniform"), ALPHAS, cache=cache, **kw)


def check_invariants(spec):
    """What every sampler must do with DeepCache (used for each entry of the registry)."""
    unet, _ = tiny_ddpm("T1")
    plain = _sample(spec, unet)
    for branch in (0, unet.num_branches - 1):  # interval 1 is the uncached sampler, bit for bit
        assert torch.equal(_sample(spec, unet, CacheSchedule(1, branch)), plain), (spec.name, branch)
    assert torch.equal(_sample(spec, unet), plain), "a run depends on its seeds only"
    for cache in (CacheSchedule(3, 1), CacheSchedule(2, 0, "explicit", explicit_steps=(0, 4, 5))):
        log = CallLog(unet)
        out = _sample(spec, log, cache)
        assert torch.isfinite(out).all() and not torch.equal(out, plain)
        assert len(log.calls) == spec.model_calls(10)
        full = cache.full_mask(10)
        step_of_call = [i for i in range(10) for _ in range(1 + (spec.extra_calls if i == 0 else 0))]
        last_feature = None
        for i, (kind, t, feature) in zip(step_of_call, log.calls):
            if kind == "full":
                last_feature = feature
            if kind == "partial":  # a partial call reuses the feature of the last full step that kept one
                assert feature == last_feature is not None
        kinds = [kind != "partial" for kind, _, _ in log.calls]
        main_calls = [k for j, k in enumerate(kinds) if not (0 < j <= spec.extra_calls)]
        assert main_calls == full, (spec.name, cache)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_registered_sampler_keeps_the_deepcache_invariants(name):
    check_invariants(SAMPLERS[name])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_the_pipeline_runs_every_registered_sampler_as_its_spec_says(name):
    cfg = load_config("digits")
    s = replace(cfg.sampling, sampler=name, steps=8)
    torch.manual_seed(0)
    model = build_model(cfg)
    check_sampling(model, s)
    pipe = Pipeline(model)
    x0 = pipe.sample_x0(SEEDS, s, CacheSchedule(2, 1))
    assert torch.equal(x0, pipe.sample_x0(SEEDS, s, CacheSchedule(2, 1)))
    options = run_settings(cfg.__class__(**{**vars(cfg), "sampling": s}), None, model.timesteps(8), [0], Pipeline(
        model).fast, torch.device("cpu"))["config"]["sampling"]
    own = {o.key for o in SAMPLERS[name].options}
    assert own <= set(options) and not ({o.key for o in all_options()} - own) & set(options), \
        "a run records its own sampler's options and no other's"


def test_a_new_entry_is_picked_up_by_the_pipeline_checks_and_invariants(monkeypatch):
    ddim = SAMPLERS["ddim"]
    spec = SamplerSpec("ddim-copy", "DDIM (copy)", ddim.fn, options=ddim.options, noise=ddim.noise, calibratable=True)
    monkeypatch.setitem(SAMPLERS, spec.name, spec)
    check_invariants(spec)
    cfg = load_config("digits", ["sampling.sampler=ddim-copy", "sampling.steps=8"])
    torch.manual_seed(0)
    pipe = Pipeline(build_model(cfg))
    check_sampling(pipe.model, cfg.sampling)
    same = pipe.sample_x0(SEEDS, replace(cfg.sampling, sampler="ddim"))
    assert torch.equal(pipe.sample_x0(SEEDS, cfg.sampling), same)


def test_options_are_checked_and_belong_to_their_sampler():
    meta = build_model(load_config("digits"), "meta")
    s = load_config("digits").sampling
    for bad, message in [({"eta": float("nan")}, "sampling.eta must be a finite number"),
                         ({"eta": 1.5}, "sampling.eta must be in [0, 1]"),
                         ({"sampler": "dpm++", "solver_order": 4}, "sampling.solver_order must be one of 2, 3"),
                         ({"sampler": "plms", "eta": 0.5}, "sampling.eta applies to the ddim sampler only"),
                         ({"sampler": "ddim", "solver_order": 3}, "sampling.solver_order applies to the dpm++ sampler"),
                         ({"sampler": "euler"}, "unknown sampler 'euler' (ddim | plms | ddpm | dpm++)")]:
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace("|", r"\|")
                           .replace(")", r"\)").replace("+", r"\+")):
            check_sampling(meta, replace(s, **bad))
