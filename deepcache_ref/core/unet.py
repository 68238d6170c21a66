"""The DeepCache passes shared by every U-Net of this package (Ma et al., CVPR 2024, Algorithm 1).

A U-Net pushes skip features `hs[0..n-1]` on the way down; up block j (in execution order)
consumes `hs[n-1-j]`. For `cache_branch = k`:

* `forward_full(x, t, branch=k)` runs everything and also returns the cached feature: the input
  `h` of the up block that consumes `hs[k]` (block n-1-k), taken before the concatenation;
* `forward_partial(x, t, cached, branch=k)` recomputes `hs[0..k]` only, then up blocks n-1-k..n-1
  starting from `cached`, then the output head.

All three passes run the same helpers stopped at different depths, so a partial pass right after a
full pass at the same inputs reproduces it bit for bit. Subclasses provide `num_branches` (= n) and

* `_embed(t, **cond)`: the embedding every block receives; it sees the conditioning, so a
  class-embedded U-Net adds its label embedding here (`emb = time_embed(t) + label_emb(y)`);
* `_down(x, emb, num_skips, **cond)`: the first `num_skips` skip features;
* `_mid(h, emb, **cond)`, `_up_block(j, h, emb, **cond)` (h already concatenated with its skip) and
  `_head(h)`.

`**cond` is whatever the sampler passes as `model_kwargs` (`context=` for cross-attention, `y=` for
class labels); a U-Net names the keywords it takes, so a misspelt one is a TypeError.
"""

import torch
import torch.nn as nn

from ..errors import UserError


class DeepCacheUNet(nn.Module):
    num_branches: int

    def _up(self, h, hs, emb, start, cache_at=None, **cond):
        cached = None
        for j in range(start, self.num_branches):
            if j == cache_at:
                cached = h
            h = self._up_block(j, torch.cat([h, hs.pop()], dim=1), emb, **cond)
        return h, cached

    def _check_branch(self, branch):
        if not 0 <= branch < self.num_branches:
            raise UserError(f"cache branch {branch} is out of range: this U-Net has branches 0..{self.num_branches - 1}")

    def _forward(self, x, t, cache_at=None, **cond):
        emb = self._embed(t, **cond)
        hs = self._down(x, emb, self.num_branches, **cond)
        h, cached = self._up(self._mid(hs[-1], emb, **cond), hs, emb, 0, cache_at, **cond)
        return self._head(h), cached

    def forward_full(self, x, t, branch, **cond):
        """Full pass; returns (eps, cached feature for `branch`)."""
        self._check_branch(branch)
        return self._forward(x, t, cache_at=self.num_branches - 1 - branch, **cond)

    def forward_partial(self, x, t, cached, branch, **cond):
        """Partial pass: hs[0..branch], then the up path from `cached` (from the last full pass)."""
        self._check_branch(branch)
        emb = self._embed(t, **cond)
        hs = self._down(x, emb, branch + 1, **cond)
        h, _ = self._up(cached, hs, emb, self.num_branches - 1 - branch, **cond)
        return self._head(h)
