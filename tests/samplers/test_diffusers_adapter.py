"""`adapt_unet` over diffusers' own `UNet2DModel` (diffusers is a test dependency): its forward bit
for bit, DeepCache exact for every branch, and our DDIM against diffusers' `DDIMScheduler`."""

import pytest
import torch

from deepcache_ref.errors import UserError
from deepcache_ref.samplers import CacheSchedule, adapt_unet, ddim_sample, make_timesteps
from deepcache_ref.samplers.adapters import DiffusersUNet2D

diffusers = pytest.importorskip("diffusers")

SMALL = dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
CONFIGS = {
    "default": ({}, 8),  # UNet2DModel() as diffusers builds it (274M parameters), on 8x8 inputs
    "attention": (dict(SMALL, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")), 16),
    "skip samples, Fourier time, centred input": (dict(
        SMALL, down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
        up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"), time_embedding_type="fourier",
        center_input_sample=True), 16),
    "resnet resampling, classes, scale-shift, learned time": (dict(
        SMALL, down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"), downsample_type="resnet", upsample_type="resnet",
        num_class_embeds=10, resnet_time_scale_shift="scale_shift", time_embedding_type="learned",
        num_train_timesteps=1000), 16),
}


def _model(name):
    kwargs, size = CONFIGS[name]
    torch.manual_seed(0)
    module = diffusers.UNet2DModel(**kwargs).eval()
    for p in module.parameters():  # diffusers zero-initialises some convolutions: make every path count
        p.data.add_(torch.randn_like(p) * 0.02)
    kw = {"class_labels": torch.tensor([1, 7])} if kwargs.get("num_class_embeds") else {}
    t = torch.tensor([0.5, 0.02]) if kwargs.get("time_embedding_type") == "fourier" else torch.tensor([999, 20])
    return module, torch.randn(2, module.config.in_channels, size, size), t, kw


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "default" else n for n in CONFIGS])
def test_the_adapter_is_unet2dmodels_forward_and_caches_exactly(name):
    module, x, t, kw = _model(name)
    unet = adapt_unet(module)
    assert isinstance(unet, DiffusersUNet2D) and unet.module is module
    with torch.no_grad():
        own = module(x, t, **kw).sample
        assert torch.equal(unet(x, t, **kw), own)
        for k in range(unet.num_branches):
            eps, cached = unet.forward_full(x, t, branch=k, **kw)
            assert torch.equal(eps, own), k
            assert torch.equal(unet.forward_partial(x, t, cached, branch=k, **kw), own), k


def test_our_ddim_equals_ddim_scheduler_uncached_and_caches_the_module_directly():
    module, _, _, _ = _model("attention")
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                        set_alpha_to_one=True)
    scheduler.set_timesteps(10)
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    x = x_T.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(module(x, t).sample, t, x, eta=0.0).prev_sample
    seq = make_timesteps(10)
    assert seq == sorted(scheduler.timesteps.tolist())
    ours = ddim_sample(module, x_T, seq, scheduler.alphas_cumprod)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)
    assert torch.equal(ddim_sample(module, x_T, seq, scheduler.alphas_cumprod, cache=CacheSchedule(1, 3)), ours)
    cached = ddim_sample(module, x_T, seq, scheduler.alphas_cumprod, cache=CacheSchedule(3, 1))
    assert 0 < (cached - ours).abs().max() < 0.1 * ours.abs().max()


def test_what_it_does_not_cover_is_refused_by_name():
    cond = diffusers.UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                          norm_num_groups=8, cross_attention_dim=16,
                                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    with pytest.raises(UserError, match="UNet2DConditionModel: block type.*CrossAttnDownBlock2D.*not supported"):
        adapt_unet(cond)  # Stable Diffusion's diffusers U-Net: the DeepCache package on PyPI covers it
    module, x, t, _ = _model("resnet resampling, classes, scale-shift, learned time")
    with pytest.raises(UserError, match="needs class_labels="):
        adapt_unet(module)(x, t)


def test_conversion_refuses_in_memory_what_it_refuses_on_disk():
    from deepcache_ref.ddpm.diffusers import from_module
    from deepcache_ref.errors import ConfigError

    with pytest.raises(ConfigError, match="UNet2DModel.config: .* is .*; this U-Net \\(Ho et al.\\) needs"):
        from_module(diffusers.UNet2DModel())  # the default configuration is another function: refused, not converted
    ho = diffusers.UNet2DModel(sample_size=16, block_out_channels=(32, 64), layers_per_block=1,
                               down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                               up_block_types=("AttnUpBlock2D", "UpBlock2D"), freq_shift=1, flip_sin_to_cos=False,
                               downsample_padding=0, norm_eps=1e-6, attention_head_dim=None).eval()
    ours = from_module(ho)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([999, 20])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t), ho(x, t).sample, rtol=1e-4, atol=1e-4)


def test_freeu_is_refused():
    module, _, _, _ = _model("attention")
    for name, value in dict(s1=0.9, s2=0.2, b1=1.2, b2=1.4).items():
        setattr(module.up_blocks[1], name, value)
    with pytest.raises(UserError, match="FreeU"):
        adapt_unet(module)


def test_the_hub_cifar10_unet_has_the_branch_count_the_readme_gives():
    """README's table: google/ddpm-cifar10-32 has 12 cache branches (4 up blocks of 3 resnets)."""
    import json

    from conftest import FIXTURES

    config = json.loads((FIXTURES / "diffusers/hub_configs/ddpm-cifar10-32/config.json").read_text())
    with torch.device("meta"):
        unet = diffusers.UNet2DModel.from_config(config)
    assert adapt_unet(unet).num_branches == 12
