"""LDM-4-G (CompVis cin256-v2): U-Net with DeepCache passes, VQ-f4 first stage, class embedder."""

from .config import LDMConfig
from .family import FAMILY
from .model import LatentDiffusionModel, build_model, load_weights
from .unet import UNetModel, adm_unet

__all__ = ["LatentDiffusionModel", "LDMConfig", "FAMILY", "UNetModel", "adm_unet", "build_model", "load_weights"]
