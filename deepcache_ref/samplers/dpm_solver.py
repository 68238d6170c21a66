"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models"), multistep, data prediction, on the discrete DDPM schedule, with DeepCache.

Mirrors diffusers' `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`,
`solver_type="midpoint"`, `lower_order_final=True`: with alpha_t = sqrt(alpha_bar_t),
sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t) and the data prediction
x0_t = (x_t - sigma_t eps) / alpha_t, each step from s to t (h = lambda_t - lambda_s) is

    1st order:  x_t = sigma_t/sigma_s x_s - alpha_t (e^-h - 1) D0                     (DPM-Solver++ eq. 8)
    2nd order:  ... - 0.5 alpha_t (e^-h - 1) D1,   D1 = (D0 - x0_prev) / r0             (Alg. 2, midpoint)
    3rd order:  ... + alpha_t ((e^-h - 1)/h + 1) D1 - alpha_t ((e^-h - 1 + h)/h^2 - 0.5) D2

with D0 the newest data prediction and r = ratios of the previous log-SNR steps. The order ramps up
over the first steps, and the last step (and with fewer than 15 steps the last two) drop to lower
order. The step after the last timestep goes to `final_alpha_cumprod` (1.0: sigma = 0, diffusers'
`final_sigmas_type="zero"`, where the last step returns the data prediction itself).

One model call per step, so any `CacheSchedule` applies as to DDIM; partial steps feed their data
predictions into the multistep history like full ones.
"""

import math

import torch
from tqdm.auto import tqdm

from ..core.values import as_int
from ..errors import UserError
from .cache import CacheExecutor
from .schedules import distinct_steps, sampler_steps


def _coefficients(a_bar):
    """(alpha_t, sigma_t, lambda_t) of alpha_bar_t, in float64; lambda = +inf at alpha_bar = 1."""
    alpha, sigma = math.sqrt(a_bar), math.sqrt(1 - a_bar)
    return alpha, sigma, (math.inf if sigma == 0 else math.log(alpha) - math.log(sigma))


@torch.no_grad()
def dpm_solver_pp_sample(unet, x_T, timesteps, alphas_cumprod, *, order=2, cache=None, final_alpha_cumprod=1.0,
                         model_kwargs=None, callback=None, progress=False, lower_order_final=True):
    """DPM-Solver++ (multistep, `order` 2 or 3) from x_T [B,C,H,W] over ascending `timesteps`; returns x_0.

    `callback` gets {i, t, x, x0_pred, full} after each step, as the other samplers' callbacks.
    """
    order = as_int(order, "DPM-Solver++ order")
    if order not in (1, 2, 3):
        raise UserError(f"DPM-Solver++ order must be 1, 2 or 3, got {order!r}")
    steps = sampler_steps(timesteps, alphas_cumprod, final_alpha_cumprod)
    distinct_steps(steps, "DPM-Solver++")
    eps_fn = CacheExecutor(unet, cache, [t for t, _, _ in steps], x_T, model_kwargs)
    S = len(steps)
    x, history = x_T, []  # [(lambda_s, x0_s)], newest last
    for i, (t, a_t, a_prev) in enumerate(tqdm(steps, disable=not progress)):
        eps, full = eps_fn(x, i)
        alpha_s, sigma_s, lambda_s = _coefficients(a_t)
        x0_pred = (x - sigma_s * eps) / alpha_s
        history = (history + [(lambda_s, x0_pred)])[-3:]
        alpha_t, sigma_t, lambda_t = _coefficients(a_prev)
        final = i == S - 1 and (lower_order_final and S < 15 or a_prev == 1.0)
        second_last = i == S - 2 and lower_order_final and S < 15
        k = 1 if order == 1 or len(history) < 2 or final else 2 if order == 2 or len(history) < 3 or second_last else 3
        x = _step(x, history, k, sigma_s, alpha_t, sigma_t, lambda_t)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_pred": x0_pred, "full": full})
    return x


def _step(x, history, k, sigma_s, alpha_t, sigma_t, lambda_t):
    """One multistep update of order k from the newest history entry to lambda_t."""
    lambda_s0, m0 = history[-1]
    if sigma_t == 0:  # to sigma = 0: e^-h = 0, the update is the data prediction
        if k == 1:
            return m0
    h = lambda_t - lambda_s0
    phi = math.expm1(-h)  # e^-h - 1
    x_t = (sigma_t / sigma_s) * x - alpha_t * phi * m0
    if k == 1:
        return x_t
    lambda_s1, m1 = history[-2]
    r0 = (lambda_s0 - lambda_s1) / h
    d1_0 = (m0 - m1) / r0
    if k == 2:
        return x_t - 0.5 * alpha_t * phi * d1_0
    lambda_s2, m2 = history[-3]
    r1 = (lambda_s1 - lambda_s2) / h
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    return x_t + alpha_t * (phi / h + 1) * d1 - alpha_t * ((phi + h) / h**2 - 0.5) * d2
