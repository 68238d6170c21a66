"""The VQ-f4 first stage of LDM-4-G (CompVis `VQModelInterface`, taming `VectorQuantizer2`).

Mirrors `ldm/modules/diffusionmodules/model.py` (Encoder, Decoder) and taming-transformers'
`VectorQuantizer2` (legacy, no index remapping). The building blocks are the DDPM ones (same
GroupNorm eps 1e-6, pad-then-stride-2 downsampling, nearest x2 + conv upsampling), without the time
embedding.
"""

import torch
import torch.nn as nn

from ..core.blocks import MidBlock, Normalize, down_levels, nonlinearity, up_levels


class Encoder(nn.Module):
    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels,
                 double_z=False, dropout=0.0, out_ch=None):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, block_in = down_levels(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, 0, dropout, True)
        self.mid = MidBlock(block_in, 0, dropout)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level, down in enumerate(self.down):
            for b in range(self.num_res_blocks):
                h = down.block[b](h)
                if len(down.attn) > 0:
                    h = down.attn[b](h)
            if level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels,
                 dropout=0.0, in_channels=None, double_z=None):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = MidBlock(block_in, 0, dropout)
        self.up, block_in = up_levels(ch, ch_mult, num_res_blocks, attn_resolutions, block_in, resolution, 0, dropout,
                                      True, skips=False)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid(h)
        for level in reversed(range(self.num_resolutions)):
            up = self.up[level]
            for b in range(self.num_res_blocks + 1):
                h = up.block[b](h)
                if len(up.attn) > 0:
                    h = up.attn[b](h)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook entry (squared distance, first index on ties), straight-through."""

    def __init__(self, n_embed, embed_dim):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def forward(self, z):
        """z [B,D,H,W] -> (z_q [B,D,H,W], indices [B,H,W])."""
        b, d, h, w = z.shape
        z = z.permute(0, 2, 3, 1).contiguous()
        flat = z.view(-1, d)
        e = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * torch.einsum("bd,dn->bn", flat, e.t())
        indices = dist.argmin(dim=1)
        z_q = self.embedding(indices).view(z.shape)
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2).contiguous(), indices.view(b, h, w)


class VQModel(nn.Module):
    """VQ autoencoder; `encode` returns the unquantized latent, `decode` quantizes first."""

    def __init__(self, *, embed_dim, n_embed, ddconfig):
        super().__init__()
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def encode(self, x):
        return self.quant_conv(self.encoder(x))

    def decode(self, h):
        z_q, _ = self.quantize(h)
        return self.decoder(self.post_quant_conv(z_q))
