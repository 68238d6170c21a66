"""Timestep sequences and cache schedules."""

import math

import pytest

from deepcache_ref.samplers import CacheSchedule, make_timesteps


def test_timesteps():
    assert make_timesteps(10) == list(range(0, 1000, 100))
    assert make_timesteps(10, offset=1) == list(range(1, 1000, 100))
    assert make_timesteps(10, "quad") == [0, 9, 39, 88, 158, 246, 355, 483, 632, 800]
    quad100 = make_timesteps(100, "quad")
    assert len(quad100) == 100 and len(set(quad100)) == 96  # duplicates kept, each one a step
    assert len(make_timesteps(30)) == 31  # range(0, 1000, 33): more than S when S does not divide T


@pytest.mark.parametrize("S,N", [(10, 3), (100, 2), (100, 3), (100, 5), (100, 10), (250, 20), (7, 10)])
def test_uniform_has_ceil_S_over_N_full_steps_from_zero(S, N):
    steps = CacheSchedule(N).full_steps(S)
    assert steps[0] == 0 and len(steps) == math.ceil(S / N)
    assert steps == [i for i in range(S) if CacheSchedule(N).is_full(i, S)]


def test_nonuniform_eq7_hand_computed():
    # S=10, N=3 -> k=4; c=5, p=1.2: l = linspace(-5^(1/1.2), 5^(1/1.2), 5)[:-1] = [-3.824, -1.912, 0, 1.912]
    # sign(l)|l|^p + c = [0.0, 2.823, 5.0, 7.177] -> truncated [0, 2, 5, 7]
    assert CacheSchedule(3, kind="nonuniform", center=5, power=1.2).full_steps(10) == [0, 2, 5, 7]
    # S=10, N=2 -> k=5; c=0 puts every point on the right: l = linspace(0, 10^(1/1.2), 6)[:-1]
    # = [0, 1.363, 2.725, 4.088, 5.451]; l^1.2 = [0, 1.45, 3.33, 5.42, 7.64] -> [0, 1, 3, 5, 7]
    assert CacheSchedule(2, kind="nonuniform", center=0, power=1.2).full_steps(10) == [0, 1, 3, 5, 7]


@pytest.mark.parametrize("N,c,p", [(2, 120, 1.2), (3, 120, 1.2), (5, 110, 1.4), (10, 110, 1.2), (20, 120, 1.4)])
def test_nonuniform_paper_ldm_settings_give_ceil_S_over_N_full_steps(N, c, p):
    steps = CacheSchedule(N, kind="nonuniform", center=c, power=p).full_steps(250)
    assert len(steps) == math.ceil(250 / N) and steps[0] == 0 and steps[-1] < 250
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    near = [g for a, g in zip(steps, gaps) if abs(a - c) < 250 / 8]
    assert max(near) <= min(gaps[0], gaps[-1]), "full steps are densest around the centre"


def test_power_rule_of_the_ldm_code():
    assert CacheSchedule(3, kind="power", power=1.5).full_steps(10) == [0, 1, 3, 6]
    assert CacheSchedule(2, kind="power", power=1.5).full_steps(10) == [0, 2, 4, 7]


def test_schedule_is_pure_data():
    a = CacheSchedule(3, 2)
    assert a == CacheSchedule(interval=3, branch=2) and hash(a) == hash(CacheSchedule(3, 2))
    with pytest.raises(AttributeError):
        a.interval = 4


@pytest.mark.parametrize("kwargs,match", [
    ({"interval": 0}, "interval must be an integer >= 1"),
    ({"branch": -1}, "branch must be"),
    ({"kind": "cosine"}, "unknown cache schedule kind"),
    ({"kind": "nonuniform", "power": 1.2}, "needs an integer center"),
    ({"kind": "power"}, "needs a finite power > 0"),
    ({"kind": "power", "power": float("nan")}, "needs a finite power > 0"),
    ({"kind": "nonuniform", "power": float("inf"), "center": 3}, "needs a finite power > 0"),
    ({"kind": "explicit", "explicit_steps": [1, 4]}, "must contain step 0"),
    ({"kind": "explicit", "explicit_steps": [0, 4, 2]}, "strictly increasing"),
])
def test_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CacheSchedule(**kwargs)


def test_centre_and_explicit_steps_outside_the_run():
    with pytest.raises(ValueError, match="center 12 is outside steps 0..9"):
        CacheSchedule(3, kind="nonuniform", center=12, power=1.2).full_steps(10)
    with pytest.raises(ValueError, match="outside steps"):
        CacheSchedule(kind="explicit", explicit_steps=[0, 10]).full_steps(10)
