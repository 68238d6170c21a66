"""`adapt_unet`: DeepCache over a research code base's own U-Net module, as it is.

The modules of `research_style.py` are written the way the research code bases write theirs (their
own `forward`, their own nonlinearity, an ADM-style label embedding, blocks without a context
argument); the adapter must reproduce each module's own forward bit for bit and keep a partial pass
after a full pass exact for every branch.
"""

import pytest
import torch
import torch.nn as nn

from conftest import tiny_ddpm
from deepcache_ref.ddpm.config import DiffusionConfig
from deepcache_ref.ddpm.model import alphas_cumprod
from deepcache_ref.errors import UserError
from deepcache_ref.samplers import (CacheSchedule, ClassifierFreeGuidance, adapt_unet, ddim_sample, make_timesteps,
                                    plms_sample)
from deepcache_ref.samplers.adapters import DDPMUNet, OpenAIUNet
from research_style import ADMStyleUNet, CompVisStyleUNet, ErmongroupStyleModel, nonlinearity

ALPHAS = alphas_cumprod(DiffusionConfig())


def _check_exact(module, x, t, **kw):
    unet = adapt_unet(module)
    assert unet.module is module  # the module's own parameters: nothing copied or converted
    own = module(x, t, **kw)
    assert torch.equal(unet(x, t, **kw), own), "the plain pass is the module's own forward"
    for k in range(unet.num_branches):
        eps, cached = unet.forward_full(x, t, branch=k, **kw)
        assert torch.equal(eps, own)
        assert torch.equal(unet.forward_partial(x, t, cached, branch=k, **kw), own), k
    return unet


@pytest.fixture(scope="module")
def ermongroup():
    torch.manual_seed(0)
    return ErmongroupStyleModel().eval()


@pytest.fixture(scope="module")
def adm():
    torch.manual_seed(0)
    return ADMStyleUNet().eval()


def test_an_ermongroup_model_is_cached_exactly_as_it_is(ermongroup):
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([999, 10])
    unet = _check_exact(ermongroup, x, t)
    assert isinstance(unet, DDPMUNet) and unet.num_branches == 1 + 2 * 1 + 1
    assert unet.nonlinearity is nonlinearity  # the module's own code's nonlinearity, not ours


def test_our_ddpm_unet_runs_through_the_same_adapter(ermongroup):
    from deepcache_ref.ddpm import UNet

    ours = UNet(ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0,
                resolution=16).eval()
    ours.load_state_dict(ermongroup.state_dict(), strict=True)  # the same names and shapes
    assert isinstance(ours._passes(), DDPMUNet)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([999, 10])
    torch.testing.assert_close(ours(x, t), ermongroup(x, t), rtol=1e-5, atol=1e-5)  # F.silu vs x * sigmoid(x)


def test_an_adm_unet_with_labels_and_learned_sigma_is_cached_exactly(adm):
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([500, 20]), torch.tensor([3, 7])
    unet = _check_exact(adm, x, t, y=y)
    assert isinstance(unet, OpenAIUNet) and not unet.takes_context
    assert not torch.equal(unet(x, t, y=torch.tensor([4, 7])), unet(x, t, y=y))  # the labels reach the output
    with pytest.raises(UserError, match="class-conditional: give the labels y="):
        unet(x, t)
    with pytest.raises(UserError, match="takes no cross-attention context"):
        unet(x, t, y=y, context=torch.zeros(2, 1, 8))


def test_a_compvis_unet_with_cross_attention_is_cached_exactly():
    from conftest import tiny_ldm

    model = tiny_ldm()
    x, t = torch.randn(2, *model.sample_shape), torch.tensor([900, 51])
    context = model.get_learned_conditioning(torch.tensor([1, 2]))
    unet = _check_exact(CompVisStyleUNet(model.unet), x, t, context=context)
    assert isinstance(unet, OpenAIUNet) and unet.takes_context
    assert isinstance(model.unet._passes(), OpenAIUNet)  # ours runs through the same adapter
    assert torch.equal(model.unet(x, t, context=context), unet(x, t, context=context))


def test_every_sampler_takes_a_foreign_module_directly(ermongroup):
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    seq = make_timesteps(10)
    for sample in (ddim_sample, plms_sample):
        plain = sample(ermongroup, x_T, seq, ALPHAS)
        assert torch.equal(sample(ermongroup, x_T, seq, ALPHAS, cache=CacheSchedule(1, 2)), plain)
        cached = sample(ermongroup, x_T, seq, ALPHAS, cache=CacheSchedule(3, 0))
        assert torch.equal(cached, sample(adapt_unet(ermongroup), x_T, seq, ALPHAS, cache=CacheSchedule(3, 0)))
        assert 0 < (cached - plain).abs().max() < 0.1 * plain.abs().max()  # close, not equal


def test_guidance_wraps_a_foreign_module():
    from conftest import tiny_ldm

    model = tiny_ldm()
    foreign = CompVisStyleUNet(model.unet)
    uncond = model.get_learned_conditioning(torch.tensor([model.uncond_class]))
    x_T, seq = torch.randn(2, *model.sample_shape), model.timesteps(6)
    kw = dict(final_alpha_cumprod=model.final_alpha_cumprod,
              model_kwargs={"context": model.get_learned_conditioning(torch.tensor([1, 2]))})
    theirs = ddim_sample(ClassifierFreeGuidance(foreign, 3.0, uncond), x_T, seq, model.alphas_cumprod,
                         cache=CacheSchedule(2, 0), **kw)
    ours = ddim_sample(ClassifierFreeGuidance(model.unet, 3.0, uncond), x_T, seq, model.alphas_cumprod,
                       cache=CacheSchedule(2, 0), **kw)
    assert torch.equal(theirs, ours)


def test_what_no_structure_fits_is_refused_by_name():
    unet, _ = tiny_ddpm("T1")
    assert adapt_unet(unet) is unet  # already follows the contract
    with pytest.raises(UserError, match=r"Linear is not a U-Net this package can cache: it lacks"):
        adapt_unet(nn.Linear(2, 2))
    partial = nn.Module()
    partial.time_embed, partial.input_blocks, partial.model_channels = nn.Identity(), nn.ModuleList(), 4
    with pytest.raises(UserError, match="lacks middle_block, output_blocks, out"):
        adapt_unet(partial)


def test_a_module_whose_forward_does_more_is_refused(adm):
    class SuperResStyle(ADMStyleUNet):  # guided-diffusion's SuperResModel: upsamples and concatenates low_res first
        def forward(self, x, timesteps, low_res=None, **kwargs):
            return super().forward(x, timesteps, **kwargs)

    with pytest.raises(UserError, match="SuperResStyle.forward takes low_res"):
        adapt_unet(SuperResStyle())


def test_learned_range_on_a_chain_that_stops_above_zero(adm):
    from deepcache_ref.samplers import ddpm_sample

    x_T, y = torch.randn(1, 3, 16, 16), torch.tensor([2])
    out = ddpm_sample(adm, x_T, make_timesteps(5, offset=1), ALPHAS, var_type="learned_range", model_kwargs={"y": y},
                      noise_fn=torch.randn_like)
    assert torch.isfinite(out).all()
