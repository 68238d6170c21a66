"""A planner: which sampler, steps and cache settings give the least error for a speed budget.

Every candidate samples the same calibration seeds; its error is the RMS distance (0-255 levels) of
its images from a high-accuracy reference of the same seeds: DDIM over every training timestep
(1000 steps, uncached; fewer with `reference_steps`). Speed is measured side by side in one process against the config's own
setting (repeats round-robin, median of per-round ratios), next to the MAC ideal (model MACs of the
baseline over the candidate's). The frontier is the set of candidates that no other beats in both
error and measured speedup; its members are checked on held-out seeds.
"""

import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Optional

from ..pipeline import cache_schedule
from ..samplers import SAMPLERS, CacheSchedule
from ..samplers.registry import all_options
from .benchmark import macs_per_branch, sync
from .calibrate import calibrated_schedule, step_errors


PICKED = {"sampler", "steps", "skip_type", "cache_interval", "cache_branch", "cache_schedule", "cache_center",
          "cache_power", "cache_full_steps", *(o.key for o in all_options())}  # the keys a candidate's flags set


@dataclass(eq=False)
class Candidate:
    method: str                       # e.g. "DDIM", "DeepCache (uniform) on DDIM"
    sampling: object                  # the sampling section it runs
    cache: CacheSchedule
    error: Optional[float] = None     # RMS vs the reference on the calibration seeds (0-255)
    held_out: Optional[float] = None  # the same on held-out seeds
    speedup: Optional[float] = None   # measured, against the baseline
    ideal: Optional[float] = None     # MAC ideal
    extra: dict = field(default_factory=dict)

    def options(self):
        """The sample.py options of this candidate (the cache file is added by the caller)."""
        s, c = self.sampling, self.cache
        opts = [f"--sampler {s.sampler}", f"--steps {s.steps}", f"--skip-type {s.skip_type}"]
        own = {o.key for o in SAMPLERS[s.sampler].options}  # its own options, and any other left off its default
        opts += [f"--{o.key.replace('_', '-')} {getattr(s, o.key)}" for o in all_options()
                 if o.key in own or getattr(s, o.key) != o.default]
        if c.kind == "explicit" or c.interval == 1 and c.kind == "uniform":
            return opts + (["--cache-interval 1"] if c.kind != "explicit" else [])
        opts += [f"--cache-interval {c.interval}", f"--cache-branch {c.branch}"]
        if c.kind == "nonuniform":
            opts += ["--cache-schedule nonuniform", f"--cache-center {c.center}", f"--cache-power {c.power}"]
        return opts

    def sample_args(self, config, overrides=(), schedule_file=None):
        """`scripts/sample.py` arguments that run exactly this candidate: its own flags (`--cache-file` for an
        explicit schedule, saved by the caller), and those `overrides` that set none of the keys its flags
        set (the others were the baseline's)."""
        opts = self.options() + ([f"--cache-file {schedule_file}"] if schedule_file is not None else [])
        kept = [o for o in overrides if o.split("=", 1)[0].removeprefix("sampling.") not in PICKED]
        return ["--config", str(config), *(w for opt in opts for w in opt.split(" ", 1)), *kept]

    def row(self):
        return {"method": self.method, "sampler": self.sampling.sampler, "steps": self.sampling.steps,
                "schedule": self.cache.kind if self.cache.interval > 1 or self.cache.kind != "uniform" else "-",
                "N": self.cache.interval if self.cache.kind != "explicit" else None, "branch": self.cache.branch
                if self.cache.interval > 1 or self.cache.kind != "uniform" else None,
                "full_steps": self.extra.get("full_steps"), "error": self.error, "held_out": self.held_out,
                "speedup": self.speedup, "ideal": self.ideal, **{k: v for k, v in self.extra.items() if k != "full_steps"}}


UNCACHED = {"cache_interval": 1, "cache_schedule": "uniform", "cache_full_steps": None}


def _solvers(base):
    """The sampling sections the planner derives from the config's: DDIM, PLMS and DPM-Solver++."""
    ddim = replace(base, sampler="ddim")  # DeepCache runs on the config's DDIM steps
    return ddim, replace(ddim, sampler="plms", eta=0.0), replace(ddim, sampler="dpm++", solver_order=2,
                                                                 skip_type="linspace", eta=0.0)


def check_search_space(check, base, ddim_steps, plms_steps, dpm_steps, intervals, branches, dpm_cache_steps,
                       reference_steps=None):
    """Every setting `candidates` and `measure` will run, passed to `check(flag, sampling)` before any work."""
    ddim, plms, dpm = _solvers(base)
    for flag, solver, steps in (("--ddim-steps", ddim, ddim_steps), ("--plms-steps", plms, plms_steps),
                                ("--dpm-steps", dpm, dpm_steps), ("--dpm-cache-steps", dpm, dpm_cache_steps)):
        for S in steps:
            check(f"{flag} {S}", replace(solver, steps=S, **UNCACHED))
    for s in [ddim] + [replace(dpm, steps=S) for S in dpm_cache_steps]:
        for N in intervals:
            for b in branches:
                check(f"--intervals {N} --branches {b}", replace(s, cache_interval=N, cache_branch=b,
                                                                 cache_schedule="uniform", cache_full_steps=None))
    if reference_steps is not None:
        reference = replace(ddim, steps=reference_steps, skip_type="uniform", eta=0.0, **UNCACHED)
        check(f"--reference-steps {reference_steps}", reference)


def candidates(pipe, base, ddim_steps, plms_steps, dpm_steps, intervals, branches, dpm_cache_steps,
               calib_seeds, log=print):
    """The search space: fewer-step solvers, and DeepCache (uniform, Eq. 7 non-uniform, calibrated)
    on the config's DDIM and on DPM-Solver++."""
    base, plms, dpm = _solvers(base)
    out = [Candidate(SAMPLERS["ddim"].label, replace(base, steps=S), CacheSchedule()) for S in ddim_steps]
    out += [Candidate(SAMPLERS["plms"].label, replace(plms, steps=S), CacheSchedule()) for S in plms_steps]
    out += [Candidate(SAMPLERS["dpm++"].label, replace(dpm, steps=S), CacheSchedule()) for S in dpm_steps]
    for on, s in [("DDIM", base)] + [("DPM-Solver++", replace(dpm, steps=S)) for S in dpm_cache_steps]:
        T = len(pipe.model.timesteps(s.steps, s.skip_type))
        for b in branches:
            gaps = max(intervals) * 3
            log(f"calibrating {on} {s.steps} steps, branch {b} ...")
            errors, _ = step_errors(pipe, s, calib_seeds, b, min(T - 1, gaps))
            for N in intervals:
                out.append(Candidate(f"DeepCache (uniform) on {on}", s, CacheSchedule(N, b)))
                if on == "DDIM":
                    out.append(Candidate(f"DeepCache (Eq. 7) on {on}", s,
                                         CacheSchedule(N, b, "nonuniform", center=T // 2, power=1.4)))
                k = math.ceil(T / N)
                cal, report = calibrated_schedule(pipe, s, calib_seeds, k, b, min(T - 1, gaps), errors)
                out.append(Candidate(f"DeepCache (calibrated) on {on}", s, cal,
                                     extra={"full_steps": len(cal.explicit_steps), "calibration_kept": report["kept"]}))
    return out


def rmse_levels(x0, reference):
    """RMS difference of two [-1, 1] image batches in 0-255 levels (values clamped as images are)."""
    a, b = x0.float().clamp(-1, 1), reference.float().clamp(-1, 1)
    return float((a - b).square().mean().sqrt() * 127.5)


def model_macs(pipe, cand, macs):
    """Model MACs of one run of a candidate per image. A sampler's extra calls (PLMS: one, on its first
    step) evaluate step 1's timestep and are scheduled as step 1."""
    T = len(pipe.model.timesteps(cand.sampling.steps, cand.sampling.skip_type))
    full = cand.cache.full_mask(T)
    f = macs["partial"][cand.cache.branch] if (cand.cache.interval > 1 or cand.cache.kind != "uniform") else macs["full"]
    calls = [macs["full"] if is_full else f for is_full in full]
    extra = macs["full"] if (len(full) > 1 and full[1]) or len(full) == 1 else f
    calls += [extra] * SAMPLERS[cand.sampling.sampler].extra_calls
    return sum(calls)


def measure(pipe, cands, base, calib_seeds, held_seeds, repeats=2, log=print, reference_steps=None):
    """Fills error, held_out, speedup and ideal of every candidate; returns the baseline candidate.
    The reference is DDIM over `reference_steps` (default: every training timestep)."""
    ref_s = replace(base, sampler="ddim", steps=reference_steps or pipe.model.num_train_timesteps, skip_type="uniform",
                    eta=0.0, **UNCACHED)
    log(f"reference: DDIM with {ref_s.steps} steps ...")
    refs = {name: pipe.sample_x0(seeds, ref_s, CacheSchedule()) for name, seeds in
            (("calib", calib_seeds), ("held", held_seeds))}
    macs = macs_per_branch(pipe.model, sorted({c.cache.branch for c in cands} | {0}), getattr(base, "scale", 1.0))
    baseline = Candidate("baseline", base, cache_schedule(base))
    runs = [baseline] + list(cands)
    for c in runs:  # untimed: the errors, and a warm-up of every setting
        c.error = rmse_levels(pipe.sample_x0(calib_seeds, c.sampling, c.cache), refs["calib"])
    seconds = [[] for _ in runs]
    for r in range(repeats):
        log(f"timing round {r + 1}/{repeats} of {len(runs)} settings ...")
        for i, c in enumerate(runs):
            sync(pipe.device)
            t0 = time.perf_counter()
            pipe.sample_x0(calib_seeds, c.sampling, c.cache)
            sync(pipe.device)
            seconds[i].append(time.perf_counter() - t0)
    base_macs = model_macs(pipe, baseline, macs)
    for c, times in zip(runs, seconds):
        c.speedup = statistics.median(b / t for b, t in zip(seconds[0], times))
        c.ideal = base_macs / model_macs(pipe, c, macs)
    for c in runs:
        c.held_out = rmse_levels(pipe.sample_x0(held_seeds, c.sampling, c.cache), refs["held"])
    return baseline


def frontier(cands):
    """The candidates no other beats in both (lower) error and (higher) measured speedup, fastest first."""
    front = [c for c in cands if not any(o is not c and o.error <= c.error and o.speedup >= c.speedup
                                         and (o.error < c.error or o.speedup > c.speedup) for o in cands)]
    return sorted(front, key=lambda c: -c.speedup)


def pick(cands, speedup=None, max_error=None):
    """The least-error candidate at least `speedup` times as fast, or the fastest within `max_error`."""
    if speedup is not None:
        ok = [c for c in cands if c.speedup >= speedup]
        return min(ok, key=lambda c: c.error) if ok else None
    ok = [c for c in cands if c.error <= max_error]
    return max(ok, key=lambda c: c.speedup) if ok else None
