"""scripts/benchmark.py: side-by-side rows, the ideal from measured MACs, and its written tables."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import SCRIPTS
from deepcache_ref import load_config
from deepcache_ref.core.macs import unet_macs
from deepcache_ref.ddpm import build_unet


@pytest.mark.slow
def test_rows_compare_each_setting_with_its_variants_baseline(tmp_path, t1_run):
    cfg, _ = t1_run
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, str(SCRIPTS / "benchmark.py"), "--config", str(cfg), "--random-init",
                        "--batch-size", "2", "--steps", "10", "--intervals", "3", "--branches", "0,1", "--ddim-steps", "5",
                        "--variants", "eager:fp32,eager:fp32:cl", "--repeats", "1", "--warmup", "0",
                        "--device", "cpu", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["variant"], r["method"], r["N"], r["branch"]) for r in rows] == [
        (v, m, n, b) for v in ("eager:fp32", "eager:fp32:cl")
        for m, n, b in (("DDIM", 1, None), ("DeepCache", 3, 0), ("DeepCache", 3, 1), ("DDIM", 1, None))]
    meta = {"device": "meta"}
    macs = unet_macs(build_unet(load_config(cfg).model, **meta), torch.zeros(1, 3, 16, 16, **meta),
                     torch.zeros(1, dtype=torch.long, **meta), [0, 1])
    for r in rows:
        if r["method"] == "DeepCache":  # 10 steps, N = 3: full steps 0, 3, 6, 9
            f = macs["partial"][r["branch"]] / macs["full"]
            assert r["ideal"] == pytest.approx(10 / (4 + 6 * f))
            assert r["macs_step"] == pytest.approx((4 + 6 * f) / 10 * macs["full"])
        elif r["steps"] == 5:  # fewer-step DDIM: its ideal is the step ratio, and it differs from 10 steps
            assert r["ideal"] == pytest.approx(2.0) and r["mae"] > 0
        else:
            assert r["baseline"] and r["speedup"] == 1.0 and r["mae"] == 0.0
        assert 0 < r["overhead"] < 1 and r["images_per_s"] > 0
    assert rows[0]["vs_eager_fp32"] == 1.0
    table = out.with_suffix(".md").read_text()
    assert table.count("| eager:fp32:cl |") == 4 and "of ideal" in table
