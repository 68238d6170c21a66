"""LDM-4-G (CompVis cin256-v2): U-Net with DeepCache passes, VQ-f4 first stage, class embedder."""

from .config import LDMConfig, load_config
from .model import LatentDiffusionModel, build_model, load_model, load_weights

__all__ = ["LatentDiffusionModel", "LDMConfig", "load_config", "load_model", "build_model", "load_weights"]
