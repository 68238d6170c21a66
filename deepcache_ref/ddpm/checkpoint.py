"""Reading DDPM checkpoints: the converted original checkpoints (pesser/pytorch_diffusion, a plain
state dict), ermongroup/ddim's training output `ckpt.pth` (a list `[model_state ("module."
prefixes), optimizer_state, epoch, step, ema_state?]`, whose EMA state is used when present), and
diffusers `UNet2DModel` weights (.safetensors, or .bin read with `weights_only=True`)."""

import logging
from pathlib import Path

import torch

from ..core.checkpoint import check_file, check_state_dict, read_safetensors, safe_load
from ..errors import CheckpointError
from .diffusers import is_diffusers_state, to_ddpm_state

log = logging.getLogger(__name__)


def _strip(state, prefix="module."):
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def extract_state_dict(obj, path="checkpoint"):
    """(state dict, which part was used) from a loaded DDPM checkpoint object."""
    if isinstance(obj, (list, tuple)):  # ermongroup/ddim ckpt.pth
        if len(obj) >= 5 and isinstance(obj[4], dict) and obj[4]:
            return _strip(obj[4]), "EMA weights (ckpt.pth entry 4)"
        if obj and isinstance(obj[0], dict):
            return _strip(obj[0]), "raw model weights (ckpt.pth entry 0; no EMA state in the file)"
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip(obj), "state dict"
    raise CheckpointError(
        f"{path} holds a {type(obj).__name__} that is neither a state dict nor an ermongroup/ddim ckpt.pth list"
    )



def load_weights(model, path, md5=None, source="", known_models=None):
    """Load a DDPM checkpoint into `model` (strict) and return `model`: a converted original state
    dict, an ermongroup/ddim ckpt.pth, or diffusers UNet2DModel weights (.safetensors or .bin)."""
    check_file(path, md5, source)
    obj = read_safetensors(path) if Path(path).suffix == ".safetensors" else safe_load(path)
    state, used = extract_state_dict(obj, path)
    if is_diffusers_state(state):
        state, used = to_ddpm_state(state), f"diffusers UNet2DModel weights ({used})"
    check_state_dict(model, state, path, known_models)
    model.load_state_dict(state, strict=True)
    log.info("loaded %s from %s", used, path)
    return model
