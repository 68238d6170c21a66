"""Per-image random numbers: one generator per sample, as in NVlabs/edm."""

import numbers

import torch

from ..errors import UserError

MAX_SEED = (1 << 63) - 1  # seeds are distinct generator states up to here


def _seed(s):
    """An integer seed (Python, numpy or a 0-d integer tensor); never a truncated float or a bool."""
    if isinstance(s, torch.Tensor) and s.ndim == 0 and not s.is_floating_point() and s.dtype != torch.bool:
        s = s.item()
    if isinstance(s, bool) or not isinstance(s, numbers.Integral):
        raise UserError(f"seed {s!r} is not an integer: seeds are integers in 0..{MAX_SEED}")
    return int(s)


class PerImageRNG:
    """One `torch.Generator` per image, seeded by that image's seed.

    An image's noise never depends on the other images of its batch, so a sample is a function of
    (checkpoint, settings, seed) only. `randn_like` is a valid `noise_fn` for the samplers.
    """

    def __init__(self, seeds, device="cpu"):
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise UserError(f"device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
        if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__") or \
                isinstance(seeds, torch.Tensor) and seeds.ndim != 1:
            raise UserError(f"seeds must be a sequence of integers (e.g. range(16)), got {seeds!r}")
        seeds = [_seed(s) for s in seeds]
        if not seeds:
            raise UserError("no seeds: give at least one")
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise UserError(f"seed {bad[0]} is out of range: seeds are integers in 0..{MAX_SEED} (2^63 - 1)")
        self.generators = [torch.Generator(self.device).manual_seed(s) for s in seeds]

    def randn(self, shape, dtype=torch.float32):
        """[len(seeds), *shape[1:]] standard normal, image i drawn from generator i."""
        return torch.stack([torch.randn(shape[1:], generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def randn_like(self, x):
        return self.randn(x.shape, dtype=x.dtype)
