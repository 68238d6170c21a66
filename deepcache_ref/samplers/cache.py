"""The cache executor: a U-Net called at each sampler step, full or partial as a cache policy says.

The executor owns the step index and the cached feature, so nothing is stored on the model between
calls (two samplers can share one model; PLMS's extra call cannot shift a schedule). A sampler
builds one per run and calls `executor(x, i)` for its step i.

A cache policy answers one question: is step i full? Two kinds fit the same seam:

* a *static* policy knows the answer for every step before sampling starts: `plan(num_steps)`
  returns the full-step mask. `CacheSchedule` (plain data) is the static policy. The mask is made
  once, so no host work happens per step (a run can be recorded as one CUDA graph);
* an *adaptive* policy returns None from `plan` and is asked `decide(i, executor)` at each step,
  where it may read what the executor has seen (`executor.last_eps`, `executor.cached`, the step's
  `executor.timesteps[i]`). Since it cannot know whether the next step is partial, the executor
  keeps the cache at every full step. No adaptive policy ships yet; this is the seam for one.

Every policy has a `branch` (the skip branch whose consumer's input is cached) and
`validate(num_steps, num_branches)`, which raises before any work if it cannot run.

A U-Net with learned sigma (ADM: twice the channels of x) gives the samplers its eps half; the
variance half of the last call is `executor.model_var` (the ancestral sampler's `learned_range`).
"""

import torch

from ..core.values import check_sample_input
from ..errors import UserError
from .adapters import adapt_unet
from .schedules import CacheSchedule


class CacheExecutor:
    """`executor(x, i) -> (eps, full)`: the U-Net at sampler step i under `policy`.

    `unet` follows the U-Net contract (`__call__`, `forward_full`, `forward_partial`,
    `num_branches`) or is a module `adapt_unet` fits (a research code base's own U-Net); `timesteps` are the training timesteps in visiting order (step 0 = noisiest);
    `x_T` gives the batch size and device of the per-step timestep tensors, made once here;
    `model_kwargs` go to every call. `policy=None` or a schedule with `interval=1` calls the plain
    U-Net at every step: the uncached sampler, bit for bit.
    """

    def __init__(self, unet, policy, timesteps, x_T, model_kwargs=None):
        check_sample_input(unet, x_T, model_kwargs)
        if policy is not None and not all(callable(getattr(policy, m, None)) for m in ("plan", "validate")) \
                or isinstance(policy, type):
            raise UserError(f"cache must be a CacheSchedule (or a cache policy with plan, validate and branch), got "
                            f"{policy!r}")
        self.unet = unet = adapt_unet(unet)
        self.policy = policy if policy is not None else CacheSchedule()
        self.num_steps = len(timesteps)
        self.policy.validate(self.num_steps, unet.num_branches)
        self.full = self.policy.plan(self.num_steps)  # None: the policy decides at each step
        self.kwargs = model_kwargs or {}
        self.timesteps = [torch.full((x_T.shape[0],), int(t), device=x_T.device, dtype=torch.long) for t in timesteps]
        self.cached = None    # the feature of the last full step that kept one
        self.last_eps = None  # the previous call's output (kept for adaptive policies only)
        self.model_var = None  # a learned-sigma U-Net's variance half of the last call (ADM), else None
        self.decisions = {}   # an adaptive policy's answer per step, asked once (PLMS calls step 1 twice)

    def is_full(self, i):
        if self.full is not None:
            return self.full[i]
        if i not in self.decisions:
            self.decisions[i] = i == 0 or bool(self.policy.decide(i, self))
        return self.decisions[i]

    def __call__(self, x, i):
        t, branch = self.timesteps[i], self.policy.branch
        full = self.is_full(i)
        if not full:
            eps = self.unet.forward_partial(x, t, self.cached, branch=branch, **self.kwargs)
        elif self.full is None or (i + 1 < self.num_steps and not self.full[i + 1]):  # a partial step may follow
            eps, self.cached = self.unet.forward_full(x, t, branch=branch, **self.kwargs)
        else:
            eps = self.unet(x, t, **self.kwargs)
        if eps.shape[1] == 2 * x.shape[1]:  # learned sigma (ADM): [eps, v]; the samplers use eps
            eps, self.model_var = eps.split(x.shape[1], dim=1)
        if self.full is None:
            self.last_eps = eps
        return eps, full
