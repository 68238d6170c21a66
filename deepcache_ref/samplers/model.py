"""What a sampler needs to know about a model family, answered by the family's own object.

`ddpm.PixelDiffusionModel` and `ldm.LatentDiffusionModel` subclass `DiffusionModel`; code above
them (the pipeline, the scripts) never asks which family it holds.
"""

import torch
import torch.nn as nn

from ..core.values import as_number
from ..errors import UserError
from .schedules import make_timesteps


class DiffusionModel(nn.Module):
    """A trained denoiser with its conventions.

    Attributes a family sets: `unet` (the U-Net contract), `alphas_cumprod` [T] (float32 buffer),
    `final_alpha_cumprod` (alpha_bar after the last step: 1.0 for ermongroup/ddim, alphas_cumprod[0]
    for CompVis), `timestep_offset` (0, or 1 for CompVis: timesteps 1, 11, ..., 991 for S = 100),
    `sample_shape` (C, H, W) of what the sampler draws, `num_classes` (0 if unconditional),
    `var_type` of the ancestral sampler (`fixedlarge` | `fixedsmall`), and `config`.
    """

    final_alpha_cumprod = 1.0
    timestep_offset = 0
    num_classes = 0
    var_type = "fixedlarge"

    @property
    def num_train_timesteps(self):
        return len(self.alphas_cumprod)

    def timesteps(self, steps, skip_type="uniform"):
        """Ascending training timesteps of an S-step sampler, in this family's convention."""
        return make_timesteps(steps, skip_type, self.num_train_timesteps, offset=self.timestep_offset)

    def denoiser(self, labels=None, scale=1.0):
        """(denoiser, sampler keyword arguments) for one batch: the U-Net (wrapped for guidance
        where the family has it), and `model_kwargs` / `final_alpha_cumprod` for the sampler."""
        if labels is not None:
            raise UserError(f"{type(self).__name__} is unconditional: it takes no class labels")
        if as_number(scale, "guidance scale") != 1.0:
            raise UserError(f"{type(self).__name__} is unconditional: no guidance scale (got {scale!r})")
        return self.unet, {"final_alpha_cumprod": self.final_alpha_cumprod}

    def decode(self, x0):
        """The sampler's output -> images [B, C, H, W] in [-1, 1]."""
        return x0

    def unet_inputs(self, batch, device=None):
        """Example (x, t, kwargs) for one U-Net call of `batch` rows (e.g. on `meta`, for MACs)."""
        x = torch.zeros(batch, *self.sample_shape, device=device)
        return x, torch.full((batch,), self.timestep_offset, dtype=torch.long, device=device), {}
