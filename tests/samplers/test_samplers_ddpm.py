"""Samplers on the tiny DDPM U-Nets: parity with ermongroup/ddim and DeepCache goldens."""

import pytest
import torch

from conftest import load_fixture, tiny_ddpm
from deepcache_ref.ddpm.config import DiffusionConfig
from deepcache_ref.ddpm.model import alphas_cumprod
from deepcache_ref.samplers import CacheSchedule, PerImageRNG, ddim_sample, ddpm_sample, make_timesteps, plms_sample

TOL = dict(rtol=1e-4, atol=1e-4)  # manifest: sampler trajectories
ALPHAS = alphas_cumprod(DiffusionConfig())


def _run(sampler, unet, fix, **kw):
    rec = []
    final = sampler(unet, fix["x_T"], fix["seq"], ALPHAS, callback=rec.append, **kw)
    return final, rec


def _check_trajectory(final, rec, fix):
    assert [r["t"] for r in rec] == fix["timesteps_visited"]
    torch.testing.assert_close(torch.stack([r["x"] for r in rec]), fix["xs"][1:], **TOL)
    torch.testing.assert_close(torch.stack([r["x0_pred"] for r in rec]), fix["x0_preds"], **TOL)
    torch.testing.assert_close(final, fix["final"], **TOL)


def _replay_global_rng(seed):
    torch.manual_seed(seed)
    return lambda x: torch.randn_like(x)


CASES = ["ddim_uniform_eta0", "ddim_quad_eta0", "ddim_uniform_eta1_seed4", "ddpm_uniform_seed3", "ddpm_quad_seed3"]


@pytest.mark.parametrize("name", ["T1", "T2"])
@pytest.mark.parametrize("case", CASES)
def test_matches_original_trajectories(name, case):
    unet, _ = tiny_ddpm(name)
    fix = load_fixture(f"ddpm/ddim/{name}_{case}.pt")
    skip = fix["settings"]["skip_type"]
    assert fix["seq"] == make_timesteps(10, skip)
    if case.startswith("ddpm"):
        final, rec = _run(ddpm_sample, unet, fix, noise_fn=_replay_global_rng(3))
    else:
        eta = fix["settings"]["eta"]
        final, rec = _run(ddim_sample, unet, fix, eta=eta, noise_fn=_replay_global_rng(4) if eta else None)
    _check_trajectory(final, rec, fix)


DEEPCACHE = [
    "T2_dc_uniform_N3_branch0", "T2_dc_uniform_N3_branch2", "T2_dc_uniform_N3_branch5", "T2_dc_uniform_N3_branch7",
    "T2_dc_quad_N3_branch2", "T2_dc_quad100_N5_branch1", "T2_dc_uniform_N1_branch2",
    "T2_dc_nonuniform_N3_branch2_center5_pow1.2",
    "T1_dc_uniform_N3_branch0_NONREF_generalized", "T1_dc_uniform_N3_branch1_NONREF_generalized",
    "T1_dc_uniform_N3_branch2_NONREF_generalized",
]


@pytest.mark.parametrize("case", DEEPCACHE)
def test_matches_deepcache_goldens(case):
    fix = load_fixture(f"ddpm/deepcache/{case}.pt")
    s = fix["settings"]
    unet, _ = tiny_ddpm(s["tiny_config"])
    branch = s["branch"] + 1  # original `--branch b` is cache_branch b + 1
    if s["non_uniform"]:  # the original schedule function is buggy: replay its full steps
        cache = CacheSchedule(s["cache_interval"], branch, kind="explicit", explicit_steps=fix["full_step_indices"])
    else:
        cache = CacheSchedule(s["cache_interval"], branch)
    assert fix["seq"] == make_timesteps(s["timesteps"], s["skip_type"])
    final, rec = _run(ddim_sample, unet, fix, cache=cache)
    assert ["full" if r["full"] else "partial" for r in rec] == fix["decisions"]
    _check_trajectory(final, rec, fix)


class CallLog:
    """Wraps a U-Net and records the kind of every call."""

    def __init__(self, unet):
        self.unet, self.calls = unet, []
        self.num_branches = unet.num_branches

    def __call__(self, x, t):
        self.calls.append("forward")
        return self.unet(x, t)

    def forward_full(self, x, t, branch):
        self.calls.append("full")
        return self.unet.forward_full(x, t, branch=branch)

    def forward_partial(self, x, t, cached, branch):
        self.calls.append("partial")
        return self.unet.forward_partial(x, t, cached, branch=branch)


@pytest.mark.parametrize("sampler", [ddim_sample, plms_sample, ddpm_sample])
def test_interval_one_is_the_uncached_sampler_bit_for_bit(sampler):
    unet, _ = tiny_ddpm("T2")
    x_T, seq = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), make_timesteps(10)
    kw = {"noise_fn": PerImageRNG([0, 1]).randn_like} if sampler is ddpm_sample else {}
    plain = sampler(unet, x_T, seq, ALPHAS, **kw)
    kw = {"noise_fn": PerImageRNG([0, 1]).randn_like} if sampler is ddpm_sample else {}
    logged = CallLog(unet)
    cached = sampler(logged, x_T, seq, ALPHAS, cache=CacheSchedule(interval=1, branch=3), **kw)
    assert torch.equal(plain, cached)
    assert set(logged.calls) == {"forward"}


def test_plms_extra_first_call_follows_step_one():
    unet, _ = tiny_ddpm("T2")
    x_T, seq = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), make_timesteps(10)
    logged = CallLog(unet)
    plms_sample(logged, x_T, seq, ALPHAS, cache=CacheSchedule(interval=3, branch=2))
    # step 0 full (keeps the feature), its extra call at t_1 partial like step 1, then steps 1..9;
    # the last full step has no partial step after it, so it needs no cache (plain forward)
    assert logged.calls == ["full", "partial"] + ["partial", "partial", "full"] * 2 + ["partial", "partial", "forward"]
    logged = CallLog(unet)
    plms_sample(logged, x_T, seq, ALPHAS, cache=CacheSchedule(interval=1))
    assert logged.calls == ["forward"] * 11


def test_caching_changes_the_result_and_error_grows_with_interval():
    unet, fwd = tiny_ddpm("T2")
    x_T, seq = load_fixture("ddpm/ddim/T2_ddim_uniform_eta0.pt")["x_T"], make_timesteps(10)
    base = ddim_sample(unet, x_T, seq, ALPHAS)
    errs = [(ddim_sample(unet, x_T, seq, ALPHAS, cache=CacheSchedule(n, 2)) - base).abs().mean() for n in (2, 5)]
    assert 0 < errs[0] < errs[1]


@pytest.mark.parametrize("sampler,kw", [(ddim_sample, {"eta": 1.0}), (ddpm_sample, {})])
def test_sample_alone_equals_same_seed_in_a_batch(sampler, kw):
    unet, _ = tiny_ddpm("T1")
    seeds, seq = [11, 12, 13, 14], make_timesteps(10)
    shape = (4, 3, 16, 16)
    batch_rng = PerImageRNG(seeds)
    batch = sampler(unet, batch_rng.randn(shape), seq, ALPHAS, noise_fn=batch_rng.randn_like, **kw)
    alone_rng = PerImageRNG(seeds[2:3])
    alone = sampler(unet, alone_rng.randn((1, 3, 16, 16)), seq, ALPHAS, noise_fn=alone_rng.randn_like, **kw)
    torch.testing.assert_close(alone, batch[2:3], rtol=1e-5, atol=1e-4)


def test_eta_without_noise_is_a_clear_error():
    unet, _ = tiny_ddpm("T1")
    with pytest.raises(ValueError, match="noise_fn"):
        ddim_sample(unet, torch.randn(1, 3, 16, 16), make_timesteps(10), ALPHAS, eta=1.0)


def test_invalid_branch_fails_before_any_model_call():
    unet, _ = tiny_ddpm("T1")
    logged = CallLog(unet)
    with pytest.raises(ValueError, match="branch 4 is out of range"):
        ddim_sample(logged, torch.randn(1, 3, 16, 16), make_timesteps(10), ALPHAS, cache=CacheSchedule(2, 4))
    assert logged.calls == []
