"""DeepCache on the U-Net you already have: the U-Net contract over a module object, by its structure.

    unet = adapt_unet(module)      # shares the module's parameters: no copy, no conversion
    eps = unet(x, t, **kw); eps, cached = unet.forward_full(x, t, branch=k, **kw)
    eps = unet.forward_partial(x, t, cached, branch=k, **kw); unet.num_branches

A U-Net pushes skip features `hs[0..n-1]` on the way down; up block j (in execution order)
consumes `hs[n-1-j]`. For `cache_branch = k` (Ma et al., CVPR 2024, Algorithm 1):

* `forward_full` runs everything and also returns the cached feature: the input `h` of the up
  block that consumes `hs[k]` (block n-1-k), taken before the concatenation;
* `forward_partial` recomputes `hs[0..k]` only, then up blocks n-1-k..n-1 from the cached feature,
  then the output head.

`CachedPasses` writes these passes once, over five stages that a structure provides: `_embed(t,
**cond)` (it sees the conditioning, so a label embedding fits), `_down(x, emb, num_skips, **cond)`,
`_mid(h, emb, **cond)`, `_up_block(j, h, skip, emb, **cond)` (up block j on the running state h and
its skip feature) and `_head(h, x, t)`. The running state, and so the cached feature, is the
feature map `h`, or `(h, skip_sample)` for U-Nets that carry a skip sample along the up path. Every pass runs the same stages stopped at different depths, so a partial pass right
after a full pass at the same inputs reproduces it bit for bit. The stages call the module's own
blocks in the module's own order, so the plain pass equals the module's own forward.

Structures (`STRUCTURES`, tried in order):

* `OpenAIUNet`: openaimodel's `UNetModel` (CompVis latent-diffusion and Stable Diffusion's original
  `ldm`; openai/guided-diffusion's ADM): `time_embed`, optional `label_emb` (labels `y`),
  `input_blocks`, `middle_block`, `output_blocks`, `out`; `hs[i]` is the output of
  `input_blocks[i]`. Blocks get the cross-attention `context` where they take one.
* `DDPMUNet`: ermongroup/ddim's (and pesser/pytorch_diffusion's) `Model`: `temb.dense`, `conv_in`,
  `down`, `mid`, `up`, `norm_out`, `conv_out`; `hs[0] = conv_in(x)`, then every down ResnetBlock
  (+attention) and Downsample output.
* `DiffusersUNet2D`: diffusers' `UNet2DModel` in the configurations its own forward runs (the
  down/up block types in `DiffusersUNet2D.BLOCKS`, skip-sample blocks included; time embeddings
  positional, learned or Fourier; class embeddings; `center_input_sample`): `hs[0] = conv_in(x)`,
  then every down resnet(+attention) and downsampler output, as diffusers' own residuals. Class
  labels are `class_labels=`; the output is the sample tensor (what `.sample` holds).

This package's own U-Nets (`ddpm.UNet`, `ldm.UNetModel`) mirror these structures and run through
the same classes.
"""

import functools
import inspect
import math
import sys

import torch
import torch.nn.functional as F

from ..errors import UserError

CONTRACT = ("forward_full", "forward_partial", "num_branches")


def ddpm_timestep_frequencies(dim):
    """The DDPM code's sinusoidal frequencies (dim // 2 of them, float32, on the CPU)."""
    half = dim // 2
    return torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))


def ddpm_timestep_embedding(t, dim, freqs):
    """[B, dim] embedding of training timesteps t [B], sin first, as in the DDPM code."""
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1, 0, 0)) if dim % 2 == 1 else emb


def openai_timestep_frequencies(dim, max_period=10000):
    """openaimodel's sinusoidal frequencies (dim // 2 of them, float32, on the CPU)."""
    return torch.exp(-math.log(max_period) * torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))


def openai_timestep_embedding(t, dim, freqs):
    """[B, dim] embedding of training timesteps t [B], cos first, as in openaimodel."""
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class CachedPasses:
    """The plain, full and partial passes over a structure's stages (see the module docstring)."""

    num_branches: int

    def __init__(self, module):
        self.module = module

    def _up(self, h, hs, emb, start, cache_at=None, **cond):
        cached = None
        for j in range(start, self.num_branches):
            if j == cache_at:
                cached = h
            h = self._up_block(j, h, hs.pop(), emb, **cond)
        return h, cached

    def _check_branch(self, branch):
        if not 0 <= branch < self.num_branches:
            raise UserError(f"cache branch {branch} is out of range: this U-Net has branches 0..{self.num_branches - 1}")

    def _forward(self, x, t, cache_at=None, **cond):
        emb = self._embed(t, **cond)
        hs = self._down(x, emb, self.num_branches, **cond)
        h, cached = self._up(self._mid(hs[-1], emb, **cond), hs, emb, 0, cache_at, **cond)
        return self._head(h, x, t), cached

    def __call__(self, x, t, **cond):
        """The plain pass: the module's forward."""
        return self._forward(x, t, **cond)[0]

    def forward_full(self, x, t, branch, **cond):
        """Full pass; returns (eps, cached feature for `branch`)."""
        self._check_branch(branch)
        return self._forward(x, t, cache_at=self.num_branches - 1 - branch, **cond)

    def forward_partial(self, x, t, cached, branch, **cond):
        """Partial pass: hs[0..branch], then the up path from `cached` (from the last full pass)."""
        self._check_branch(branch)
        emb = self._embed(t, **cond)
        hs = self._down(x, emb, branch + 1, **cond)
        h, _ = self._up(cached, hs, emb, self.num_branches - 1 - branch, **cond)
        return self._head(h, x, t)

    def _frequencies(self, name, make, dim, device):
        """The module's own frequency buffer `name` if it keeps one, else one made here once per device."""
        own = getattr(self.module, name, None)
        if isinstance(own, torch.Tensor):
            return own
        if getattr(self, "_freqs", None) is None or self._freqs.device != device:
            self._freqs = make(dim).to(device)
        return self._freqs

    def __repr__(self):
        return f"{type(self).__name__}({type(self.module).__name__}, {self.num_branches} branches)"


class OpenAIUNet(CachedPasses):
    """openaimodel's `UNetModel` (CompVis latent diffusion, guided-diffusion's ADM, ours)."""

    title = "openaimodel's UNetModel"
    needs = ("time_embed", "input_blocks", "middle_block", "output_blocks", "out", "model_channels")
    inputs = ("x", "timesteps", "t", "context", "y", "kwargs")

    def __init__(self, module):
        super().__init__(module)
        self.num_branches = len(module.input_blocks)
        if len(module.output_blocks) != self.num_branches:
            raise UserError(f"{type(module).__name__} has {len(module.input_blocks)} input blocks but "
                            f"{len(module.output_blocks)} output blocks: not a U-Net with one skip per block")
        if getattr(module, "predict_codebook_ids", False):
            raise UserError(f"{type(module).__name__} predicts codebook ids (predict_codebook_ids): not an eps U-Net")
        block = type(module.input_blocks[0]).forward
        self.takes_context = "context" in inspect.signature(block).parameters
        self.num_classes = getattr(module, "num_classes", None)
        self.dtype = getattr(module, "dtype", None)  # guided-diffusion and CompVis: float16 with use_fp16

    def _cond(self, context):
        if context is not None and not self.takes_context:
            raise UserError(f"{type(self.module).__name__} takes no cross-attention context: drop context=")
        return (context,) if self.takes_context else ()

    def _embed(self, t, context=None, y=None):
        m = self.module
        emb = m.time_embed(openai_timestep_embedding(
            t, m.model_channels, self._frequencies("time_freqs", openai_timestep_frequencies, m.model_channels, t.device)))
        if (y is not None) != (self.num_classes is not None):
            raise UserError(f"{type(m).__name__} is {'' if self.num_classes is not None else 'not '}class-conditional: "
                            f"{'give' if self.num_classes is not None else 'drop'} the labels y=")
        return emb + m.label_emb(y) if y is not None else emb

    def _down(self, x, emb, num_skips, context=None, y=None):
        hs, h, cond = [], x if self.dtype is None else x.type(self.dtype), self._cond(context)
        for block in self.module.input_blocks[:num_skips]:
            h = block(h, emb, *cond)
            hs.append(h)
        return hs

    def _mid(self, h, emb, context=None, y=None):
        return self.module.middle_block(h, emb, *self._cond(context))

    def _up_block(self, j, h, skip, emb, context=None, y=None):
        return self.module.output_blocks[j](torch.cat([h, skip], dim=1), emb, *self._cond(context))

    def _head(self, h, x, t):
        return self.module.out(h if self.dtype is None else h.type(x.dtype))


class DDPMUNet(CachedPasses):
    """ermongroup/ddim's (= pesser/pytorch_diffusion's) `Model`, and ours."""

    title = "ermongroup/ddim's Model"
    inputs = ("x", "t")
    needs = ("temb", "conv_in", "down", "mid", "up", "norm_out", "conv_out", "ch", "num_resolutions",
             "num_res_blocks")

    def __init__(self, module):
        super().__init__(module)
        levels, blocks = module.num_resolutions, module.num_res_blocks
        self.up_order = [(level, b) for level in reversed(range(levels)) for b in range(blocks + 1)]
        self.num_branches = len(self.up_order)  # = len(hs) = 1 + L*R + (L-1)
        # the nonlinearity of the module's own code (x * sigmoid(x) in the original, F.silu here)
        self.nonlinearity = getattr(sys.modules.get(type(module).__module__), "nonlinearity", F.silu)

    def _embed(self, t):
        m = self.module
        freqs = self._frequencies("temb_freqs", ddpm_timestep_frequencies, m.ch, t.device)
        temb = ddpm_timestep_embedding(t, m.ch, freqs)
        return m.temb.dense[1](self.nonlinearity(m.temb.dense[0](temb)))

    def _down(self, x, temb, num_skips):
        m = self.module
        hs = [m.conv_in(x)]
        for level, down in enumerate(m.down):
            for b in range(m.num_res_blocks):
                if len(hs) == num_skips:
                    return hs
                h = down.block[b](hs[-1], temb)
                if len(down.attn) > 0:
                    h = down.attn[b](h)
                hs.append(h)
            if level != m.num_resolutions - 1:
                if len(hs) == num_skips:
                    return hs
                hs.append(down.downsample(hs[-1]))
        return hs

    def _mid(self, h, temb):
        mid = self.module.mid
        return mid.block_2(mid.attn_1(mid.block_1(h, temb)), temb)

    def _up_block(self, j, h, skip, temb):
        m = self.module
        level, b = self.up_order[j]
        up = m.up[level]
        h = up.block[b](torch.cat([h, skip], dim=1), temb)
        if len(up.attn) > 0:
            h = up.attn[b](h)
        if b == m.num_res_blocks and level != 0:
            h = up.upsample(h)
        return h

    def _head(self, h, x, t):
        m = self.module
        return m.conv_out(self.nonlinearity(m.norm_out(h)))


class DiffusersUNet2D(CachedPasses):
    """diffusers' `UNet2DModel`, read block by block with its own modules."""

    title = "diffusers' UNet2DModel"
    inputs = ("sample", "timestep", "class_labels", "return_dict")
    needs = ("time_proj", "time_embedding", "conv_in", "down_blocks", "mid_block", "up_blocks", "conv_norm_out",
             "conv_act", "conv_out", "config")
    BLOCKS = {"DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D",
              "UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D"}

    def __init__(self, module):
        super().__init__(module)
        blocks = [*module.down_blocks, *module.up_blocks]
        unsupported = sorted({type(b).__name__ for b in blocks} - self.BLOCKS)
        if unsupported or any(getattr(b, "has_cross_attention", False) for b in blocks):
            raise UserError(f"{type(module).__name__}: block type(s) {', '.join(unsupported) or 'with cross-attention'} "
                            f"are not supported here (supported: {', '.join(sorted(self.BLOCKS))})")
        if any(getattr(b, name, None) is not None for b in module.up_blocks for name in ("s1", "s2", "b1", "b2")):
            raise UserError(f"{type(module).__name__}: FreeU (s1, s2, b1, b2 on the up blocks) is not supported")
        self.up_order = [(b, r) for b, block in enumerate(module.up_blocks) for r in range(len(block.resnets))]
        self.num_branches = len(self.up_order)
        self.skips = any(hasattr(b, "skip_conv") for b in module.up_blocks)  # the up path carries a skip sample
        self.fourier = module.config.time_embedding_type == "fourier"

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _takes_temb(layer_type):  # read once per block type, not at every step
        return "temb" in inspect.signature(layer_type.forward).parameters

    def _embed(self, t, class_labels=None):
        m = self.module
        emb = m.time_embedding(m.time_proj(t).to(dtype=m.dtype))
        if (class_labels is not None) != (m.class_embedding is not None):
            raise UserError(f"{type(m).__name__} {'needs' if m.class_embedding is not None else 'takes no'} "
                            "class_labels=")
        if class_labels is not None:
            if m.config.class_embed_type == "timestep":
                class_labels = m.time_proj(class_labels)
            emb = emb + m.class_embedding(class_labels).to(dtype=m.dtype)
        return emb

    def _down(self, x, emb, num_skips, class_labels=None):
        m = self.module
        skip = 2 * x - 1.0 if m.config.center_input_sample else x
        h = m.conv_in(skip)
        hs = [h]
        for block in m.down_blocks:
            attentions = getattr(block, "attentions", None)
            for r, resnet in enumerate(block.resnets):
                if len(hs) == num_skips:
                    return hs
                h = resnet(h, emb)
                if attentions is not None:
                    h = attentions[r](h)
                hs.append(h)
            if block.downsamplers is not None:
                if len(hs) == num_skips:
                    return hs
                if hasattr(block, "skip_conv"):
                    h = block.resnet_down(h, emb)
                    for down in block.downsamplers:
                        skip = down(skip)
                    h = block.skip_conv(skip) + h
                else:
                    for down in block.downsamplers:
                        h = down(h, temb=emb) if self._takes_temb(type(down)) else down(h)
                hs.append(h)
        return hs

    def _mid(self, h, emb, class_labels=None):
        mid = self.module.mid_block
        h = mid(h, emb) if mid is not None else h
        return (h, None) if self.skips else h

    def _up_block(self, j, state, skip_feature, emb, class_labels=None):
        m = self.module
        h, skip = state if self.skips else (state, None)
        b, r = self.up_order[j]
        block = m.up_blocks[b]
        attentions = getattr(block, "attentions", None)
        skip_block = hasattr(block, "skip_conv")
        h = block.resnets[r](torch.cat([h, skip_feature], dim=1), emb)
        if attentions is not None and not skip_block:
            h = attentions[r](h)
        if r == len(block.resnets) - 1:  # the block's tail
            if skip_block:
                if attentions is not None:
                    h = attentions[0](h)
                skip = block.upsampler(skip) if skip is not None else 0
                if block.resnet_up is not None:
                    skip = skip + block.skip_conv(block.act(block.skip_norm(h)))
                    h = block.resnet_up(h, emb)
            elif block.upsamplers is not None:
                for up in block.upsamplers:
                    h = up(h, temb=emb) if self._takes_temb(type(up)) else up(h)
        return (h, skip) if self.skips else h

    def _head(self, state, x, t):
        m = self.module
        h, skip = state if self.skips else (state, None)
        h = m.conv_out(m.conv_act(m.conv_norm_out(h)))
        if skip is not None:
            h = h + skip
        if self.fourier:
            h = h / t.reshape((h.shape[0], *([1] * len(h.shape[1:]))))
        return h


STRUCTURES = (OpenAIUNet, DDPMUNet, DiffusersUNet2D)


def follows_contract(obj):
    return callable(obj) and all(hasattr(obj, name) for name in CONTRACT)


def adapt_unet(module):
    """The U-Net contract over `module`: itself when it follows the contract already, else the
    passes of its structure (sharing its parameters). UserError naming the class and what is
    missing when no structure fits."""
    if follows_contract(module):
        return module
    for structure in STRUCTURES:
        if all(hasattr(module, name) for name in structure.needs):
            passes = structure(module)
            forward = getattr(type(module), "forward", None)
            extra = [p for p in inspect.signature(forward).parameters if p not in ("self", *structure.inputs)] \
                if forward is not None else []
            if extra:  # e.g. guided-diffusion's SuperResModel: its forward does more than the structure's
                raise UserError(f"{type(module).__name__}.forward takes {', '.join(extra)}: its forward does more than "
                                f"{structure.title}'s, which is what can be cached")
            return passes
    closest = min(STRUCTURES, key=lambda s: sum(not hasattr(module, n) for n in s.needs))
    missing = [n for n in closest.needs if not hasattr(module, n)]
    raise UserError(f"{type(module).__name__} is not a U-Net this package can cache: it lacks {', '.join(missing)} "
                    f"(of {closest.title}), and has no forward_full / forward_partial / num_branches")
