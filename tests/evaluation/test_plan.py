"""The planner (`evaluation/plan.py`, `scripts/plan.py`) end to end on the built-in model."""

import json
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, SCRIPTS


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
