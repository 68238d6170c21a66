"""Calibrated cache schedules (`evaluation/calibrate.py`) on the built-in model."""

from dataclasses import replace

import pytest

from deepcache_ref import Pipeline, load_config, load_model
from deepcache_ref.evaluation.calibrate import calibrated_schedule, deviation
from deepcache_ref.samplers import CacheSchedule


@pytest.fixture(scope="module")
def digits():
    cfg = load_config("digits", ["sampling.steps=20"])
    return Pipeline(load_model(cfg)), cfg.sampling


@pytest.mark.slow
@pytest.mark.parametrize("sampler,num_full,branch", [("ddim", 7, 0), ("ddim", 4, 1), ("dpm++", 7, 0)])
def test_a_calibrated_schedule_is_never_worse_than_uniform_on_its_seeds(digits, sampler, num_full, branch):
    pipe, s = digits
    s = replace(s, sampler=sampler)
    seeds = list(range(8))
    cache, report = calibrated_schedule(pipe, s, seeds, num_full, branch)
    assert cache.kind == "explicit" and len(cache.explicit_steps) == num_full and cache.explicit_steps[0] == 0
    reference = pipe.sample_x0(seeds, s, CacheSchedule())
    uniform = CacheSchedule(round(20 / num_full), branch)
    assert len(uniform.full_steps(20)) == num_full
    assert deviation(pipe, s, seeds, cache, reference) <= deviation(pipe, s, seeds, uniform, reference)
