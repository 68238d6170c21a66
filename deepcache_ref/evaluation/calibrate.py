"""Calibrated cache schedules: full steps chosen to keep a cached run close to the uncached one.

Design. A DDIM step moves x by sqrt(alpha_bar_{i+1}) (sigma_i - sigma_{i+1}) eps in terms of
sigma = sqrt((1 - alpha_bar) / alpha_bar), so an error d in the eps of step i moves x_{i+1} by that
coefficient times d. Along the uncached trajectory of a few calibration seeds we measure, for every
full step j and every later step i within `max_gap`, the error of a partial step at i that reuses
the feature cached at j:

    e(j, i) = sqrt(alpha_bar_{i+1}) (sigma_i - sigma_{i+1}) RMS(eps_partial(x_i; cache_j) - eps_full(x_i))

A schedule with full steps F costs the sum of e(last full step before i, i) over its partial steps
(as if later steps neither amplified nor damped an error). Given the number of full steps k (step 0
always among them), dynamic programming over segments [j, l) (full step j, partial steps up to the
next full step l) finds the F of least cost exactly, in O(k S max_gap). (Weighting by the effect on
x_0 instead, i.e. without sqrt(alpha_bar), over-weights the noisy first steps, whose errors later
steps correct: on the digits model it did worse than uniform.) The proxy is only a proxy, so the
chosen schedule is run on the calibration seeds next to the uniform schedule with as many full
steps, and the one with the smaller measured deviation is kept: a calibrated schedule is never
worse than uniform on its calibration seeds. Samplers with one model call per step (ddim, dpm++).
"""

import json
import math
from pathlib import Path

import torch

from ..errors import UserError
from ..runs.files import write_json
from ..samplers import SAMPLERS, CacheSchedule, sampler


class _Recorder:
    """Wraps a denoiser: every plain call runs the full pass and keeps (x, t, kwargs, eps, cache)."""

    def __init__(self, denoiser, branch):
        self.denoiser, self.branch, self.calls = denoiser, branch, []
        self.num_branches = denoiser.num_branches

    def __call__(self, x, t, **kwargs):
        eps, cached = self.denoiser.forward_full(x, t, branch=self.branch, **kwargs)
        self.calls.append((x, t, kwargs, eps, cached))
        return eps

    def _uncached(self, *args, **kwargs):  # the recorded run is uncached: never called
        raise AssertionError("calibration records an uncached run")

    forward_full = forward_partial = _uncached


def _sigma(a_bar):
    return math.sqrt((1 - a_bar) / a_bar)


@torch.no_grad()
def step_errors(pipe, sampling, seeds, branch, max_gap):
    """({(j, i): e(j, i)} for 0 <= j < i <= j + max_gap, number of steps S), along the uncached run."""
    if not SAMPLERS[sampling.sampler].calibratable:
        names = ", ".join(name for name, spec in SAMPLERS.items() if spec.calibratable)
        raise UserError(f"calibration needs a sampler with one model call per step ({names}), not {sampling.sampler}")
    recorders = []
    pipe.sample_x0(seeds, sampling, CacheSchedule(), wrap=lambda d: recorders.append(_Recorder(d, branch)) or recorders[-1])
    rec = recorders[0]
    calls = rec.calls
    ts = pipe.model.timesteps(sampling.steps, sampling.skip_type)[::-1]
    ac = pipe.alphas_cumprod.double().tolist()
    final = pipe.model.denoiser(None if not pipe.model.num_classes else [0])[1]["final_alpha_cumprod"]
    a_bar = [ac[t] for t in ts] + [final]
    S = len(calls)
    errors = {}
    for i in range(1, S):  # all earlier caches at once: one partial call on a batch of len(js) * B
        js = list(range(max(0, i - max_gap), i))
        x, t, kwargs, eps, _ = calls[i]
        cached = torch.cat([calls[j][4] for j in js])
        rep = {k: torch.cat([v] * len(js)) for k, v in kwargs.items()}
        partial = rec.denoiser.forward_partial(torch.cat([x] * len(js)), torch.cat([t] * len(js)), cached,
                                               branch=branch, **rep)
        rms = (partial.float() - torch.cat([eps] * len(js)).float()).square().reshape(len(js), -1).mean(1).sqrt()
        weight = math.sqrt(a_bar[i + 1]) * (_sigma(a_bar[i]) - _sigma(a_bar[i + 1]))
        errors.update({(j, i): weight * float(r) for j, r in zip(js, rms)})
    return errors, S


def best_full_steps(errors, num_steps, num_full, max_gap):
    """The full steps (with 0) of least total error e(last full, i) over partial steps (exact DP)."""
    S, k = num_steps, num_full
    if not 1 <= k <= S:
        raise UserError(f"the number of full steps must be in 1..{S}, got {k}")
    prefix = {}  # cost of a segment that starts at full step j and ends before l

    def seg(j, l):
        if l - j - 1 > max_gap:
            return math.inf
        key = (j, l)
        if key not in prefix:
            prefix[key] = sum(errors[j, i] for i in range(j + 1, l))
        return prefix[key]

    # cost[m][l]: least cost of steps 0..l-1 with m full steps, the last segment ending at l (a full step or S)
    inf = math.inf
    cost = [[inf] * (S + 1) for _ in range(k + 1)]
    back = [[None] * (S + 1) for _ in range(k + 1)]
    for l in range(1, S + 1):
        cost[1][l] = seg(0, l)
    for m in range(2, k + 1):
        for l in range(m, S + 1):
            for j in range(max(m - 1, l - max_gap - 1), l):
                c = cost[m - 1][j] + seg(j, l)
                if c < cost[m][l]:
                    cost[m][l], back[m][l] = c, j
    if cost[k][S] == inf:
        raise UserError(f"{k} full steps cannot cover {S} steps with gaps of at most {max_gap}")
    steps, l, m = [], S, k
    while m > 1:
        l = back[m][l]
        steps.append(l)
        m -= 1
    return [0] + sorted(steps)


def deviation(pipe, sampling, seeds, cache, reference):
    """RMS difference of a cached run's x_0 from `reference` (the uncached x_0 of the same seeds)."""
    x0 = pipe.sample_x0(seeds, sampling, cache)
    return float((x0.float() - reference.float()).square().mean().sqrt())


def calibrated_schedule(pipe, sampling, seeds, num_full, branch, max_gap=None, errors=None):
    """(CacheSchedule, report): `num_full` full steps for `branch`, chosen on `seeds` (see the module
    docstring); never worse than the uniform schedule of that many full steps on those seeds.
    `errors` from `step_errors` may be given (computed once for several budgets)."""
    S = len(pipe.model.timesteps(sampling.steps, sampling.skip_type))
    max_gap = max_gap or min(S - 1, 3 * math.ceil(S / num_full))
    if errors is None:
        errors, _ = step_errors(pipe, sampling, seeds, branch, max_gap)
    steps = best_full_steps(errors, S, num_full, max_gap)
    calibrated = CacheSchedule(1, branch, "explicit", explicit_steps=steps)
    interval = max(1, round(S / num_full))
    uniform = CacheSchedule(interval, branch)
    reference = pipe.sample_x0(seeds, sampling, CacheSchedule())
    d_cal, d_uni = deviation(pipe, sampling, seeds, calibrated, reference), deviation(pipe, sampling, seeds, uniform, reference)
    chosen = calibrated if d_cal <= d_uni else CacheSchedule(1, branch, "explicit", explicit_steps=uniform.full_steps(S))
    return chosen, {"proposed": steps, "deviation_calibrated": d_cal, "uniform_interval": interval,
                    "uniform_full_steps": len(uniform.full_steps(S)), "deviation_uniform": d_uni,
                    "kept": "calibrated" if chosen is calibrated else "uniform"}


def save_schedule(path, sampling, cache, report=None):
    """A schedule file for `sample.py --cache-file`: the full steps and the settings they were made for."""
    return write_json(path, {"sampler": sampling.sampler, "steps": sampling.steps, "skip_type": sampling.skip_type,
                             **sampler(sampling.sampler).option_values(sampling), "cache_branch": cache.branch,
                             "cache_full_steps": list(cache.explicit_steps), "calibration": report or {}})


def load_schedule(path, sampling):
    """Overrides (`sampling.key=value`) from a schedule file, each field checked (type, range) with the
    file named, then compared with the run's sampling section: sampler, steps, skip type and the
    sampler's own options (e.g. DPM-Solver++'s order) must be the ones the schedule was made for."""
    def bad(what):
        return UserError(f"--cache-file {path}: {what}")

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise bad(f"not a schedule file of plan.py / calibrate ({e})") from None
    if not isinstance(data, dict):
        raise bad(f"holds a JSON {type(data).__name__}, not a schedule file of plan.py / calibrate")

    def field(key, kind, name):
        if key not in data:
            raise bad(f"has no {key!r}: not a schedule file of plan.py / calibrate")
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"{key} must be {name}, got {value!r}")
        return value

    made_for = {"sampler": field("sampler", str, "a sampler name"), "steps": field("steps", int, "an integer"),
                "skip_type": field("skip_type", str, "a skip type name")}
    if made_for["sampler"] not in SAMPLERS:
        raise bad(f"unknown sampler {made_for['sampler']!r} ({' | '.join(SAMPLERS)})")
    for option in SAMPLERS[made_for["sampler"]].options:
        kind = int if option.type is int else (int, float)
        made_for[option.key] = field(option.key, kind, f"a {option.type.__name__}")
        try:
            option.validate(made_for[option.key])
        except UserError as e:
            raise bad(str(e)) from None
    branch = field("cache_branch", int, "an integer")
    steps = field("cache_full_steps", list, "a list of step indices")
    if branch < 0:
        raise bad(f"cache_branch must be >= 0, got {branch}")
    if not steps:
        raise bad("cache_full_steps is empty (it must hold step 0)")
    wrong = [i for i in steps if not isinstance(i, int) or isinstance(i, bool)]
    if wrong:
        raise bad(f"cache_full_steps must be integer step indices, got {wrong[0]!r}")
    if steps[0] != 0 or steps != sorted(set(steps)):
        raise bad(f"cache_full_steps must increase strictly from step 0, got {steps}")
    for key, value in made_for.items():
        if getattr(sampling, key) != value:
            raise UserError(f"--cache-file {path} was made for sampling.{key}={value}, this run has "
                            f"{getattr(sampling, key)}: use the same setting or another schedule")
    interval = max(1, round(sampling.steps / len(steps)))  # for the folder name: the mean interval
    return ["sampling.cache_schedule=explicit", f"sampling.cache_full_steps={steps}",
            f"sampling.cache_branch={branch}", f"sampling.cache_interval={interval}"]
