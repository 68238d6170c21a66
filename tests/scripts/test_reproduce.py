"""scripts/reproduce.py: the dry run lists every published setting; collect builds the table."""

import json
import subprocess
import sys

import pytest

from conftest import SCRIPTS


def dry(*args):
    r = subprocess.run([sys.executable, str(SCRIPTS / "reproduce.py"), *args, "--dry-run"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.slow
def test_ddpm_table_dry_run_covers_every_setting():
    out = dry("ddpm", "--gpus", "4", "--ref", "cifar10=/data/cifar10_stats.npz")
    for config in ("cifar10", "lsun_bedroom", "lsun_church"):
        for n in (1, 2, 3, 5, 10):
            assert f"--config {config} --cache-interval {n} --seeds 0-49999" in out
    assert "--nproc_per_node 4" in out and "/data/cifar10_stats.npz" in out
    assert out.count("scripts/benchmark.py") == 3


@pytest.mark.slow
def test_ldm_table_dry_run_uses_the_adm_evaluator_and_slurm():
    out = dry("ldm", "--launcher", "slurm")
    for n in (1, 2, 3, 5, 10, 20):
        assert f"CONFIG=cin256-v2 CACHE_INTERVAL={n} " in out
    assert out.count("evaluator.py VIRTUAL_imagenet256_labeled.npz") == 6


@pytest.mark.slow
def test_collect_writes_ours_beside_the_paper(tmp_path):
    (tmp_path / "cifar10-N5").mkdir()
    (tmp_path / "cifar10-N5" / "fid.json").write_text(json.dumps({"fid": 5.81}))
    (tmp_path / "cifar10-benchmark.json").write_text(json.dumps({"rows": [
        {"method": "DeepCache", "N": 5, "speedup": 1.83}, {"method": "DDIM", "N": 1, "speedup": 1.0}]}))
    r = subprocess.run([sys.executable, str(SCRIPTS / "reproduce.py"), "ddpm", "--collect", "--outdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "table_ddpm.md").read_text()
    assert "| cifar10 | 5 | 5.73 | 5.81 | 1.85x | 1.83x |" in table
    assert "| lsun_church | 2 | 11.31 | - | 1.29x | - |" in table
