"""The cache executor: the seam between a sampler and a cache policy."""

import torch

from conftest import tiny_ddpm
from deepcache_ref.ddpm.config import DiffusionConfig
from deepcache_ref.ddpm.model import alphas_cumprod
from deepcache_ref.samplers import CacheExecutor, CacheSchedule, ddim_sample, make_timesteps

ALPHAS = alphas_cumprod(DiffusionConfig())


class EveryThirdAtRunTime:
    """An adaptive policy (it decides step by step, seeing the executor), here one that happens to
    decide what `CacheSchedule(3, branch)` plans in advance."""

    def __init__(self, branch):
        self.branch, self.seen = branch, []

    def validate(self, num_steps, num_branches):
        assert self.branch < num_branches

    def plan(self, num_steps):
        return None

    def decide(self, i, executor):
        self.seen.append((i, executor.last_eps is not None, executor.cached is not None))
        return i % 3 == 0


def test_an_adaptive_policy_plugs_into_every_sampler_and_sees_what_the_executor_saw():
    unet, _ = tiny_ddpm("T1")
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    seq = make_timesteps(10)
    policy = EveryThirdAtRunTime(branch=1)
    adaptive = ddim_sample(unet, x_T, seq, ALPHAS, cache=policy)
    static = ddim_sample(unet, x_T, seq, ALPHAS, cache=CacheSchedule(3, 1))
    assert torch.equal(adaptive, static)
    assert [i for i, _, _ in policy.seen] == list(range(1, 10)) and all(eps and feat for _, eps, feat in policy.seen)


def test_a_static_schedule_plans_once_and_keeps_no_state_per_step():
    unet, _ = tiny_ddpm("T1")
    x = torch.randn(1, 3, 16, 16)
    ex = CacheExecutor(unet, CacheSchedule(2, 0), [900, 500, 100], x)
    assert ex.full == [True, False, True]
    _, full0 = ex(x, 0)
    cached = ex.cached
    _, full1 = ex(x, 1)
    _, full2 = ex(x, 2)  # the last full step is followed by no partial one: the plain pass, no new cache
    assert (full0, full1, full2) == (True, False, True) and ex.cached is cached and ex.last_eps is None
