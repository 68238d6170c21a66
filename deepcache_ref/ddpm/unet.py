"""The DDPM U-Net of Ho et al. (2020), with DeepCache's full and partial passes.

Mirrors `models/diffusion.py` of ermongroup/ddim (= pesser/pytorch_diffusion): module names,
state-dict keys and arithmetic are the original ones, so the converted TensorFlow checkpoints load
with `strict=True`. `forward_full` / `forward_partial` (DeepCache) come from `DeepCacheUNet`; the
skip list is `hs[0] = conv_in(x)`, then every down ResnetBlock(+attn) and Downsample output, so the
branch mapping holds for any `num_res_blocks`.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.blocks import MidBlock, Normalize, down_levels, nonlinearity, up_levels
from ..core.unet import DeepCacheUNet


def timestep_frequencies(dim):
    """The sinusoidal embedding's dim // 2 frequencies, float32, computed as in the DDPM code."""
    half = dim // 2
    return torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))


def get_timestep_embedding(t, dim, freqs):
    """Sinusoidal embedding [B, dim] of training timesteps t [B] (sin first, as in the DDPM code);
    `freqs = timestep_frequencies(dim)` on t's device (the model keeps it as a buffer)."""
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class UNet(DeepCacheUNet):
    """eps-prediction U-Net; `unet(x [B,C,H,W], t [B] training timesteps) -> eps [B,out_ch,H,W]`."""

    def __init__(
        self,
        *,
        ch=128,                     # base channel count
        out_ch=3,                   # output channels (eps)
        ch_mult=(1, 2, 2, 2),       # channel multiplier per resolution level
        num_res_blocks=2,           # ResnetBlocks per level on the down path (R; R+1 on the up path)
        attn_resolutions=(16,),     # resolutions that get self-attention after each ResnetBlock
        dropout=0.1,                # dropout inside ResnetBlocks (inactive in eval mode)
        resamp_with_conv=True,      # learned convolution in Downsample/Upsample
        in_channels=3,              # image channels
        resolution=32,              # image side length
    ):
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.ch = ch
        self.temb_ch = 4 * ch
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)])

        self.conv_in = nn.Conv2d(in_channels, ch, 3, stride=1, padding=1)
        self.down, block_in = down_levels(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, self.temb_ch,
                                          dropout, resamp_with_conv)
        self.mid = MidBlock(block_in, self.temb_ch, dropout)
        self.up, block_in = up_levels(ch, ch_mult, num_res_blocks, attn_resolutions, block_in, resolution, self.temb_ch,
                                      dropout, resamp_with_conv)  # up[0] is the full-resolution level

        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, stride=1, padding=1)

        # Execution order of the up blocks: (level, block). Up block j consumes hs[-1-j].
        self._up_order = [(l, b) for l in reversed(range(self.num_resolutions)) for b in range(num_res_blocks + 1)]
        self.num_branches = len(self._up_order)  # = len(hs) = 1 + L*R + (L-1)
        # made once on the CPU like the original's, then moved with the model: no copy per call
        self.register_buffer("temb_freqs", timestep_frequencies(ch), persistent=False)

    # -- the three stages shared by every pass --------------------------------------------------

    def _embed(self, t):
        temb = get_timestep_embedding(t, self.ch, self.temb_freqs)
        return self.temb.dense[1](nonlinearity(self.temb.dense[0](temb)))

    def _down(self, x, temb, num_skips):
        """The first `num_skips` entries of the skip list hs (all of them for num_branches)."""
        hs = [self.conv_in(x)]
        for level, down in enumerate(self.down):
            for b in range(self.num_res_blocks):
                if len(hs) == num_skips:
                    return hs
                h = down.block[b](hs[-1], temb)
                if len(down.attn) > 0:
                    h = down.attn[b](h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                if len(hs) == num_skips:
                    return hs
                hs.append(down.downsample(hs[-1]))
        return hs

    def _mid(self, h, temb):
        return self.mid(h, temb)

    def _up_block(self, j, h, temb):
        level, b = self._up_order[j]
        up = self.up[level]
        h = up.block[b](h, temb)
        if len(up.attn) > 0:
            h = up.attn[b](h)
        if b == self.num_res_blocks and level != 0:
            h = up.upsample(h)
        return h

    def _head(self, h):
        return self.conv_out(nonlinearity(self.norm_out(h)))

    def forward(self, x, t):
        return self._forward(x, t)[0]
