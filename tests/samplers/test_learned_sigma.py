"""Learned sigma (ADM): samplers use the eps half of a U-Net with twice the channels; the ancestral
sampler can use its variance as ADM does; `clip_denoised` where ADM offers it."""

import math

import numpy as np
import pytest
import torch

from deepcache_ref.ddpm.config import DiffusionConfig
from deepcache_ref.ddpm.model import alphas_cumprod
from deepcache_ref.errors import UserError
from deepcache_ref.samplers import (CacheSchedule, ClassifierFreeGuidance, PerImageRNG, adapt_unet, ddim_sample,
                                    ddpm_sample, dpm_solver_pp_sample, make_timesteps, plms_sample)
from research_style import ADMStyleUNet

ALPHAS = alphas_cumprod(DiffusionConfig())
SEQ = make_timesteps(8)  # 0, 125, ..., 875


@pytest.fixture(scope="module")
def adm():
    torch.manual_seed(0)
    return ADMStyleUNet().eval()


class EpsHalf:
    """The U-Net contract over the eps half of a learned-sigma U-Net."""

    def __init__(self, module):
        self.unet = adapt_unet(module)
        self.num_branches = self.unet.num_branches

    def __call__(self, x, t, **kw):
        return self.unet(x, t, **kw)[:, :3]

    def forward_full(self, x, t, branch, **kw):
        eps, cached = self.unet.forward_full(x, t, branch, **kw)
        return eps[:, :3], cached

    def forward_partial(self, x, t, cached, branch, **kw):
        return self.unet.forward_partial(x, t, cached, branch, **kw)[:, :3]


def adm_ancestral(model, x, seq, y, noise_fn):
    """ADM's p_sample_loop on a respaced chain (learned range, clip_denoised), written from its formulas."""
    a = np.array([float(ALPHAS[t]) for t in seq], dtype=np.float64)
    prev = np.append(1.0, a[:-1])
    betas = 1 - a / prev
    pv = betas * (1 - prev) / (1 - a)
    min_logs = np.log(np.append(pv[1], pv[1:]))
    for i in reversed(range(len(seq))):
        out = model(x, torch.full((x.shape[0],), seq[i]), y=y)
        eps, v = out[:, :3], out[:, 3:]
        x0 = (math.sqrt(1 / a[i]) * x - math.sqrt(1 / a[i] - 1) * eps).clamp(-1, 1)
        mean = betas[i] * math.sqrt(prev[i]) / (1 - a[i]) * x0 + (1 - prev[i]) * math.sqrt(1 - betas[i]) / (1 - a[i]) * x
        frac = (v + 1) / 2
        log_var = frac * math.log(betas[i]) + (1 - frac) * min_logs[i]
        noise = noise_fn(x)
        x = mean + (torch.exp(0.5 * log_var) * noise if i != 0 else 0)
    return x


def test_deterministic_samplers_use_the_eps_half(adm):
    x_T, y = PerImageRNG([0, 1]).randn((2, 3, 16, 16)), torch.tensor([1, 2])
    for sample in (ddim_sample, plms_sample, dpm_solver_pp_sample):
        for cache in (None, CacheSchedule(3, 1)):
            ours = sample(adm, x_T, SEQ, ALPHAS, cache=cache, model_kwargs={"y": y})
            assert ours.shape == x_T.shape
            assert torch.equal(ours, sample(EpsHalf(adm), x_T, SEQ, ALPHAS, cache=cache, model_kwargs={"y": y}))


def test_the_ancestral_sampler_uses_the_learned_variance_as_adm_does(adm):
    x_T, y = PerImageRNG([3, 4]).randn((2, 3, 16, 16)), torch.tensor([5, 6])
    ours = ddpm_sample(adm, x_T, SEQ, ALPHAS, var_type="learned_range", model_kwargs={"y": y},
                       noise_fn=PerImageRNG([3, 4]).randn_like)
    theirs = adm_ancestral(adm, x_T, SEQ, y, PerImageRNG([3, 4]).randn_like)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    fixed = ddpm_sample(adm, x_T, SEQ, ALPHAS, var_type="fixedsmall", model_kwargs={"y": y},
                        noise_fn=PerImageRNG([3, 4]).randn_like)
    assert not torch.allclose(ours, fixed)
    with pytest.raises(UserError, match="learned_range needs a U-Net with learned sigma"):
        ddpm_sample(EpsHalf(adm), x_T, SEQ, ALPHAS, var_type="learned_range", model_kwargs={"y": y},
                    noise_fn=torch.randn_like)


def test_clip_denoised_clips_x0_and_rederives_eps(adm):
    x_T, y = PerImageRNG([7]).randn((1, 3, 16, 16)) * 3, torch.tensor([0])
    preds = {}
    for clip in (False, True):
        rec = []
        ddim_sample(adm, x_T, SEQ, ALPHAS, model_kwargs={"y": y}, clip_denoised=clip, callback=rec.append)
        preds[clip] = torch.stack([r["x0_pred"] for r in rec])
    assert preds[False].abs().max() > 1 and preds[True].abs().max() <= 1
    assert torch.equal(preds[True][0], preds[False][0].clamp(-1, 1))  # the same first model call


def test_guidance_guides_eps_and_keeps_the_conditional_variance():
    class Fixed(torch.nn.Module):  # returns [eps, v] with eps = v = the context's value
        num_branches = 1

        def forward(self, x, t, context):
            return context[:, :, None, None].expand(-1, 2 * x.shape[1], *x.shape[2:])

        def forward_full(self, x, t, branch, context):
            return self(x, t, context), None

        def forward_partial(self, x, t, cached, branch, context):
            return self(x, t, context)

    x = torch.zeros(1, 3, 2, 2)
    out = ClassifierFreeGuidance(Fixed(), 3.0, torch.full((1, 1), 1.0))(x, torch.zeros(1), context=torch.full((1, 1), 2.0))
    assert out.shape[1] == 6 and torch.all(out[:, :3] == 1 + 3 * (2 - 1)) and torch.all(out[:, 3:] == 2)
