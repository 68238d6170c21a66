"""DPM-Solver++ with DeepCache: parity with diffusers, interval 1 bit for bit, partial steps in the
multistep history; calibrated schedules; the planner end to end."""

import deepcache_ref
import json
import shlex
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from deepcache_ref import ddpm
from conftest import FIXTURES, REPO, SCRIPTS, tiny_ldm
from deepcache_ref import Pipeline, load_config, load_model
from deepcache_ref.evaluation.calibrate import calibrated_schedule, deviation
from deepcache_ref.samplers import CacheSchedule, ClassifierFreeGuidance, dpm_solver_pp_sample, make_timesteps

TINY = FIXTURES / "diffusers/tiny_ddpm"


@pytest.fixture(scope="module")
def tiny():
    return deepcache_ref.load_model(TINY), torch.load(TINY / "dpm_solver_pp.pt", weights_only=True)


def test_matches_diffusers_multistep_dpm_solver_pp(tiny):
    model, golden = tiny
    assert len(golden["runs"]) == 4
    for run in golden["runs"]:
        timesteps = make_timesteps(run["steps"], "linspace")
        assert timesteps[::-1] == run["timesteps"]
        x0 = dpm_solver_pp_sample(model.unet, golden["x_T"], timesteps, model.alphas_cumprod, order=run["order"])
        assert float((x0 - run["x_0"]).norm() / run["x_0"].norm()) < 1e-5, (run["order"], run["steps"])


@pytest.mark.parametrize("order", [2, 3])
def test_interval_1_is_the_uncached_solver_bit_for_bit(tiny, order):
    model, golden = tiny
    seq = make_timesteps(10, "linspace")
    plain = dpm_solver_pp_sample(model.unet, golden["x_T"], seq, model.alphas_cumprod, order=order)
    for branch in (0, 3):
        cached = dpm_solver_pp_sample(model.unet, golden["x_T"], seq, model.alphas_cumprod, order=order,
                                      cache=CacheSchedule(1, branch))
        assert torch.equal(plain, cached)


class PartialIsFull:
    """A U-Net whose partial pass ignores the cache and runs whole (plus `shift`)."""

    def __init__(self, unet, shift=0.0):
        self.unet, self.shift, self.num_branches = unet, shift, unet.num_branches

    def __call__(self, x, t):
        return self.unet(x, t)

    def forward_full(self, x, t, branch):
        return self.unet.forward_full(x, t, branch=branch)

    def forward_partial(self, x, t, cached, branch):
        return self.unet(x, t) + self.shift


def test_partial_steps_feed_the_multistep_history_like_full_ones(tiny):
    model, golden = tiny
    seq, cache = make_timesteps(12, "linspace"), CacheSchedule(3, 1)
    steps = []
    exact = dpm_solver_pp_sample(PartialIsFull(model.unet), golden["x_T"], seq, model.alphas_cumprod, order=3,
                                 cache=cache, callback=lambda d: steps.append(d["full"]))
    assert steps == cache.full_mask(12)
    assert torch.equal(exact, dpm_solver_pp_sample(model.unet, golden["x_T"], seq, model.alphas_cumprod, order=3))
    shifted = dpm_solver_pp_sample(PartialIsFull(model.unet, 1e-2), golden["x_T"], seq, model.alphas_cumprod,
                                   order=3, cache=cache)
    assert not torch.allclose(shifted, exact, atol=1e-4)  # what a partial step returns is used
    real = dpm_solver_pp_sample(model.unet, golden["x_T"], seq, model.alphas_cumprod, order=3, cache=cache)
    assert torch.isfinite(real).all() and not torch.equal(real, exact)


def test_the_pipeline_runs_dpm_solver_on_ldm_with_guidance():
    model = tiny_ldm()
    s = replace(model.config.sampling, sampler="dpm++", steps=6, scale=3.0, cache_interval=2)
    x0 = Pipeline(model).sample_x0([0, 1], s, classes=[3, 4])
    denoiser, kw = model.denoiser([3, 4], 3.0)
    assert isinstance(denoiser, ClassifierFreeGuidance)
    from deepcache_ref.samplers import PerImageRNG

    by_hand = dpm_solver_pp_sample(denoiser, PerImageRNG([0, 1]).randn((2, *model.sample_shape)), model.timesteps(6),
                                   model.alphas_cumprod, order=2, cache=CacheSchedule(2, 0), **kw)
    assert torch.equal(x0, by_hand)


@pytest.fixture(scope="module")
def digits():
    cfg = load_config("digits", ["sampling.steps=20"])
    return Pipeline(load_model(cfg)), cfg.sampling


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


def test_the_planner_end_to_end_writes_its_table_and_a_command_sample_accepts(tmp_path):
    out = tmp_path / "plan"
    r = subprocess.run([sys.executable, str(SCRIPTS / "plan.py"), "--config", "digits", "--speedup", "2",
                        "--calib-seeds", "0-3", "--held-out-seeds", "100-103", "--ddim-steps", "5,10",
                        "--plms-steps", "5", "--dpm-steps", "5", "--intervals", "3", "--branches", "0",
                        "--dpm-cache-steps", "6", "--repeats", "1", "--targets", "2", "--out", str(out),
                        "--fd-real", str(REPO / "data/digits8x8.npz"), "--fd-max", "16", "--fd-samples", "8",
                        "--reference-steps", "100", "sampling.steps=20"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "plan.md").read_text()
    assert "#### Frontier" in table and "DPM-Solver++" in table and "Recommended" in table
    result = json.loads((tmp_path / "plan.json").read_text())
    assert result["recommended"]["speedup"] >= 2 and result["recommended"]["held_out"] is not None
    assert result["recommended"]["fd_pix"] > 0
    methods = {c["method"] for c in result["candidates"]}
    assert {"DDIM", "PLMS", "DPM-Solver++", "DeepCache (uniform) on DDIM", "DeepCache (Eq. 7) on DDIM",
            "DeepCache (calibrated) on DDIM", "DeepCache (calibrated) on DPM-Solver++"} <= methods
    argv = shlex.split(result["command"])[2:]  # drop "python scripts/sample.py"
    done = subprocess.run([sys.executable, str(SCRIPTS / "sample.py"), *argv, "--seeds", "0-1",
                           "--outdir", str(tmp_path / "samples")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "samples").glob("*.png"))) == 2
