"""The LDM family object (see `deepcache_ref.core.family`)."""

from collections.abc import Mapping

from ..core.family import ModelFamily
from .config import CONFIG_DIR, LDMConfig, load_config
from .model import build_model, load_weights


class LDMFamily(ModelFamily):
    """CompVis latent diffusion (LDM-4-G): an original CompVis YAML (`model.target`, `model.params`)."""

    name = "ldm"
    config_type = LDMConfig
    config_dir = CONFIG_DIR
    guidance = True

    def recognises(self, path, data):
        model = data.get("model") if data is not None else None
        return isinstance(model, Mapping) and ("target" in model or "params" in model)

    def load_config(self, path, overrides=()):
        return load_config(path, overrides)

    def build_model(self, cfg, device=None):
        return build_model(cfg, device)

    def load_weights(self, model, path):
        load_weights(model, path)


FAMILY = LDMFamily()
