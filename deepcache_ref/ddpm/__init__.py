"""The DDPM U-Net (Ho et al. 2020) with DeepCache full/partial passes, its configs and checkpoints."""

from .checkpoint import load_weights
from .config import DDPMConfig
from .family import FAMILY
from .model import PixelDiffusionModel, alphas_cumprod, build_model, build_unet
from .unet import UNet

__all__ = ["UNet", "PixelDiffusionModel", "DDPMConfig", "FAMILY", "build_model", "build_unet", "alphas_cumprod",
           "load_weights"]
