"""LDM-4-G as one object: U-Net, VQ-f4 first stage, class embedder and the noise schedule.

Mirrors CompVis `LatentDiffusion` for sampling only. The original state-dict names are kept below
three explicit prefixes (`KEY_MAP`), so the Lightning checkpoint's `state_dict` loads with
`strict=True` after the prefixes are mapped. Loading never imports Lightning and never executes
pickled code: Lightning's pickled objects are rebuilt as inert stand-ins.
"""

import contextlib
import logging

import numpy as np
import torch
import torch.nn as nn

from ..core.checkpoint import check_file, check_state_dict, safe_load
from ..core.values import as_ints
from ..errors import CheckpointError, UserError
from ..samplers import ClassifierFreeGuidance, DiffusionModel
from .autoencoder import VQModel
from .unet import UNetModel

log = logging.getLogger(__name__)

KEY_MAP = {  # ours -> original
    "unet.": "model.diffusion_model.",
    "first_stage.": "first_stage_model.",
    "cond_stage.": "cond_stage_model.",
}

SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)

# Globals that PyTorch-Lightning pickles into its checkpoints (callback states keyed by class).
LIGHTNING_GLOBALS = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",)


class LightningStandIn:
    """An inert object in place of a pickled Lightning object: it keeps the attributes, runs nothing."""


def _stand_in(qualified_name):
    module, name = qualified_name.rsplit(".", 1)
    return type(name, (LightningStandIn,), {"__module__": module, "__qualname__": name})


STAND_INS = tuple(_stand_in(name) for name in LIGHTNING_GLOBALS)


def schedule(linear_start, linear_end, timesteps):
    """The 12 schedule buffers of CompVis `register_schedule` ("linear" = linear in sqrt(beta)), float32."""
    betas = np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1), "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(values[k], dtype=torch.float32) for k in SCHEDULE_BUFFERS}


class ClassEmbedder(nn.Module):
    """labels [B] -> context [B, 1, embed_dim]."""

    def __init__(self, n_classes=1001, embed_dim=512):
        super().__init__()
        self.embedding = nn.Embedding(n_classes, embed_dim)

    def forward(self, labels):
        return self.embedding(labels[:, None])


class LatentDiffusionModel(DiffusionModel):
    """A class-conditional latent diffusion model (LDM-4-G) for sampling.

    `.unet` follows the U-Net contract with `context=`; `.alphas_cumprod` [T] is the schedule;
    `.get_learned_conditioning(labels [B]) -> [B,1,D]`; `.decode_first_stage(z) -> images in [-1, 1]`.
    `.uncond_class` (the last class, 1000 for ImageNet) is the unconditional label for guidance.
    CompVis conventions: timesteps offset by 1, alpha_bar after the last step = alphas_cumprod[0],
    `fixedsmall` ancestral variance, classifier-free guidance on `[uncond; cond]`.
    """

    timestep_offset = 1
    var_type = "fixedsmall"

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        p = cfg.model.params
        buffers = schedule(p.linear_start, p.linear_end, p.timesteps)
        for name, value in buffers.items():
            self.register_buffer(name, value)
        first_beta = np.linspace(p.linear_start**0.5, p.linear_end**0.5, p.timesteps, dtype=np.float64)[0] ** 2
        self.final_alpha_cumprod = float(np.float32(1.0 - first_beta))  # = float(alphas_cumprod[0]), on any device
        u = p.unet_config.params
        self.unet = UNetModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(u).items()})
        f = p.first_stage_config.params
        dd = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(f.ddconfig).items()}
        self.first_stage = VQModel(embed_dim=f.embed_dim, n_embed=f.n_embed, ddconfig=dd)
        c = p.cond_stage_config.params
        self.cond_stage = ClassEmbedder(c.n_classes, c.embed_dim)
        self.scale_factor = p.scale_factor
        self.uncond_class = self.num_classes = c.n_classes - 1
        self.latent_shape = self.sample_shape = (p.channels, p.image_size, p.image_size)
        self.context_dim = c.embed_dim

    def denoiser(self, labels=None, scale=1.0):
        """(guided U-Net, sampler keyword arguments) for class `labels` [B] (0..num_classes-1)."""
        if labels is None:
            raise UserError("LDM-4-G is class-conditional: give one class label per image")
        device = self.alphas_cumprod.device
        if isinstance(labels, torch.Tensor) and labels.device.type == "meta":
            labels = torch.zeros(labels.shape, dtype=torch.long, device=device)  # shapes only (MACs)
        labels = as_ints(labels.reshape(-1) if isinstance(labels, torch.Tensor) else labels, "class labels")
        if not labels or not all(0 <= c < self.num_classes for c in labels):
            raise UserError(f"class labels must be in 0..{self.num_classes - 1}, got {labels or 'none'}")
        labels = torch.tensor(labels, dtype=torch.long, device=device)
        context = self.get_learned_conditioning(labels)
        uncond = self.get_learned_conditioning(torch.tensor([self.uncond_class], device=device))
        kwargs = {"final_alpha_cumprod": self.final_alpha_cumprod, "model_kwargs": {"context": context}}
        return ClassifierFreeGuidance(self.unet, scale, uncond), kwargs

    def decode(self, x0):
        return self.decode_first_stage(x0)

    def unet_inputs(self, batch, device=None):
        x, t, _ = super().unet_inputs(batch, device)
        return x, t, {"context": torch.zeros(batch, 1, self.context_dim, device=device)}

    @torch.no_grad()
    def get_learned_conditioning(self, labels):
        return self.cond_stage(labels)

    @torch.no_grad()
    def decode_first_stage(self, z):
        """Latents [B,3,64,64] -> images [B,3,256,256] (roughly [-1, 1]); quantizes first."""
        return self.first_stage.decode(z / self.scale_factor)

    def original_state_dict(self):
        """The state dict under the original CompVis key names."""
        return {to_original(k): v for k, v in self.state_dict().items()}


def to_original(key):
    for ours, original in KEY_MAP.items():
        if key.startswith(ours):
            return original + key[len(ours):]
    return key


def from_original(key):
    """Our key for an original key, or None when it belongs to no module of ours."""
    for ours, original in KEY_MAP.items():
        if key.startswith(original):
            return ours + key[len(original):]
    return key if key in SCHEDULE_BUFFERS else None


def build_model(cfg, device=None):
    """A `LatentDiffusionModel` with random weights (`device="meta"` allocates nothing)."""
    with torch.device(device) if device else contextlib.nullcontext():
        return LatentDiffusionModel(cfg)


def read_checkpoint(path):
    """The original-named state dict of a Lightning (or plain) LDM checkpoint, loaded safely."""
    obj = safe_load(path, safe_globals=STAND_INS)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise CheckpointError(f"{path} holds no LDM state dict (neither a Lightning checkpoint nor a state dict)")
    return obj


def load_weights(model, path, md5=None, size=None, source=""):
    """Load an LDM checkpoint into `model` (strict); returns the original keys that belong to no module."""
    check_file(path, md5, source, size)
    original = read_checkpoint(path)
    ours = {k: from_original(k) for k in original}
    extra = [k for k, ours_k in ours.items() if ours_k is None]
    if extra:
        log.warning("%s: %d key(s) belong to no module and were not loaded: %s", path, len(extra), ", ".join(extra[:10]))
    state = {ours_k: original[k] for k, ours_k in ours.items() if ours_k is not None}
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    return extra
