"""`adapt_unet`: DeepCache over a research code base's own U-Net module, as it is.

The modules below are written here the way the research code bases write theirs (their own
`forward`, their own nonlinearity, an ADM-style label embedding, blocks without a context
argument), from this package's building blocks; the adapter must reproduce each module's own
forward bit for bit and keep a partial pass after a full pass exact for every branch.
"""

import math

import pytest
import torch
import torch.nn as nn

from conftest import tiny_ddpm
from deepcache_ref.core.blocks import MidBlock, Normalize, down_levels, up_levels
from deepcache_ref.ddpm.config import DiffusionConfig
from deepcache_ref.ddpm.model import alphas_cumprod
from deepcache_ref.errors import UserError
from deepcache_ref.ldm.unet import Downsample, ResBlock, Upsample, normalization
from deepcache_ref.samplers import (CacheSchedule, ClassifierFreeGuidance, adapt_unet, ddim_sample, make_timesteps,
                                    plms_sample)
from deepcache_ref.samplers.adapters import DDPMUNet, OpenAIUNet

ALPHAS = alphas_cumprod(DiffusionConfig())


def nonlinearity(x):  # what ermongroup/ddim's models/diffusion.py uses (not F.silu: other last bits)
    return x * torch.sigmoid(x)


class ErmongroupStyleModel(nn.Module):
    """ermongroup/ddim's `Model` layout, with a forward written as that code base writes it."""

    def __init__(self, ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16):
        super().__init__()
        self.ch, self.temb_ch, self.num_resolutions, self.num_res_blocks = ch, 4 * ch, len(ch_mult), num_res_blocks
        self.resolution = resolution
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)])
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down, block_in = down_levels(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, self.temb_ch,
                                          0.0, True)
        self.mid = nn.Module()  # a plain container, as in the original
        m = MidBlock(block_in, self.temb_ch, 0.0)
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = m.block_1, m.attn_1, m.block_2
        self.up, block_in = up_levels(ch, ch_mult, num_res_blocks, attn_resolutions, block_in, resolution,
                                      self.temb_ch, 0.0, True)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, x, t):
        half = self.ch // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1))).to(x.device)
        temb = t.float()[:, None] * freqs[None, :]
        temb = torch.cat([torch.sin(temb), torch.cos(temb)], dim=1)
        temb = self.temb.dense[1](nonlinearity(self.temb.dense[0](temb)))
        hs = [self.conv_in(x)]
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](hs[-1], temb)
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                hs.append(self.down[i_level].downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](torch.cat([h, hs.pop()], dim=1), temb)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))


class EmbedSequential(nn.Sequential):
    """guided-diffusion's TimestepEmbedSequential: (x, emb), no context argument."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMStyleUNet(nn.Module):
    """guided-diffusion's `UNetModel` layout: class-conditional (`label_emb`), no cross-attention,
    its own forward(x, timesteps, y)."""

    def __init__(self, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, num_classes=10):
        super().__init__()
        self.model_channels, self.num_classes, self.dtype = model_channels, num_classes, torch.float32
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Embedding(num_classes, emb)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(3, model_channels, 3, padding=1))])
        chans, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.input_blocks.append(EmbedSequential(ResBlock(ch, emb, 0.0, model_channels * mult)))
                ch = model_channels * mult
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                chans.append(ch)
        self.middle_block = EmbedSequential(ResBlock(ch, emb, 0.0), ResBlock(ch, emb, 0.0))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, 0.0, model_channels * mult)]
                ch = model_channels * mult
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(ch, 6, 3, padding=1))  # learned sigma

    def forward(self, x, timesteps, y=None):
        half = self.model_channels // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).to(x.device)
        args = timesteps[:, None].float() * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=-1)) + self.label_emb(y)
        hs, h = [], x.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


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


class CompVisStyleUNet(nn.Module):
    """CompVis's `UNetModel` layout over the tiny LDM's blocks, with CompVis's forward."""

    def __init__(self, ours):
        super().__init__()
        self.model_channels, self.num_classes, self.predict_codebook_ids, self.dtype = ours.model_channels, None, \
            False, torch.float32
        self.time_embed, self.input_blocks, self.middle_block = ours.time_embed, ours.input_blocks, ours.middle_block
        self.output_blocks, self.out = ours.output_blocks, ours.out

    def forward(self, x, timesteps=None, context=None, y=None):
        half = self.model_channels // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
        args = timesteps[:, None].float() * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))
        hs, h = [], x.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h.type(x.dtype))


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
