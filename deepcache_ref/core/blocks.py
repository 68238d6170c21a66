"""The building blocks of the Ho et al. U-Net, which CompVis's autoencoders reuse as they are
(`ldm/modules/diffusionmodules/model.py` is the DDPM code): GroupNorm, ResnetBlock, single-head
self-attention, up/down sampling, and the down, mid and up paths built from them. Module names are
the original ones, so state-dict keys match the original checkpoints."""

import torch
import torch.nn as nn
import torch.nn.functional as F


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
