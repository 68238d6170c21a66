"""`deepcache_ref.compvis`: CompVis's `DDIMSampler` / `PLMSSampler` signature, on a LatentDiffusion-like
object, against the golden runs of CompVis's own samplers and DeepCache's LDM code."""

import pytest
import torch
import torch.nn as nn

from conftest import load_fixture, tiny_ldm
from deepcache_ref.compvis import DDIMSampler, PLMSSampler
from deepcache_ref.errors import UserError
from deepcache_ref.samplers import CacheSchedule, ClassifierFreeGuidance, ddim_sample, make_timesteps
from research_style import CompVisStyleUNet

LATENT = dict(rtol=1e-5, atol=1e-3)  # manifest: x_inter / samples


class LatentDiffusionLike(nn.Module):
    """What CompVis's samplers read of a `LatentDiffusion`: schedule buffers, `apply_model`,
    `model.diffusion_model` (inside a DiffusionWrapper with its `conditioning_key`)."""

    def __init__(self, ours, conditioning_key="crossattn"):
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = CompVisStyleUNet(ours.unet)
        self.model.conditioning_key = conditioning_key
        self.register_buffer("alphas_cumprod", ours.alphas_cumprod.clone())
        self.num_timesteps = len(ours.alphas_cumprod)

    def apply_model(self, x, t, c):
        return self.model.diffusion_model(x, t, context=c)


@pytest.fixture(scope="module")
def models():
    ours = tiny_ldm()
    return ours, LatentDiffusionLike(ours)


def _run(sampler, fix, **extra):
    """The golden run's call (MANIFEST: `sampler.sample(S=10, ..., x_T=x_T, log_every_t=1)`)."""
    if fix["eta"] > 0:  # the reference's global-RNG draws, one per step
        torch.manual_seed(int(fix["noise_seed_before_sampling"]))
    return sampler.sample(S=10, conditioning=fix["c"], batch_size=2, shape=[3, 8, 8], verbose=False,
                          unconditional_guidance_scale=fix["unconditional_guidance_scale"],
                          unconditional_conditioning=fix["uc"] if fix["uses_unconditional_batch"] else None,
                          eta=fix["eta"], x_T=fix["x_T"], **{"log_every_t": 1, **extra})


@pytest.mark.parametrize("name", ["ddim_cfg3", "ddim_cfg1_nouc", "plms_cfg3", "plms_cfg1_nouc", "ddim_cfg3_eta1"])
def test_matches_compvis_own_samplers(models, name):
    _, model = models
    fix = load_fixture(f"ldm/tiny_sample_{name}.pt")
    steps, previews = [], []
    sampler = (PLMSSampler if fix["sampler"] == "plms" else DDIMSampler)(model)
    samples, intermediates = _run(sampler, fix, callback=steps.append,
                                  img_callback=lambda x0, i: previews.append((i, x0)))
    torch.testing.assert_close(samples, fix["samples"], **LATENT)
    torch.testing.assert_close(torch.stack(intermediates["x_inter"]), fix["x_inter"], **LATENT)
    torch.testing.assert_close(torch.stack(intermediates["pred_x0"]), fix["pred_x0"], **LATENT)
    assert steps == [i for i, _ in previews] == list(range(10))
    assert samples.dtype == torch.float32 and len(_run(sampler, fix, log_every_t=100)[1]["x_inter"]) == 3  # x_T, first, last


@pytest.mark.parametrize("name", ["uniform_N3_branch0", "uniform_N3_branch2_fixchain", "nonuniform_N3_pow1.5_branch0"])
def test_with_a_cache_it_matches_deepcache_ldm_goldens_and_our_sampler_bit_for_bit(models, name):
    ours, model = models
    fix = load_fixture(f"ldm/tiny_deepcache_{name}.pt")
    kind = dict(kind="power", power=fix["pow"]) if fix["nonuniform"] else {}
    cache = CacheSchedule(fix["replicate_interval"], fix["replicate_layer"], **kind)
    c = ours.get_learned_conditioning(fix["class_labels"])
    uc = ours.get_learned_conditioning(torch.full((2,), ours.uncond_class))
    samples, log = DDIMSampler(model, cache=cache).sample(
        S=10, conditioning=c, batch_size=2, shape=[3, 8, 8], verbose=False, x_T=fix["x_T"], log_every_t=1,
        unconditional_guidance_scale=fix["unconditional_guidance_scale"], unconditional_conditioning=uc)
    torch.testing.assert_close(samples, fix["samples"], **LATENT)
    by_hand = ddim_sample(ClassifierFreeGuidance(ours.unet, fix["unconditional_guidance_scale"], uc), fix["x_T"],
                          make_timesteps(10, offset=1), ours.alphas_cumprod, cache=cache,
                          final_alpha_cumprod=ours.final_alpha_cumprod, model_kwargs={"context": c})
    assert torch.equal(samples, by_hand)


def test_what_it_does_not_support_is_an_error(models):
    _, model = models
    sampler = DDIMSampler(model)
    args = dict(S=4, batch_size=2, shape=[3, 8, 8], conditioning=torch.zeros(2, 1, 16), verbose=False)
    for bad, message in [({"mask": torch.ones(1)}, "mask=.* is not supported"), ({"x0": torch.ones(1)}, "x0="),
                         ({"quantize_x0": True}, "quantize_x0=True"), ({"temperature": 0.5}, "temperature=0.5"),
                         ({"score_corrector": object()}, "score_corrector="), ({"foo": 1}, "unknown argument 'foo'"),
                         ({"batch_size": 3}, "2 conditionings but batch_size = 3")]:
        with pytest.raises(UserError, match=message):
            sampler.sample(**{**args, **bad})
    with pytest.raises(UserError, match="eta must be 0"):
        PLMSSampler(model).sample(**args, eta=0.5)
    other = LatentDiffusionLike(tiny_ldm(), conditioning_key="hybrid")
    with pytest.raises(UserError, match="conditioning_key 'hybrid' is not supported"):
        DDIMSampler(other)
    with pytest.raises(UserError, match="LatentDiffusion-like"):
        DDIMSampler(nn.Linear(2, 2))


def test_plms_with_a_cache_is_our_plms_sample_bit_for_bit(models):
    from deepcache_ref.samplers import plms_sample

    ours, model = models
    fix = load_fixture("ldm/tiny_sample_plms_cfg3.pt")
    cache = CacheSchedule(3, 1)
    samples, _ = PLMSSampler(model, cache=cache).sample(
        S=10, conditioning=fix["c"], batch_size=2, shape=[3, 8, 8], verbose=False, x_T=fix["x_T"],
        unconditional_guidance_scale=3.0, unconditional_conditioning=fix["uc"])
    by_hand = plms_sample(ClassifierFreeGuidance(ours.unet, 3.0, fix["uc"]), fix["x_T"], make_timesteps(10, offset=1),
                          ours.alphas_cumprod, cache=cache, final_alpha_cumprod=ours.final_alpha_cumprod,
                          model_kwargs={"context": fix["c"]})
    assert torch.equal(samples, by_hand) and not torch.allclose(samples, fix["samples"], atol=1e-4)


@pytest.mark.parametrize("sampler_class,eta,draws", [(DDIMSampler, 0.0, 10), (DDIMSampler, 1.0, 10), (PLMSSampler, 0.0, 11)])
def test_the_global_generator_moves_as_compvis_moves_it(models, sampler_class, eta, draws):
    """CompVis draws noise at every step, eta 0 included (PLMS twice at its first): a loop of batches
    with x_T=None must start each batch from the noise CompVis would."""
    _, model = models
    torch.manual_seed(5)
    sampler_class(model).sample(S=10, conditioning=torch.zeros(2, 1, 16), batch_size=2, shape=[3, 8, 8], eta=eta,
                                verbose=False)
    after = torch.randn(4)
    torch.manual_seed(5)
    for _ in range(1 + draws):  # x_T, then the sampler's draws
        torch.randn(2, 3, 8, 8)
    assert torch.equal(after, torch.randn(4))


def test_guidance_of_a_class_conditional_adm_model(models):
    from deepcache_ref.ldm.unet import UNetModel

    ours, _ = models
    torch.manual_seed(0)
    unet = UNetModel(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,), num_heads=2,
                     num_classes=10).eval()
    model = LatentDiffusionLike(ours, conditioning_key="adm")
    model.model.diffusion_model = CompVisStyleUNet(unet)
    y, uc, x_T = torch.tensor([3, 4]), torch.tensor([9]), torch.randn(2, 3, 8, 8)
    samples, _ = DDIMSampler(model, cache=CacheSchedule(2, 1)).sample(
        S=6, conditioning=y, batch_size=2, shape=[3, 8, 8], x_T=x_T, unconditional_guidance_scale=2.0,
        unconditional_conditioning=uc, verbose=False)
    by_hand = ddim_sample(ClassifierFreeGuidance(unet, 2.0, uc, keyword="y"), x_T, make_timesteps(6, offset=1),
                          ours.alphas_cumprod, cache=CacheSchedule(2, 1), final_alpha_cumprod=ours.final_alpha_cumprod,
                          model_kwargs={"y": y})
    assert torch.equal(samples, by_hand)
