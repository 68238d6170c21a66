"""Multiply-accumulate counts of full and partial passes (`FlopCounterMode`; MACs = FLOPs / 2).

Only the ops FlopCounterMode knows are counted: convolutions, matmuls (Linear) and batched matmuls
(attention); norms, activations and element-wise ops are free. Works on the `meta` device, so the
full-size models are counted without allocating weights.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(fn, *args, **kwargs):
    """MACs of one call `fn(*args, **kwargs)`."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() // 2


def unet_macs(unet, x, t, branches=None, **model_kwargs):
    """{'full': MACs, 'partial': {branch: MACs}} of `unet` on inputs x, t (any device, `meta` included)."""
    branches = range(unet.num_branches) if branches is None else branches
    result = {"full": count_macs(unet, x, t, **model_kwargs), "partial": {}}
    for k in branches:
        with torch.no_grad():
            _, cached = unet.forward_full(x, t, branch=k, **model_kwargs)
        result["partial"][k] = count_macs(unet.forward_partial, x, t, cached, branch=k, **model_kwargs)
    return result


def ideal_speedup(num_steps, num_full, partial_fraction):
    """Upper bound on the speedup of a cached run: T / (k + (T - k) f)."""
    return num_steps / (num_full + (num_steps - num_full) * partial_fraction)
