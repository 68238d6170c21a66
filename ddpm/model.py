"""Building a DDPM U-Net and its noise schedule from a config, and loading its checkpoint."""

import contextlib
from pathlib import Path

import numpy as np
import torch

from samplers import DiffusionModel

from .checkpoint import load_weights
from .config import CONFIG_DIR, load_config
from .unet import UNet

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"  # the repository's


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
        raise ValueError(f"unsupported beta_schedule {diffusion_cfg.beta_schedule!r} (only 'linear')")
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


def checkpoint_path(cfg, ckpt_root=CHECKPOINTS):
    return Path(ckpt_root) / cfg.checkpoint.file


def load_model(config, ckpt_path=None, *, ckpt_root=CHECKPOINTS, overrides=(), check_md5=True, device="cpu"):
    """`PixelDiffusionModel` (eval mode) with its checkpoint loaded.

    `config` is a path, a bare name or a `DDPMConfig`. Without `ckpt_path` the config's file under
    `ckpt_root` is used and its md5 is checked; a `ckpt_path` of one's own is not md5-checked.
    """
    cfg = load_config(config, overrides) if isinstance(config, (str, Path)) else config
    model = build_model(cfg)
    if ckpt_path is None:
        path, md5 = checkpoint_path(cfg, ckpt_root), (cfg.checkpoint.md5 if check_md5 else None)
    else:
        path, md5 = ckpt_path, None
    load_weights(model.unet, path, md5=md5, source=cfg.checkpoint.source, known_models=known_unets())
    return model.to(device).eval()
