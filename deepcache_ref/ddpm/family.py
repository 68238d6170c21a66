"""The DDPM family object (see `deepcache_ref.core.family`)."""

from ..core.family import ModelFamily
from . import diffusers
from .checkpoint import load_weights
from .config import CONFIG_DIR, DDPMConfig, load_config
from .model import build_model, known_unets


class DDPMFamily(ModelFamily):
    """Ho et al. DDPMs in pixel space: our YAMLs (`model:` of `ch`, `ch_mult`, ...) and diffusers
    `UNet2DModel` folders. Listed last in `FAMILIES`: it takes any YAML that no other family claims."""

    name = "ddpm"
    config_type = DDPMConfig
    config_dir = CONFIG_DIR

    def recognises(self, path, data):
        if data is None:
            return diffusers.is_folder(path)
        return True  # the last family: a YAML no other family claims (see families.FAMILIES)

    def load_config(self, path, overrides=()):
        return load_config(path, overrides)

    def build_model(self, cfg, device=None):
        return build_model(cfg, device)

    def load_weights(self, model, path):
        load_weights(model.unet, path, known_models=known_unets())


FAMILY = DDPMFamily()
