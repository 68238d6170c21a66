"""The U-Nets of this package: modules whose passes are those of their structure's adapter.

`ddpm.UNet` mirrors ermongroup/ddim's `Model` and `ldm.UNetModel` mirrors openaimodel's
`UNetModel`, so each names its structure (`samplers.adapters.DDPMUNet`, `OpenAIUNet`) and runs its
plain, full and partial passes through it: the same code that a research code base's own module
of that structure runs through (`samplers.adapt_unet`). Nothing else defines a pass.
"""

import torch.nn as nn


class DeepCacheUNet(nn.Module):
    structure = None  # a samplers.adapters.CachedPasses subclass

    def _passes(self):
        passes = self.__dict__.get("_structure_passes")
        if passes is None:
            passes = self.__dict__["_structure_passes"] = self.structure(self)
        return passes

    @property
    def num_branches(self):
        return self._passes().num_branches

    def forward(self, x, t, **cond):
        return self._passes()(x, t, **cond)

    def forward_full(self, x, t, branch, **cond):
        """Full pass; returns (eps, cached feature for `branch`)."""
        return self._passes().forward_full(x, t, branch, **cond)

    def forward_partial(self, x, t, cached, branch, **cond):
        """Partial pass: hs[0..branch], then the up path from `cached` (from the last full pass)."""
        return self._passes().forward_partial(x, t, cached, branch, **cond)
