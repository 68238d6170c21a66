"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a conditional U-Net."""

import torch

from ..core.values import as_number
from ..errors import UserError
from .adapters import adapt_unet


class ClassifierFreeGuidance:
    """`eps = eps_u + scale (eps_c - eps_u)`, from one batched call on `[uncond; cond]`.

    Keeps the U-Net contract (`__call__`, `forward_full`, `forward_partial`, `num_branches`), so
    any sampler can use it and the DeepCache feature holds the doubled batch. The conditioning
    arrives under `keyword` (`context=` for cross-attention, `y=` for class labels) through the
    sampler's `model_kwargs`. With `scale == 1` the plain conditional call is made. `uncond_context`
    has batch size 1 or B. With learned sigma the eps half is guided and the variance half is the
    conditional one (as GLIDE does).
    """

    def __init__(self, unet, scale, uncond_context, keyword="context"):
        try:
            scale = as_number(scale, "guidance scale")
        except UserError:
            raise UserError(f"guidance scale must be a finite number, got {scale!r}") from None
        if not isinstance(uncond_context, torch.Tensor) or uncond_context.ndim < 1:
            raise UserError(f"uncond_context must be a tensor of one conditioning row (or one per image), got "
                            f"{type(uncond_context).__name__}")
        if not isinstance(keyword, str) or not keyword:
            raise UserError(f"keyword must name the U-Net's conditioning argument (e.g. 'context'), got {keyword!r}")
        self.unet = adapt_unet(unet)
        self.scale = float(scale)
        self.uncond_context = uncond_context
        self.keyword = keyword

    @property
    def num_branches(self):
        return self.unet.num_branches

    def _conditioning(self, x, cond):
        if set(cond) != {self.keyword}:
            raise UserError(f"guidance takes its conditioning as {self.keyword}= only, got {sorted(cond) or 'none'}")
        c = cond[self.keyword]
        if c.shape[0] != x.shape[0]:
            raise UserError(f"{c.shape[0]} conditioning rows for a batch of {x.shape[0]}: give one label per image")
        return c

    def _double(self, x, t, c):
        uc = self.uncond_context.expand(c.shape[0], *self.uncond_context.shape[1:])
        return torch.cat([x, x]), torch.cat([t, t]), {self.keyword: torch.cat([uc, c])}

    def _combine(self, out, x):
        eps_u, eps_c = out.chunk(2)
        if out.shape[1] == 2 * x.shape[1]:  # learned sigma: guide eps, keep the conditional variance
            c = x.shape[1]
            return torch.cat([eps_u[:, :c] + self.scale * (eps_c[:, :c] - eps_u[:, :c]), eps_c[:, c:]], dim=1)
        return eps_u + self.scale * (eps_c - eps_u)

    def __call__(self, x, t, **cond):
        c = self._conditioning(x, cond)
        if self.scale == 1.0:
            return self.unet(x, t, **cond)
        x2, t2, c2 = self._double(x, t, c)
        return self._combine(self.unet(x2, t2, **c2), x)

    def forward_full(self, x, t, branch, **cond):
        c = self._conditioning(x, cond)
        if self.scale == 1.0:
            return self.unet.forward_full(x, t, branch=branch, **cond)
        x2, t2, c2 = self._double(x, t, c)
        out, cached = self.unet.forward_full(x2, t2, branch=branch, **c2)
        return self._combine(out, x), cached

    def forward_partial(self, x, t, cached, branch, **cond):
        c = self._conditioning(x, cond)
        if self.scale == 1.0:
            return self.unet.forward_partial(x, t, cached, branch=branch, **cond)
        x2, t2, c2 = self._double(x, t, c)
        return self._combine(self.unet.forward_partial(x2, t2, cached, branch=branch, **c2), x)
