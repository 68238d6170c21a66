"""The planner (`evaluation/plan.py`, `scripts/plan.py`) end to end on the built-in model."""

import json
import runpy
import shlex
import subprocess
import sys
from dataclasses import replace

import pytest

from conftest import REPO, SCRIPTS
from deepcache_ref import build_model, load_config
from deepcache_ref.evaluation.calibrate import save_schedule
from deepcache_ref.evaluation.plan import Candidate
from deepcache_ref.runs.cli import run
from deepcache_ref.samplers import CacheSchedule


@pytest.mark.slow
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
    ran = json.loads((tmp_path / "samples" / "settings.json").read_text())["settings"]["config"]["sampling"]
    pick = result["recommended"]
    assert (ran["sampler"], ran["steps"]) == (pick["sampler"], pick["steps"]), "the command reproduces the pick"


@pytest.mark.parametrize("changes, cache", [
    ({"sampler": "dpm++", "steps": 10, "skip_type": "linspace", "solver_order": 3},
     CacheSchedule(1, 1, "explicit", explicit_steps=(0, 2, 3, 7))),
    ({"sampler": "ddim", "steps": 20, "skip_type": "quad", "eta": 0.0}, CacheSchedule(3, 0, "nonuniform", 10, 1.4)),
    ({"sampler": "plms", "steps": 12, "skip_type": "uniform"}, CacheSchedule(4, 2)),
], ids=["calibrated-dpm++", "eq7-ddim", "uniform-plms"])
def test_the_planners_command_runs_exactly_its_pick_whatever_the_overrides(tmp_path, changes, cache, capsys):
    cfg = load_config("digits")
    pick = Candidate("pick", replace(cfg.sampling, **changes), cache)
    schedule = save_schedule(tmp_path / "plan_schedule.json", pick.sampling, cache) if cache.kind == "explicit" else None
    baseline = ["sampling.steps=50", "sampling.eta=0.5", "sampling.cache_interval=7", "sampling.cache_branch=3",
                "sampling.skip_type=uniform", "sampling.batch_size=3"]  # the baseline's keys the pick must override
    command = shlex.join(["python", "scripts/sample.py", *pick.sample_args("digits", baseline, schedule)])
    argv = shlex.split(command)[2:] + ["--seeds", "0", "--device", "cpu", "--outdir", str(tmp_path / "run")]
    assert run(runpy.run_path(str(SCRIPTS / "sample.py"), run_name="x")["main"], argv) == 0, capsys.readouterr().err
    ran = json.loads((tmp_path / "run" / "settings.json").read_text())["settings"]
    s = ran["config"]["sampling"]
    assert {k: s[k] for k in changes} == changes and s["cache_branch"] == cache.branch  # (eta=0.5 would fail plms)
    timesteps = build_model(cfg, "meta").timesteps(pick.sampling.steps, pick.sampling.skip_type)
    assert ran["timesteps"] == list(timesteps) and ran["full_steps"] == cache.full_steps(len(timesteps))
