"""Drop-in replacements for CompVis latent-diffusion's `DDIMSampler` and `PLMSSampler`, with DeepCache.

In a CompVis (or Stable Diffusion original-repo) script, swap one import line:

    from deepcache_ref.compvis import DDIMSampler          # was: from ldm.models.diffusion.ddim import DDIMSampler
    sampler = DDIMSampler(model, cache=CacheSchedule(5, 0))  # cache=None: the uncached sampler
    samples, intermediates = sampler.sample(S=250, batch_size=16, shape=[3, 64, 64], conditioning=c,
                                            unconditional_guidance_scale=1.5, unconditional_conditioning=uc, eta=0.0)

`model` is a `LatentDiffusion`-like object: what CompVis's samplers read of it is read here too,
its `alphas_cumprod` buffer, `model.model.diffusion_model` (the U-Net, cached through
`samplers.adapt_unet`, sharing its weights) and `model.model.conditioning_key` (`crossattn`: the
conditioning is the U-Net's `context`; `adm`: its class labels `y`; None: unconditional). The
timesteps, the alpha_bar after the last step, guidance on `[uncond; cond]`, the noise (torch's
global generator, drawn as often as CompVis draws it, eta 0 included, so a loop of batches with
`x_T=None` starts each batch from CompVis's noise), `x_T`, `callback(i)`, `img_callback(pred_x0,
i)` and the `intermediates` dict (`x_inter`, `pred_x0`, every `log_every_t` steps and the last)
follow CompVis. Options of CompVis's samplers that are not implemented here (`mask`, `x0`,
`quantize_x0`, `normals_sequence`, `temperature`, `noise_dropout`, `score_corrector`, ...) are an
error, never ignored.
"""

import torch

from .errors import UserError
from .samplers import ClassifierFreeGuidance, adapt_unet, ddim_sample, make_timesteps, plms_sample

UNSUPPORTED = {  # CompVis keyword: the value that means "not used"
    "normals_sequence": None, "quantize_x0": False, "mask": None, "x0": None, "temperature": 1.0,
    "noise_dropout": 0.0, "score_corrector": None, "corrector_kwargs": None,
}
KEYS = {"crossattn": "context", "adm": "y", None: None}  # conditioning_key -> the U-Net keyword


class _CompVisSampler:
    name = ""
    sample_fn = None
    extra_draws = 0  # noise draws beyond one per step that CompVis's sampler makes at eta 0

    def __init__(self, model, cache=None, schedule="linear", **kwargs):
        if schedule != "linear":
            raise UserError(f"{self.name}: schedule {schedule!r} is not supported (CompVis's samplers use 'linear')")
        if kwargs:
            raise UserError(f"{self.name}: unsupported argument(s) {', '.join(sorted(kwargs))}")
        missing = [a for a in ("alphas_cumprod", "model") if not hasattr(model, a)]
        if missing or not hasattr(model.model, "diffusion_model"):
            raise UserError(f"{self.name} needs a LatentDiffusion-like model (alphas_cumprod, model.diffusion_model); "
                            f"{type(model).__name__} lacks {', '.join(missing) or 'model.diffusion_model'}")
        key = getattr(model.model, "conditioning_key", None)
        if key not in KEYS:
            raise UserError(f"{self.name}: conditioning_key {key!r} is not supported (crossattn, adm or None)")
        if getattr(model, "parameterization", "eps") != "eps":
            raise UserError(f"{self.name}: only eps-prediction models are supported, not {model.parameterization!r}")
        self.model, self.cache, self.keyword = model, cache, KEYS[key]
        self.unet = adapt_unet(model.model.diffusion_model)

    def _conditioning(self, c):
        if isinstance(c, list) and self.keyword == "context":  # CompVis concatenates a list of contexts
            c = torch.cat(c, 1)
        if isinstance(c, dict):
            raise UserError(f"{self.name}: dict conditioning (hybrid or concat models) is not supported")
        return c

    @torch.no_grad()
    def sample(self, S, batch_size, shape, conditioning=None, callback=None, img_callback=None, eta=0.0, verbose=True,
               x_T=None, log_every_t=100, unconditional_guidance_scale=1.0, unconditional_conditioning=None, **kwargs):
        """CompVis's `sample(...)`: returns (samples [B, *shape], intermediates)."""
        for key, value in kwargs.items():
            if key not in UNSUPPORTED:
                raise UserError(f"{self.name}.sample: unknown argument {key!r}")
            if value is not UNSUPPORTED[key] and value != UNSUPPORTED[key]:
                raise UserError(f"{self.name}.sample: {key}={value!r} is not supported (only {UNSUPPORTED[key]!r})")
        alphas = self.model.alphas_cumprod
        device = alphas.device
        c = self._conditioning(conditioning)
        if self.keyword is None and c is not None:
            raise UserError(f"{self.name}: the model is unconditional (conditioning_key None): drop conditioning")
        if c is not None and c.shape[0] != batch_size:
            raise UserError(f"{self.name}: got {c.shape[0]} conditionings but batch_size = {batch_size}")
        scale = float(unconditional_guidance_scale)
        guided = unconditional_conditioning is not None and scale != 1.0
        if guided and self.keyword is None:
            raise UserError(f"{self.name}: guidance needs a conditional model (conditioning_key crossattn or adm)")
        x = torch.randn((batch_size, *shape), device=device) if x_T is None else x_T
        timesteps = make_timesteps(S, "uniform", len(alphas), offset=1)
        total, log = len(timesteps), {"x_inter": [x], "pred_x0": [x]}

        discarded = 0 if eta else 1  # CompVis draws noise at every step, eta 0 included (PLMS: twice at step 0)

        def step(info):
            i = info["i"]
            for _ in range(discarded + (self.extra_draws if i == 0 and discarded else 0)):
                torch.randn(x.shape, device=device)  # keeps torch's global generator where CompVis leaves it
            if callback is not None:
                callback(i)
            if img_callback is not None:
                img_callback(info["x0_pred"], i)
            index = total - i - 1
            if index % log_every_t == 0 or index == total - 1:
                log["x_inter"].append(info["x"])
                log["pred_x0"].append(info["x0_pred"])

        unet = ClassifierFreeGuidance(self.unet, scale, self._conditioning(unconditional_conditioning),
                                      keyword=self.keyword) if guided else self.unet
        kw = {"model_kwargs": {self.keyword: c} if c is not None else {}, "cache": self.cache, "callback": step,
              "final_alpha_cumprod": float(alphas[0]), "progress": verbose}
        if eta:
            kw["noise_fn"] = lambda t: torch.randn(t.shape, device=t.device)
        samples = self.sample_fn(unet, x, timesteps, alphas, eta=eta, **kw)
        return samples, log


class DDIMSampler(_CompVisSampler):
    """CompVis's `DDIMSampler` with DeepCache (`cache=CacheSchedule(N, branch)`)."""

    name = "DDIMSampler"
    sample_fn = staticmethod(ddim_sample)


class PLMSSampler(_CompVisSampler):
    """CompVis's `PLMSSampler` with DeepCache; eta must be 0, as in CompVis."""

    name = "PLMSSampler"
    sample_fn = staticmethod(plms_sample)
    extra_draws = 1
