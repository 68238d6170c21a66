"""The LDM U-Net (CompVis `openaimodel.UNetModel`) with SpatialTransformer cross-attention.

Mirrors `ldm/modules/diffusionmodules/openaimodel.py` and `ldm/modules/attention.py` of
CompVis/latent-diffusion @ a506df5 for the configuration family of cin256-v2 (spatial transformer,
no scale-shift norm, conv resampling, legacy head sizes): same module names, so the checkpoint's
`model.diffusion_model.*` tensors load with `strict=True`. Its passes (plain, full, partial) are
those of `samplers.adapters.OpenAIUNet`, the adapter of openaimodel's `UNetModel`: `hs[i]` is the
output of `input_blocks[i]`; output block j consumes `hs[-1-j]`.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.unet import DeepCacheUNet
from ..errors import UserError
from ..samplers.adapters import OpenAIUNet, openai_timestep_frequencies


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def normalization(channels):
    return GroupNorm32(32, channels)


class ResBlock(nn.Module):
    """`in_layers`, `emb_layers`, `out_layers`, `skip_connection`; with `use_scale_shift_norm` the
    embedding scales and shifts the second norm's output; `up` / `down` resample inside the block
    (between the first norm + SiLU and the first convolution, and on the skip path)."""

    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_conv=False, use_scale_shift_norm=False,
                 up=False, down=False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm, self.updown = use_scale_shift_norm, up or down
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        if up or down:
            resample = Upsample if up else Downsample
            self.h_upd, self.x_upd = resample(channels, False), resample(channels, False)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm
                                                             else out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 3 if use_conv else 1, padding=1 if use_conv else 0)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[2](self.h_upd(self.in_layers[1](self.in_layers[0](x))))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """`op`: a stride-2 convolution, or 2x2 average pooling without `use_conv`."""

    def __init__(self, channels, use_conv=True):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, stride=2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then `conv` with `use_conv`."""

    def __init__(self, channels, use_conv=True):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class QKVAttention(nn.Module):
    """Multi-head attention on a fused [B, 3*H*C, T] qkv. `legacy` (openaimodel's QKVAttentionLegacy)
    splits the heads before q/k/v; otherwise q/k/v are split first (`use_new_attention_order`)."""

    def __init__(self, n_heads, legacy=True):
        super().__init__()
        self.n_heads, self.legacy = n_heads, legacy

    def forward(self, qkv):
        b, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        scale = 1 / math.sqrt(math.sqrt(ch))  # on q and k each: steadier in half precision
        if self.legacy:
            q, k, v = qkv.reshape(b * self.n_heads, ch * 3, length).split(ch, dim=1)
            q, k = q * scale, k * scale
        else:
            q, k, v = qkv.chunk(3, dim=1)
            q, k = (q * scale).view(b * self.n_heads, ch, length), (k * scale).view(b * self.n_heads, ch, length)
            v = v.reshape(b * self.n_heads, ch, length)
        weight = torch.einsum("bct,bcs->bts", q, k)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        return torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)


class AttentionBlock(nn.Module):
    """Self-attention over the positions (ADM's and CompVis's `AttentionBlock`): `norm`, `qkv` and
    `proj_out` (1-d convolutions), heads from `num_heads` or `num_head_channels`."""

    def __init__(self, channels, num_heads=1, num_head_channels=-1, use_new_attention_order=False):
        super().__init__()
        heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.attention = QKVAttention(heads, legacy=not use_new_attention_order)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.0):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = context_dim or query_dim
        self.scale = dim_head**-0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

    def _split(self, x):  # [B, N, H*D] -> [B*H, N, D]
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, -1).permute(0, 2, 1, 3).reshape(b * self.heads, n, -1)

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(context)), self._split(self.to_v(context))
        attn = (torch.bmm(q, k.transpose(1, 2)) * self.scale).softmax(dim=-1)  # [B*H, N, M]
        out = torch.bmm(attn, v)
        b = x.shape[0]
        out = out.reshape(b, self.heads, x.shape[1], -1).permute(0, 2, 1, 3).reshape(b, x.shape[1], -1)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, dropout=0.0, context_dim=None):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head, dropout=dropout)  # self-attention
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head, dropout=dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, context_dim=None):
        super().__init__()
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner_dim, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner_dim, n_heads, d_head, dropout, context_dim) for _ in range(depth)]
        )
        self.proj_out = nn.Conv2d(inner_dim, in_channels, 1)

    def forward(self, x, context):
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x))
        y = y.permute(0, 2, 3, 1).reshape(b, h * w, -1)  # [B, HW, C] tokens
        for block in self.transformer_blocks:
            y = block(y, context)
        y = y.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.proj_out(y) + x


class TimestepEmbedSequential(nn.Sequential):
    """Passes the time embedding to ResBlocks and the context to SpatialTransformers."""

    def forward(self, x, emb, context):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNetModel(DeepCacheUNet):
    """openaimodel's eps-prediction U-Net: `unet(x [B,C,H,W], t [B], context=c, y=labels) -> eps`
    (twice the channels with learned sigma). Its passes are `samplers.adapters.OpenAIUNet`'s, as for
    CompVis's and guided-diffusion's own `UNetModel`.

    The constructor takes the arguments of both code bases' `UNetModel` under their names (CompVis's
    `unet_config.params`, or what guided-diffusion's `create_model` passes; `adm_unet` takes
    `model_and_diffusion_defaults()`), so their state dicts load with `strict=True`: cross-attention
    (`use_spatial_transformer`, `context_dim`, `transformer_depth`) or self-attention
    (`AttentionBlock`, legacy or new head order), class labels (`num_classes`: `label_emb`),
    scale-shift norm, resampling ResBlocks (`resblock_updown`), average-pool / no-conv resampling
    (`conv_resample=False`), heads by count or by width. Refused: `dims` other than 2, `use_fp16`
    (load in float32; autocast gives half precision), `n_embed` (codebook prediction).
    """

    structure = OpenAIUNet

    def __init__(
        self,
        *,
        in_channels=3,                        # input channels (latent or image)
        out_channels=3,                       # eps channels (twice the input's with learned sigma)
        model_channels=192,                   # base channel count
        channel_mult=(1, 2, 4, 8),            # channel multiplier per level
        num_res_blocks=2,                     # ResBlocks per level (down); +1 on the way up
        attention_resolutions=(8, 4, 2),      # downsampling factors that get attention
        num_heads=-1,                         # heads (head width = channels // heads) ...
        num_head_channels=-1,                 # ... or channels per head
        num_heads_upsample=-1,                # heads of the up path's AttentionBlocks (-1: num_heads)
        use_spatial_transformer=False,        # cross-attention SpatialTransformers instead of AttentionBlocks
        transformer_depth=1,                  # BasicTransformerBlocks per SpatialTransformer
        context_dim=None,                     # width of the cross-attention context
        num_classes=None,                     # class-conditional: label_emb added to the time embedding
        use_scale_shift_norm=False,
        resblock_updown=False,                # resample with ResBlocks instead of Down/Upsample
        conv_resample=True,                   # learned convolutions in Down/Upsample
        use_new_attention_order=False,        # AttentionBlock: split q/k/v before the heads
        legacy=True,                          # CompVis: False sizes heads by num_head_channels (its rule, below)
        dropout=0.0,
        dims=2,
        use_fp16=False,
        n_embed=None,
        image_size=None,                      # accepted, as in both code bases; the U-Net takes any size
        use_checkpoint=False,                 # gradient checkpointing: no effect on sampling
    ):
        super().__init__()
        if dims != 2 or use_fp16 or n_embed is not None:
            raise UserError(f"UNetModel: dims={dims}, use_fp16={use_fp16}, n_embed={n_embed} are not supported (2-d, "
                            "float32 weights, eps prediction); use autocast for half precision")
        if num_heads == -1 and num_head_channels == -1:
            raise UserError("UNetModel: set num_heads or num_head_channels")
        if use_spatial_transformer != (context_dim is not None):
            raise UserError("UNetModel: use_spatial_transformer and context_dim go together (cross-attention)")
        self.in_channels, self.model_channels, self.num_classes = in_channels, model_channels, num_classes
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def attention(ch, heads_of_block):
            """CompVis's rule for heads and head width (guided-diffusion's when legacy)."""
            heads = num_heads if num_head_channels == -1 else ch // num_head_channels
            width = ch // num_heads if num_head_channels == -1 else num_head_channels
            if legacy:
                width = ch // heads if use_spatial_transformer else num_head_channels
            if use_spatial_transformer:
                return SpatialTransformer(ch, heads, width, transformer_depth, dropout, context_dim)
            return AttentionBlock(ch, heads_of_block, width, use_new_attention_order)

        def resblock(ch, out=None, **updown):
            return ResBlock(ch, emb_dim, dropout, out, use_scale_shift_norm=use_scale_shift_norm, **updown)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        chans, ds, first = [ch], 1, ch
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [resblock(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down = resblock(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(resblock(ch), attention(ch, num_heads), resblock(ch))

        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [resblock(ch + chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attention(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(first, out_channels, 3, padding=1))
        # made once on the CPU like the original's, then moved with the model: no copy per call
        self.register_buffer("time_freqs", openai_timestep_frequencies(model_channels), persistent=False)


ADM_DIFFUSION_KEYS = ("diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
                      "rescale_timesteps", "rescale_learned_sigmas")  # model_and_diffusion_defaults' diffusion half
ADM_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


def adm_unet(image_size, num_channels, num_res_blocks, channel_mult="", learn_sigma=False, class_cond=False,
             attention_resolutions="16", num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
             use_scale_shift_norm=False, dropout=0.0, resblock_updown=False, use_fp16=False,
             use_new_attention_order=False, use_checkpoint=False, **diffusion):
    """The U-Net of guided-diffusion's `create_model` from its arguments as
    `model_and_diffusion_defaults()` names them (attention at the given *resolutions*, ImageNet's
    1000 classes with `class_cond`, 6 output channels with `learn_sigma`); the diffusion half of the
    defaults is accepted and not used here."""
    unknown = sorted(set(diffusion) - set(ADM_DIFFUSION_KEYS))
    if unknown:
        raise UserError(f"adm_unet: unknown argument(s) {', '.join(unknown)}")
    if channel_mult == "":
        if image_size not in ADM_CHANNEL_MULT:
            raise UserError(f"adm_unet: no default channel_mult for image_size {image_size}; give channel_mult")
        mult = ADM_CHANNEL_MULT[image_size]
    else:
        mult = tuple(int(m) for m in str(channel_mult).split(","))
    return UNetModel(
        image_size=image_size, in_channels=3, model_channels=num_channels, out_channels=6 if learn_sigma else 3,
        num_res_blocks=num_res_blocks, attention_resolutions=tuple(image_size // int(r) for r in
                                                                   str(attention_resolutions).split(",")),
        dropout=dropout, channel_mult=mult, num_classes=1000 if class_cond else None, use_checkpoint=use_checkpoint,
        use_fp16=use_fp16, num_heads=num_heads, num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample, use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown, use_new_attention_order=use_new_attention_order)
