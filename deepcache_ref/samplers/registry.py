"""The samplers, one entry each: what the pipeline, the CLI, the config schema, the fast paths,
calibration, the planner, the benchmark and the invariant tests know about a sampler.

Adding a sampler is one file (its function) plus one `SamplerSpec` below. The function takes
`(unet, x_T, timesteps, alphas_cumprod, *, cache, final_alpha_cumprod, model_kwargs, callback,
progress)`, its own options as keywords, `noise_fn` when it draws noise, and calls the U-Net through
a `CacheExecutor`. Its options become keys of the `sampling:` config section and flags of
`scripts/sample.py`; a run records only its own sampler's options, so another sampler's options do
not enter its fingerprint.
"""

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from ..errors import UserError
from .dpm_solver import dpm_solver_pp_sample
from .sampling import ddim_sample, ddpm_sample, plms_sample


@dataclass(frozen=True)
class Option:
    """One option of a sampler: a `sampling.<key>` config key and a `--<key>` flag."""

    key: str                       # config key (the flag is --key with dashes)
    type: type                     # int | float
    default: Any
    keyword: str                   # the sampler function's keyword argument
    help: str
    choices: Optional[Tuple] = None
    check: Optional[Callable[[Any], bool]] = None  # True when the value is valid
    rule: str = ""                 # what a valid value is, for the error message

    def validate(self, value):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.type is float and number and not math.isfinite(value):
            raise UserError(f"sampling.{self.key} must be a finite number, got {value!r}")
        bad = not number or (self.type is int and not isinstance(value, int))
        bad = bad or (self.choices is not None and value not in self.choices)
        bad = bad or (self.check is not None and not self.check(value))
        if bad:
            rule = self.rule or (f"one of {', '.join(map(str, self.choices))}" if self.choices
                                 else f"a valid {self.type.__name__}")
            raise UserError(f"sampling.{self.key} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class SamplerSpec:
    """What the rest of the package knows about one sampler."""

    name: str                      # config / CLI name
    label: str                     # name in tables
    fn: Callable                   # the sampler function
    options: Tuple[Option, ...] = ()
    model_attributes: Tuple[str, ...] = ()  # keywords read off the model (e.g. its ancestral var_type)
    extra_calls: int = 0           # model calls beyond one per step (PLMS: one more, on its first step)
    noise: Callable[[dict], bool] = lambda options: False  # whether a run with these options draws noise
    cuda_graph: bool = True        # a run that draws no noise can be recorded as one CUDA graph
    calibratable: bool = False     # one model call per step: calibrated schedules apply (calibrate.py)
    distinct_timesteps: bool = False  # a repeated timestep is a step of length 0 it cannot take

    def option_values(self, sampling):
        """{key: value} of this sampler's options in a sampling section."""
        return {o.key: getattr(sampling, o.key) for o in self.options}

    def draws_noise(self, sampling):
        return self.noise(self.option_values(sampling))

    def graphable(self, sampling):
        """Whether a run with these settings can be recorded as one CUDA graph."""
        return self.cuda_graph and not self.draws_noise(sampling)

    def kwargs(self, sampling, model):
        """The keyword arguments of `fn` for a sampling section and a model (noise_fn aside)."""
        out = {o.keyword: getattr(sampling, o.key) for o in self.options}
        out.update({name: getattr(model, name) for name in self.model_attributes})
        return out

    def model_calls(self, num_steps):
        return num_steps + self.extra_calls


SAMPLERS = {spec.name: spec for spec in (
    SamplerSpec("ddim", "DDIM", ddim_sample, calibratable=True, noise=lambda o: o["eta"] > 0, options=(
        Option("eta", float, 0.0, "eta", "DDIM stochasticity (0 = deterministic)", check=lambda v: 0 <= v <= 1,
               rule="in [0, 1] (0 = deterministic DDIM)"),)),
    SamplerSpec("plms", "PLMS", plms_sample, extra_calls=1),
    SamplerSpec("ddpm", "DDPM", ddpm_sample, model_attributes=("var_type",), noise=lambda o: True, cuda_graph=False),
    SamplerSpec("dpm++", "DPM-Solver++", dpm_solver_pp_sample, calibratable=True, distinct_timesteps=True, options=(
        Option("solver_order", int, 2, "order", "dpm++: multistep order", choices=(2, 3)),)),
)}


def sampler(name):
    """The spec of a sampler by name; UserError naming the known ones."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown sampler {name!r} ({' | '.join(SAMPLERS)})") from None


def all_options():
    """Every sampler option, once per key (for the config schema and the CLI)."""
    out = {}
    for spec in SAMPLERS.values():
        for o in spec.options:
            out.setdefault(o.key, o)
    return list(out.values())
