"""The DDPM U-Net (Ho et al. 2020) with DeepCache full/partial passes, its configs and checkpoints."""

from .checkpoint import CheckpointError, load_weights, safe_load
from .config import ConfigError, DDPMConfig, load_config
from .macs import count_macs, ideal_speedup, unet_macs
from .model import PixelDiffusionModel, alphas_cumprod, build_model, build_unet, load_model
from .unet import UNet

__all__ = [
    "UNet", "PixelDiffusionModel", "build_model", "build_unet", "load_model", "load_config", "alphas_cumprod", "load_weights", "safe_load",
    "count_macs", "unet_macs", "ideal_speedup", "DDPMConfig", "ConfigError", "CheckpointError",
]
