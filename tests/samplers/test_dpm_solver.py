"""DPM-Solver++ with DeepCache: parity with diffusers, interval 1 bit for bit, partial steps in the
multistep history."""

from dataclasses import replace

import pytest
import torch

import deepcache_ref
from conftest import FIXTURES, tiny_ldm
from deepcache_ref import Pipeline
from deepcache_ref.samplers import CacheSchedule, ClassifierFreeGuidance, dpm_solver_pp_sample, make_timesteps

TINY = FIXTURES / "diffusers/tiny_ddpm"


@pytest.fixture(scope="module")
def tiny():
    return deepcache_ref.load_model(TINY), torch.load(TINY / "dpm_solver_pp.pt", weights_only=True)


def test_matches_diffusers_multistep_dpm_solver_pp(tiny):
    model, golden = tiny
    assert len(golden["runs"]) == 4
    for run in golden["runs"]:
        timesteps = make_timesteps(run["steps"], "linspace")
        assert timesteps[::-1] == run["timesteps"]
        x0 = dpm_solver_pp_sample(model.unet, golden["x_T"], timesteps, model.alphas_cumprod, order=run["order"])
        assert float((x0 - run["x_0"]).norm() / run["x_0"].norm()) < 1e-5, (run["order"], run["steps"])


@pytest.mark.slow
@pytest.mark.parametrize("order", [2, 3])
def test_interval_1_is_the_uncached_solver_bit_for_bit(tiny, order):
    model, golden = tiny
    seq = make_timesteps(10, "linspace")
    plain = dpm_solver_pp_sample(model.unet, golden["x_T"], seq, model.alphas_cumprod, order=order)
    for branch in (0, 3):
        cached = dpm_solver_pp_sample(model.unet, golden["x_T"], seq, model.alphas_cumprod, order=order,
                                      cache=CacheSchedule(1, branch))
        assert torch.equal(plain, cached)


class PartialIsFull:
    """A U-Net whose partial pass ignores the cache and runs whole (plus `shift`)."""

    def __init__(self, unet, shift=0.0):
        self.unet, self.shift, self.num_branches = unet, shift, unet.num_branches

    def __call__(self, x, t):
        return self.unet(x, t)

    def forward_full(self, x, t, branch):
        return self.unet.forward_full(x, t, branch=branch)

    def forward_partial(self, x, t, cached, branch):
        return self.unet(x, t) + self.shift


def test_partial_steps_feed_the_multistep_history_like_full_ones(tiny):
    model, golden = tiny
    seq, cache = make_timesteps(12, "linspace"), CacheSchedule(3, 1)
    steps = []
    exact = dpm_solver_pp_sample(PartialIsFull(model.unet), golden["x_T"], seq, model.alphas_cumprod, order=3,
                                 cache=cache, callback=lambda d: steps.append(d["full"]))
    assert steps == cache.full_mask(12)
    assert torch.equal(exact, dpm_solver_pp_sample(model.unet, golden["x_T"], seq, model.alphas_cumprod, order=3))
    shifted = dpm_solver_pp_sample(PartialIsFull(model.unet, 1e-2), golden["x_T"], seq, model.alphas_cumprod,
                                   order=3, cache=cache)
    assert not torch.allclose(shifted, exact, atol=1e-4)  # what a partial step returns is used
    real = dpm_solver_pp_sample(model.unet, golden["x_T"], seq, model.alphas_cumprod, order=3, cache=cache)
    assert torch.isfinite(real).all() and not torch.equal(real, exact)


def test_the_pipeline_runs_dpm_solver_on_ldm_with_guidance():
    model = tiny_ldm()
    s = replace(model.config.sampling, sampler="dpm++", steps=6, scale=3.0, cache_interval=2)
    x0 = Pipeline(model).sample_x0([0, 1], s, classes=[3, 4])
    denoiser, kw = model.denoiser([3, 4], 3.0)
    assert isinstance(denoiser, ClassifierFreeGuidance)
    from deepcache_ref.samplers import PerImageRNG

    by_hand = dpm_solver_pp_sample(denoiser, PerImageRNG([0, 1]).randn((2, *model.sample_shape)), model.timesteps(6),
                                   model.alphas_cumprod, order=2, cache=CacheSchedule(2, 0), **kw)
    assert torch.equal(x0, by_hand)
