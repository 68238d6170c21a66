"""Diffusion samplers with DeepCache, for any U-Net that follows the contract.

    eps = unet(x, t, **kw); eps, cached = unet.forward_full(x, t, branch=k, **kw)
    eps = unet.forward_partial(x, t, cached, branch=k, **kw); unet.num_branches

`SAMPLERS` (registry.py) lists every sampler with its options; `CacheExecutor` (cache.py) runs a
U-Net at each step under a cache policy, of which `CacheSchedule` is the static one; `adapt_unet`
(adapters.py) puts the contract over a research code base's own U-Net module, so every sampler
takes one directly. Imports neither `ddpm` nor `ldm`.
"""

from .adapters import adapt_unet
from .cache import CacheExecutor
from .cuda_graph import GraphedRun
from .dpm_solver import dpm_solver_pp_sample
from .guidance import ClassifierFreeGuidance
from .model import DiffusionModel
from .noise import PerImageRNG
from .registry import SAMPLERS, Option, SamplerSpec, sampler
from .sampling import ddim_sample, ddpm_sample, plms_sample
from .schedules import CacheSchedule, make_timesteps

__all__ = ["ddim_sample", "plms_sample", "ddpm_sample", "dpm_solver_pp_sample", "CacheSchedule", "CacheExecutor",
           "make_timesteps", "adapt_unet", "SAMPLERS", "SamplerSpec", "Option", "sampler", "ClassifierFreeGuidance", "PerImageRNG",
           "GraphedRun", "DiffusionModel"]
