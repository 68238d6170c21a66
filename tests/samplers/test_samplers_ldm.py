"""The project's samplers on the tiny LDM: parity with CompVis DDIM/PLMS and DeepCache's LDM code."""

import pytest
import torch

from conftest import load_fixture, tiny_ldm
from deepcache_ref.samplers import CacheSchedule, ClassifierFreeGuidance, ddim_sample, make_timesteps, plms_sample

LATENT = dict(rtol=1e-5, atol=1e-3)  # manifest: x_inter / samples
IMAGE = dict(rtol=0, atol=1e-4)      # manifest: decoded images


@pytest.fixture(scope="module")
def model():
    with torch.no_grad():
        yield tiny_ldm()


def _sample(model, fix, sampler, scale, cache=None, eta=0.0, noise_fn=None):
    c = model.get_learned_conditioning(fix["class_labels"])
    uc = model.get_learned_conditioning(torch.full((2,), model.uncond_class))
    denoiser = ClassifierFreeGuidance(model.unet, scale, uc)
    rec = []
    x0 = sampler(denoiser, fix["x_T"], make_timesteps(10, offset=1), model.alphas_cumprod, eta=eta, cache=cache,
                 final_alpha_cumprod=model.alphas_cumprod[0], model_kwargs={"context": c}, noise_fn=noise_fn,
                 callback=rec.append)
    return x0, rec


def _check(model, fix, x0, rec):
    assert [r["t"] for r in rec] == fix["time_range"].tolist()
    torch.testing.assert_close(torch.stack([r["x"] for r in rec]), fix["x_inter"][1:], **LATENT)
    torch.testing.assert_close(torch.stack([r["x0_pred"] for r in rec]), fix["pred_x0"][1:], **LATENT)
    torch.testing.assert_close(x0, fix["samples"], **LATENT)
    torch.testing.assert_close(model.decode_first_stage(x0), fix["images"], **IMAGE)


@pytest.mark.parametrize("name", ["ddim_cfg3", "ddim_cfg1_nouc", "plms_cfg3", "plms_cfg1_nouc", "ddim_cfg3_eta1"])
def test_matches_compvis_samplers(model, name):
    fix = load_fixture(f"ldm/tiny_sample_{name}.pt")
    assert make_timesteps(10, offset=1) == fix["ddim_timesteps"].tolist()
    sampler = plms_sample if fix["sampler"] == "plms" else ddim_sample
    noise_fn = None
    if fix["eta"] > 0:  # replay the reference's global-RNG draws, one per step
        torch.manual_seed(int(fix["noise_seed_before_sampling"]))
        noise_fn = lambda x: torch.randn(x.shape)  # noqa: E731
    x0, rec = _sample(model, fix, sampler, fix["unconditional_guidance_scale"], eta=fix["eta"], noise_fn=noise_fn)
    _check(model, fix, x0, rec)


DEEPCACHE = ["uniform_N3_branch0", "uniform_N2_branch0", "uniform_N3_branch1_fixchain", "uniform_N3_branch2_fixchain",
             "nonuniform_N3_pow1.5_branch0", "nonuniform_N2_pow1.5_branch0"]


@pytest.mark.parametrize("name", DEEPCACHE)
def test_matches_deepcache_ldm_goldens(model, name):
    fix = load_fixture(f"ldm/tiny_deepcache_{name}.pt")
    kind = dict(kind="power", power=fix["pow"]) if fix["nonuniform"] else {}
    cache = CacheSchedule(fix["replicate_interval"], fix["replicate_layer"], **kind)
    assert cache.full_steps(10) == fix["slow_steps"].tolist()
    x0, rec = _sample(model, fix, ddim_sample, fix["unconditional_guidance_scale"], cache=cache)
    assert [r["full"] for r in rec] == fix["full_step"].tolist()
    _check(model, fix, x0, rec)


def test_guidance_caches_the_doubled_batch(model):
    fix = load_fixture("ldm/tiny_sample_ddim_cfg3.pt")
    seen = []
    unet = model.unet
    real_partial = unet.forward_partial

    def spy(x, t, cached, branch, context):
        seen.append((x.shape[0], cached.shape[0]))
        return real_partial(x, t, cached, branch=branch, context=context)

    unet.forward_partial = spy
    try:
        _sample(model, fix, ddim_sample, 3.0, cache=CacheSchedule(2, 0))
    finally:
        del unet.forward_partial
    assert seen and all(s == (4, 4) for s in seen)


def test_interval_one_is_uncached_bit_for_bit(model):
    fix = load_fixture("ldm/tiny_sample_plms_cfg3.pt")
    for sampler in (ddim_sample, plms_sample):
        plain, _ = _sample(model, fix, sampler, 3.0)
        cached, _ = _sample(model, fix, sampler, 3.0, cache=CacheSchedule(1, 2))
        assert torch.equal(plain, cached)
