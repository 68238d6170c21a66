"""U-Net modules written the way the research code bases write theirs, from this package's blocks:
ermongroup/ddim's `Model`, guided-diffusion's class-conditional `UNetModel` (no cross-attention,
learned sigma) and CompVis's `UNetModel`, each with its own `forward`. No foreign code is copied:
the layouts and forwards are written here from their structure."""

import math

import torch
import torch.nn as nn

from deepcache_ref.core.blocks import MidBlock, Normalize, down_levels, up_levels
from deepcache_ref.ldm.unet import Downsample, ResBlock, Upsample, normalization


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


class CompVisStyleUNet(nn.Module):
    """openaimodel's `UNetModel` layout (CompVis's forward; guided-diffusion's without a context) over
    the blocks of one of our `ldm.UNetModel`s."""

    def __init__(self, ours):
        super().__init__()
        self.model_channels, self.num_classes, self.predict_codebook_ids, self.dtype = ours.model_channels, \
            ours.num_classes, False, torch.float32
        self.time_embed, self.input_blocks, self.middle_block = ours.time_embed, ours.input_blocks, ours.middle_block
        self.output_blocks, self.out = ours.output_blocks, ours.out
        if ours.num_classes is not None:
            self.label_emb = ours.label_emb

    def forward(self, x, timesteps=None, context=None, y=None):
        assert (y is not None) == (self.num_classes is not None)
        half = self.model_channels // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
        args = timesteps[:, None].float() * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs, h = [], x.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h.type(x.dtype))
