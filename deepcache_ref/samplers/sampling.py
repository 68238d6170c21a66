"""DDIM, PLMS and ancestral DDPM samplers with DeepCache, as pure functions.

Mirrors ermongroup/ddim `functions/denoising.py` (DDIM `generalized_steps`, `ddpm_steps`) and
CompVis latent-diffusion `models/diffusion/{ddim,plms}.py`, written for any denoiser that follows
the U-Net contract:

    eps = unet(x, t, **model_kwargs)                      # t: [B] training timesteps
    eps, cached = unet.forward_full(x, t, branch=k, **model_kwargs)
    eps = unet.forward_partial(x, t, cached, branch=k, **model_kwargs)

Each run calls the U-Net through a `CacheExecutor`, which owns the step index and the cached
feature: nothing is stored on the model between calls. A `CacheSchedule` says which steps are full;
`None` or `interval=1` gives the uncached sampler bit for bit. Sampling runs without autograd, as
in CompVis. Each sampler is registered, with its options, in `registry.py`.
"""

import math

import torch
from tqdm.auto import tqdm

from ..core.values import as_number
from ..errors import UserError
from .cache import CacheExecutor
from .schedules import distinct_steps, sampler_steps


def _check_eta(eta):
    try:
        value = as_number(eta, "eta")
    except UserError:
        value = None
    if value is None or not 0 <= value <= 1:
        raise UserError(f"eta must be a number in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like noise), got {eta!r}")
    return value


def _need_noise(noise_fn, why):
    if noise_fn is None:
        raise UserError(f"{why} needs noise: pass noise_fn, e.g. samplers.PerImageRNG(seeds).randn_like")
    if not callable(noise_fn):
        raise UserError(f"noise_fn must be a function x -> noise like x, got {type(noise_fn).__name__}")


def _ddim_update(x, eps, a_t, a_prev, eta, noise_fn, clip_denoised=False):
    """One DDIM step (DDIM paper eq. 12); returns (x_prev, x0_pred). With `clip_denoised` (ADM's
    option) x0_pred is clipped to [-1, 1] and the eps of the update is re-derived from it."""
    x0_pred = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    if clip_denoised:
        x0_pred = x0_pred.clamp(-1, 1)
        eps = (x - math.sqrt(a_t) * x0_pred) / math.sqrt(1 - a_t)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    x_prev = math.sqrt(a_prev) * x0_pred + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
    if eta > 0:
        x_prev = x_prev + sigma * noise_fn(x)
    return x_prev, x0_pred


@torch.no_grad()
def ddim_sample(unet, x_T, timesteps, alphas_cumprod, *, eta=0.0, cache=None, final_alpha_cumprod=1.0,
                model_kwargs=None, noise_fn=None, callback=None, progress=False, clip_denoised=False):
    """DDIM (Song et al. 2021) from x_T [B,C,H,W] over ascending `timesteps`; returns x_0.

    `alphas_cumprod` [T] is alpha_bar_t; `final_alpha_cumprod` is alpha_bar after the last step
    (1.0 for the DDPM code, alphas_cumprod[0] for CompVis LDM). `eta > 0` draws `noise_fn(x)` once
    per step. `callback` gets {i, t, x, x0_pred, full} after each step. `clip_denoised` clips x0_pred
    to [-1, 1] as ADM's `ddim_sample_loop` does (ermongroup/ddim and CompVis do not). A U-Net with
    learned sigma (twice the channels of x) is sampled on its eps half.
    """
    eta = _check_eta(eta)
    if eta > 0:
        _need_noise(noise_fn, "eta > 0")
    steps = sampler_steps(timesteps, alphas_cumprod, final_alpha_cumprod)
    eps_fn = CacheExecutor(unet, cache, [t for t, _, _ in steps], x_T, model_kwargs)
    x = x_T
    for i, (t, a_t, a_prev) in enumerate(tqdm(steps, disable=not progress)):
        eps, full = eps_fn(x, i)
        x, x0_pred = _ddim_update(x, eps, a_t, a_prev, eta, noise_fn, clip_denoised)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_pred": x0_pred, "full": full})
    return x


@torch.no_grad()
def plms_sample(unet, x_T, timesteps, alphas_cumprod, *, eta=0.0, cache=None, final_alpha_cumprod=1.0,
                model_kwargs=None, noise_fn=None, callback=None, progress=False):
    """PLMS (pseudo linear multistep, Liu et al. 2022, as in CompVis `plms.py`); returns x_0.

    Step 0 is a pseudo improved Euler step that calls the model twice: at t_0 on x, and at t_1 on
    the provisional DDIM update. That second call is scheduled as step 1, whose timestep it
    evaluates: it is full when step 1 is full (so `interval=1` is the uncached sampler), and
    otherwise a partial call on step 0's cached feature (it never refreshes the cache). Later steps
    use Adams-Bashforth on the stored eps of earlier steps. S steps cost S + 1 model calls.
    """
    if _check_eta(eta) != 0:
        raise UserError("PLMS is deterministic: eta must be 0")
    steps = sampler_steps(timesteps, alphas_cumprod, final_alpha_cumprod)
    eps_fn = CacheExecutor(unet, cache, [t for t, _, _ in steps], x_T, model_kwargs)
    x, old_eps = x_T, []
    for i, (t, a_t, a_prev) in enumerate(tqdm(steps, disable=not progress)):
        eps, full = eps_fn(x, i)
        if not old_eps:  # pseudo improved Euler
            j = min(i + 1, len(steps) - 1)
            x_provisional, _ = _ddim_update(x, eps, a_t, a_prev, 0.0, None)
            eps_next, _ = eps_fn(x_provisional, j)
            eps_prime = (eps + eps_next) / 2
        elif len(old_eps) == 1:
            eps_prime = (3 * eps - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            eps_prime = (23 * eps - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            eps_prime = (55 * eps - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, x0_pred = _ddim_update(x, eps_prime, a_t, a_prev, 0.0, None)
        old_eps = (old_eps + [eps])[-3:]
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_pred": x0_pred, "full": full})
    return x


VAR_TYPES = ("fixedlarge", "fixedsmall", "learned_range")


def _ancestral_std(var_type, beta, a_t, a_prev, model_var):
    """The standard deviation of an ancestral step's noise (a float, or a tensor for learned_range)."""
    posterior = beta * (1 - a_prev) / (1 - a_t)
    if var_type == "fixedlarge":
        return math.sqrt(beta)
    if var_type == "fixedsmall":
        return math.sqrt(posterior)
    if model_var is None:
        raise UserError("var_type learned_range needs a U-Net with learned sigma (twice the channels of x)")
    frac = (model_var + 1) / 2
    return torch.exp(0.5 * (frac * math.log(beta) + (1 - frac) * math.log(posterior)))


@torch.no_grad()
def ddpm_sample(unet, x_T, timesteps, alphas_cumprod, *, var_type="fixedlarge", cache=None,
                final_alpha_cumprod=1.0, model_kwargs=None, noise_fn=None, callback=None, progress=False,
                clip_denoised=True):
    """Ancestral sampling (Ho et al. 2020) over ascending `timesteps`; returns x_0.

    With beta_t = 1 - alpha_bar_t / alpha_bar_prev (the true beta of the respaced chain): x0_pred
    is clipped to [-1, 1] (`clip_denoised`, as ermongroup/ddim always and ADM by default), the
    posterior mean is used, and the variance is beta_t (`fixedlarge`, ermongroup/ddim's
    `ddpm_noisy`), the posterior variance beta_t (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    (`fixedsmall`), or the U-Net's own (`learned_range`, ADM's learned sigma: the second half v of
    its output channels interpolates the log variance between the posterior variance and beta_t by
    (v + 1) / 2). No noise is added at t = 0 (learned_range: at the last step, as ADM does). `noise_fn(x)`
    is drawn once per step, the last included.
    """
    if var_type not in VAR_TYPES:
        raise UserError(f"unknown var_type {var_type!r} ({' | '.join(VAR_TYPES)})")
    _need_noise(noise_fn, "ancestral sampling")
    steps = sampler_steps(timesteps, alphas_cumprod, final_alpha_cumprod)
    if var_type == "learned_range":
        distinct_steps(steps, "ancestral sampling with learned_range")
    eps_fn = CacheExecutor(unet, cache, [t for t, _, _ in steps], x_T, model_kwargs)
    x = x_T
    for i, (t, a_t, a_prev) in enumerate(tqdm(steps, disable=not progress)):
        eps, full = eps_fn(x, i)
        beta = 1 - a_t / a_prev
        x0_pred = math.sqrt(1 / a_t) * x - math.sqrt(1 / a_t - 1) * eps
        x0_pred = x0_pred.clamp(-1, 1) if clip_denoised else x0_pred
        mean = (math.sqrt(a_prev) * beta * x0_pred + math.sqrt(1 - beta) * (1 - a_prev) * x) / (1 - a_t)
        noise = noise_fn(x)
        last = i == len(steps) - 1 if var_type == "learned_range" else t == 0  # ADM: by index; the DDPM code: t = 0
        x = mean if last else mean + noise * _ancestral_std(var_type, beta, a_t, a_prev, eps_fn.model_var)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_pred": x0_pred, "full": full})
    return x
