"""Per-image random numbers: one generator per sample, as in NVlabs/edm."""

import torch


class PerImageRNG:
    """One `torch.Generator` per image, seeded by that image's seed.

    An image's noise never depends on the other images of its batch, so a sample is a function of
    (checkpoint, settings, seed) only. `randn_like` is a valid `noise_fn` for the samplers.
    """

    def __init__(self, seeds, device="cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s) % (1 << 63)) for s in seeds]

    def randn(self, shape, dtype=torch.float32):
        """[len(seeds), *shape[1:]] standard normal, image i drawn from generator i."""
        return torch.stack([torch.randn(shape[1:], generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def randn_like(self, x):
        return self.randn(x.shape, dtype=x.dtype)
