"""Building a DDPM U-Net and its noise schedule from a config, and loading its checkpoint."""

import contextlib

import numpy as np
import torch

from ..errors import ConfigError
from ..samplers import DiffusionModel
from .config import CONFIG_DIR, load_config
from .unet import UNet


def build_unet(model_cfg, device=None):
    """A `UNet` from a `ModelConfig` (random weights; `device="meta"` allocates nothing)."""
    with torch.device(device) if device else contextlib.nullcontext():
        return UNet(
            ch=model_cfg.ch,
            out_ch=model_cfg.out_ch,
            ch_mult=tuple(model_cfg.ch_mult),
            num_res_blocks=model_cfg.num_res_blocks,
            attn_resolutions=tuple(model_cfg.attn_resolutions),
            dropout=model_cfg.dropout,
            resamp_with_conv=model_cfg.resamp_with_conv,
            in_channels=model_cfg.in_channels,
            resolution=model_cfg.resolution,
        )


def betas(diffusion_cfg):
    """Training betas [T] in float64 (the original `get_beta_schedule`)."""
    if diffusion_cfg.beta_schedule != "linear":
        raise ConfigError(f"unsupported beta_schedule {diffusion_cfg.beta_schedule!r} (only 'linear')")
    return np.linspace(diffusion_cfg.beta_start, diffusion_cfg.beta_end, diffusion_cfg.num_timesteps, dtype=np.float64)


def alphas_cumprod(diffusion_cfg):
    """alpha_bar_t = prod_{s<=t} (1 - beta_s), [T] float32, computed in float32 as ermongroup/ddim does."""
    b = torch.from_numpy(betas(diffusion_cfg)).float()
    return (1 - b).cumprod(dim=0)


class PixelDiffusionModel(DiffusionModel):
    """A DDPM (Ho et al. 2020) in pixel space: the U-Net and its noise schedule.

    The ermongroup/ddim conventions: timesteps without offset, alpha_bar = 1 after the last step,
    unconditional, ancestral variance from `diffusion.var_type`. The weights live in `.unet`, under
    the original names.
    """

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.unet = build_unet(cfg.model)
        self.register_buffer("alphas_cumprod", alphas_cumprod(cfg.diffusion), persistent=False)
        self.var_type = cfg.diffusion.var_type
        self.sample_shape = (cfg.model.in_channels, cfg.model.resolution, cfg.model.resolution)


def build_model(cfg, device=None):
    """A `PixelDiffusionModel` with random weights (`device="meta"` allocates nothing)."""
    with torch.device(device) if device else contextlib.nullcontext():
        return PixelDiffusionModel(cfg)


def known_unets():
    """The shipped configs' U-Nets on the `meta` device, for error hints."""
    return {p.stem: build_unet(load_config(p).model, "meta") for p in sorted(CONFIG_DIR.glob("*.yaml"))}
