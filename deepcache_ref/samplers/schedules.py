"""Timestep sequences and DeepCache cache schedules (pure data: the static cache policy)."""

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from ..core.values import as_int, as_ints, as_number
from ..errors import UserError


def make_timesteps(num_steps, skip_type="uniform", num_train_timesteps=1000, offset=0):
    """Ascending training timesteps visited by a sampler of `num_steps` steps.

    `uniform`: range(0, T, T // S) (more than S entries when S does not divide T).
    `quad`: int(linspace(0, sqrt(0.8 T), S) ** 2); duplicates are kept, each is a step.
    `linspace`: round(linspace(0, T - 1, S + 1))[1:] (diffusers' `timestep_spacing="linspace"`; the step
    after the smallest goes to the final alpha_bar).
    `offset=1` gives the CompVis LDM convention (1, 101, ..., 901 for S = 10).
    """
    if not _is_int(num_train_timesteps) or num_train_timesteps < 1:
        raise UserError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")
    offset = as_int(offset, "offset")
    if offset < 0:
        raise UserError(f"offset must be >= 0, got {offset}")
    if isinstance(num_steps, torch.Tensor):
        num_steps = as_int(num_steps, "the number of sampler steps")
    if not _is_int(num_steps) or not 1 <= num_steps <= num_train_timesteps:
        raise UserError(f"the number of sampler steps must be in 1..{num_train_timesteps}, got {num_steps!r}")
    if skip_type == "uniform":
        seq = list(range(0, num_train_timesteps, num_train_timesteps // num_steps))
    elif skip_type == "quad":
        seq = [int(s) for s in np.linspace(0, np.sqrt(num_train_timesteps * 0.8), num_steps) ** 2]
    elif skip_type == "linspace":
        seq = [int(s) for s in np.linspace(0, num_train_timesteps - 1, num_steps + 1).round()[1:]]
    else:
        raise UserError(f"unknown skip_type {skip_type!r} (uniform | quad | linspace)")
    return [t + offset for t in seq]


def sampler_steps(timesteps, alphas_cumprod, final_alpha_cumprod):
    """[(t, alpha_bar_t, alpha_bar_prev)] in visiting order (noisiest first), as Python floats."""
    ts = as_ints(timesteps, "timesteps")
    if not ts:
        raise UserError("no timesteps: a sampler needs at least one step (see make_timesteps)")
    if ts != sorted(ts):
        raise UserError("timesteps must be ascending (as make_timesteps returns them)")
    ac = alphas_cumprod_list(alphas_cumprod)
    if ts[0] < 0 or ts[-1] >= len(ac):
        raise UserError(f"timesteps must lie in 0..{len(ac) - 1} (the model's training timesteps), "
                        f"got {ts[0]}..{ts[-1]}")
    final_alpha_cumprod = as_number(final_alpha_cumprod, "final_alpha_cumprod")
    if not 0 < final_alpha_cumprod <= 1:
        raise UserError(f"final_alpha_cumprod must be in (0, 1], got {final_alpha_cumprod!r}")
    prev = [float(final_alpha_cumprod)] + [ac[t] for t in ts[:-1]]
    if any(a_prev < ac[t] for t, a_prev in zip(ts, prev)):
        raise UserError("alphas_cumprod must decrease as t grows, and final_alpha_cumprod be at least "
                        f"alphas_cumprod[{ts[0]}] = {ac[ts[0]]:g} (got {final_alpha_cumprod:g}): each step removes noise")
    return [(t, ac[t], a_prev) for t, a_prev in reversed(list(zip(ts, prev)))]


def distinct_steps(steps, sampler):
    """UserError unless every step of `sampler_steps` moves to a smaller noise level (no repeated timestep)."""
    repeated = [t for t, a_t, a_prev in steps if a_prev <= a_t]
    if repeated:
        raise UserError(f"{sampler} needs distinct timesteps; timestep {repeated[0]} repeats (skip_type quad repeats "
                        "small timesteps at many steps): use skip_type uniform or linspace, or fewer steps")


def alphas_cumprod_list(alphas_cumprod):
    """alpha_bar_t as a list of Python floats, checked: one dimension, every value in (0, 1)."""
    try:
        ac = torch.as_tensor(alphas_cumprod).detach()
    except (TypeError, ValueError, RuntimeError):
        raise UserError("alphas_cumprod must be a 1-D tensor of numbers, got "
                        f"{type(alphas_cumprod).__name__}") from None
    if ac.device.type == "meta":
        raise UserError("alphas_cumprod is on the meta device (shapes only): give its values")
    if ac.ndim != 1 or len(ac) == 0 or not ac.is_floating_point():
        raise UserError(f"alphas_cumprod must be a 1-D floating tensor [T], got {ac.dtype} {list(ac.shape)}")
    ac = ac.double().cpu()
    if not bool(torch.isfinite(ac).all()) or bool((ac <= 0).any()) or bool((ac >= 1).any()):
        raise UserError("alphas_cumprod must lie in (0, 1) (alpha_bar_t of a noise schedule; half precision rounds "
                        f"values near 1 to 1), got values from {ac.min().item():g} to {ac.max().item():g}")
    return ac.tolist()


KINDS = ("uniform", "nonuniform", "power", "explicit")


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass(frozen=True)
class CacheSchedule:
    """Which sampler steps are full (step 0 = noisiest) and which skip branch is cached.

    kind:
      * `uniform`: full iff i % interval == 0, so ceil(S / N) full steps;
      * `nonuniform`: DeepCache Eq. 7, full steps dense around step `center`:
        k = ceil(S / N) points l = linspace(-c^(1/p), (S-c)^(1/p), k + 1) without the last one (it
        maps to the end of sampling, S), full steps = unique(trunc(sign(l) |l|^p + c)) with 0;
      * `power`: the rule of DeepCache's LDM code, dense at the first steps:
        unique(int(linspace(0, S^(1/p), k + 1) ** p)) without its last entry;
      * `explicit`: the given `explicit_steps` (strictly increasing, with 0).
    `interval=1` (every step full) is the uncached sampler. Plain data: printable, hashable,
    `dataclasses.replace` works; invalid values raise `UserError` (a ValueError) at construction.
    """

    interval: int = 1                 # DeepCache N
    branch: int = 0                   # skip branch whose consumer's input is cached
    kind: str = "uniform"             # uniform | nonuniform | power | explicit
    center: Optional[int] = None      # nonuniform: centre step c of Eq. 7
    power: Optional[float] = None     # nonuniform / power: exponent p
    explicit_steps: Optional[Tuple[int, ...]] = None  # explicit: the full steps

    def __post_init__(self):
        for name in ("interval", "branch", "center"):  # a one-element integer tensor is an integer
            if isinstance(getattr(self, name), torch.Tensor):
                object.__setattr__(self, name, as_int(getattr(self, name), f"cache {name}"))
        if isinstance(self.power, torch.Tensor):
            object.__setattr__(self, "power", as_number(self.power, "cache power"))
        if self.explicit_steps is not None:
            try:
                steps = as_ints(self.explicit_steps, "explicit full steps")
            except UserError:
                raise UserError(f"explicit full steps must be a list of integers, got {self.explicit_steps!r}") \
                    from None
            object.__setattr__(self, "explicit_steps", tuple(steps))
        self._check()

    def _check(self):
        if self.kind not in KINDS:
            raise UserError(f"unknown cache schedule kind {self.kind!r} ({' | '.join(KINDS)})")
        if not _is_int(self.interval) or self.interval < 1:
            raise UserError(f"cache interval must be an integer >= 1, got {self.interval!r}")
        if not _is_int(self.branch) or self.branch < 0:
            raise UserError(f"cache branch must be an integer >= 0, got {self.branch!r}")
        if self.kind in ("nonuniform", "power"):
            try:
                power = as_number(self.power, "power")
            except UserError:
                power = None
            if power is None or power <= 0:
                raise UserError(f"a {self.kind} cache schedule needs a finite power > 0, got {self.power!r}")
        if self.kind == "nonuniform" and (self.center is None or not _is_int(self.center)):
            raise UserError(f"a nonuniform cache schedule needs an integer center step, got {self.center!r}")
        if self.kind == "explicit":
            steps = self.explicit_steps
            if not steps or steps[0] != 0:
                raise UserError(f"an explicit cache schedule must contain step 0 as its first full step, got {steps}")
            if list(steps) != sorted(set(steps)):
                raise UserError(f"explicit full steps must be strictly increasing, got {steps}")

    def full_steps(self, num_steps):
        """Sorted indices of the full steps among `num_steps` steps."""
        try:
            return self._full_steps(num_steps)
        except OverflowError:
            raise UserError(f"cache power {self.power} is too small for {num_steps} steps (S^(1/p) overflows): "
                            "use p in about 0.5..5") from None

    def _full_steps(self, num_steps):
        S, N = num_steps, self.interval
        k = math.ceil(S / N)
        if self.kind == "uniform":
            steps = range(0, S, N)
        elif self.kind == "explicit":
            if self.explicit_steps[-1] >= S:
                raise UserError(f"explicit full step {self.explicit_steps[-1]} is outside steps 0..{S - 1}")
            steps = self.explicit_steps
        elif self.kind == "power":
            steps = np.unique((np.linspace(0, S ** (1 / self.power), k + 1) ** self.power).astype(int))[:-1]
        else:
            c, p = self.center, self.power
            if not 0 <= c < S:
                raise UserError(f"cache center {c} is outside steps 0..{S - 1}")
            l = np.linspace(-(c ** (1 / p)), (S - c) ** (1 / p), k + 1)[:-1]
            steps = np.trunc(np.sign(l) * np.abs(l) ** p + c).astype(int).clip(0, S - 1)
        return sorted({0, *(int(i) for i in steps)})

    def full_mask(self, num_steps):
        """[is step i full for i in range(num_steps)]."""
        full = set(self.full_steps(num_steps))
        return [i in full for i in range(num_steps)]

    def is_full(self, i, num_steps):
        return i in self.full_steps(num_steps)

    def plan(self, num_steps):
        """The static policy's answer for every step (see `CacheExecutor`): the full-step mask."""
        return self.full_mask(num_steps)

    def validate(self, num_steps, num_branches):
        """Raise before any work if this schedule cannot run `num_steps` steps on a U-Net."""
        if self.interval > 1 or self.kind != "uniform":
            if self.branch >= num_branches:
                raise UserError(f"cache branch {self.branch} is out of range: the U-Net has branches 0..{num_branches - 1}")
        self.full_steps(num_steps)
