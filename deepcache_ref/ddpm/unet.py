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


def nonlinearity(x):
    return F.silu(x)  # swish, x * sigmoid(x)


def Normalize(channels):
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class Upsample(nn.Module):
    def __init__(self, channels, with_conv):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=1, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
    def __init__(self, channels, with_conv):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    """Pre-activation residual block; `temb_channels=0` (autoencoders) has no time embedding."""

    def __init__(self, in_channels, out_channels, temb_channels, dropout):
        super().__init__()
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        if temb_channels > 0:
            self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.in_channels, self.out_channels = in_channels, out_channels
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0)

    def forward(self, x, temb=None):
        h = self.conv1(nonlinearity(self.norm1(x)))
        if temb is not None:
            h = h + self.temb_proj(nonlinearity(temb))[:, :, None, None]
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions."""

    def __init__(self, channels):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)  # [B, HW, C]
        k = k.reshape(b, c, hh * ww)  # [B, C, HW]
        w = torch.softmax(torch.bmm(q, k) * (int(c) ** (-0.5)), dim=2)  # [B, HW(query), HW(key)]
        v = v.reshape(b, c, hh * ww)
        h = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


def down_levels(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, temb_channels, dropout, resamp_with_conv):
    """The down path `down.{level}.{block,attn,downsample}` and the channel count it ends with."""
    levels, curr_res = nn.ModuleList(), resolution
    in_ch_mult = (1,) + tuple(ch_mult)
    for level in range(len(ch_mult)):
        block, attn = nn.ModuleList(), nn.ModuleList()
        block_in, block_out = ch * in_ch_mult[level], ch * ch_mult[level]
        for _ in range(num_res_blocks):
            block.append(ResnetBlock(block_in, block_out, temb_channels, dropout))
            block_in = block_out
            if curr_res in attn_resolutions:
                attn.append(AttnBlock(block_in))
        down = nn.Module()
        down.block, down.attn = block, attn
        if level != len(ch_mult) - 1:
            down.downsample = Downsample(block_in, resamp_with_conv)
            curr_res //= 2
        levels.append(down)
    return levels, block_in


def up_levels(ch, ch_mult, num_res_blocks, attn_resolutions, block_in, resolution, temb_channels, dropout,
              resamp_with_conv, skips=True):
    """The up path `up.{level}.{block,attn,upsample}` (up[0] at full resolution) and its final channel
    count. With `skips` each block also takes the matching skip feature (U-Net); without, none (decoder)."""
    levels, curr_res = [], resolution // 2 ** (len(ch_mult) - 1)
    in_ch_mult = (1,) + tuple(ch_mult)
    for level in reversed(range(len(ch_mult))):
        block, attn = nn.ModuleList(), nn.ModuleList()
        block_out = ch * ch_mult[level]
        for b in range(num_res_blocks + 1):
            skip_in = ch * (in_ch_mult[level] if b == num_res_blocks else ch_mult[level]) if skips else 0
            block.append(ResnetBlock(block_in + skip_in, block_out, temb_channels, dropout))
            block_in = block_out
            if curr_res in attn_resolutions:
                attn.append(AttnBlock(block_in))
        up = nn.Module()
        up.block, up.attn = block, attn
        if level != 0:
            up.upsample = Upsample(block_in, resamp_with_conv)
            curr_res *= 2
        levels.insert(0, up)
    return nn.ModuleList(levels), block_in


class MidBlock(nn.Module):
    """`mid.{block_1, attn_1, block_2}`: ResnetBlock, self-attention, ResnetBlock."""

    def __init__(self, channels, temb_channels, dropout):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, temb_channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, temb_channels, dropout)

    def forward(self, h, temb=None):
        return self.block_2(self.attn_1(self.block_1(h, temb)), temb)


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
