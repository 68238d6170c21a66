"""The built-in digits model: digit-like samples, DeepCache close to uncached, training resumes."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import REPO, SCRIPTS
from deepcache_ref import Pipeline, build_model, load_config, load_model
from deepcache_ref.evaluation.fid import fd_pix, pixel_vectors
from deepcache_ref.samplers import CacheSchedule

SEEDS = list(range(300))


def real_digits():
    return pixel_vectors(REPO / "data" / "digits8x8.npz", 16.0)


@pytest.fixture(scope="module")
def shipped():
    cfg = load_config("digits", ["sampling.steps=20"])
    return Pipeline(load_model(cfg)), cfg


@pytest.mark.slow
def test_shipped_model_makes_digits(shipped):
    pipe, cfg = shipped
    real = real_digits()
    ours = fd_pix(pipe.sample(SEEDS, cfg.sampling), real)
    noise = fd_pix((np.random.default_rng(0).random((len(SEEDS), 8, 8, 1)) * 255).astype(np.uint8), real)
    torch.manual_seed(1)
    untrained = Pipeline(build_model(cfg))
    scrambled = fd_pix(untrained.sample(SEEDS, cfg.sampling), real)
    assert ours < noise / 10 and ours < scrambled / 10, (ours, noise, scrambled)


@pytest.mark.slow
def test_deepcache_stays_close_and_error_grows_with_interval(shipped):
    pipe, cfg = shipped
    s = replace(cfg.sampling, steps=100)  # the config's setting
    seeds = SEEDS[:100]
    base = pipe.sample(seeds, s).astype(np.float64)
    err = {n: np.abs(pipe.sample(seeds, s, CacheSchedule(n, s.cache_branch)) - base).mean() for n in (2, 5, 10)}
    assert err[2] < 2.0, err  # mean absolute difference in 0-255 levels
    assert err[2] < err[5] < err[10], err


@pytest.mark.slow
def test_train_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    def train(steps, workdir):
        r = subprocess.run([sys.executable, str(SCRIPTS / "train.py"), "--config", "digits", "--steps", str(steps),
                            "--workdir", str(workdir), "training.batch_size=16", "training.save_every=2"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stderr

    train(2, tmp_path / "a")
    log = train(4, tmp_path / "a")
    assert "resumed from" in log and "at step 2" in log
    state = torch.load(tmp_path / "a" / "ckpt.pth", weights_only=True)
    assert state[3] == 4 and all(k.startswith("module.") for k in state[0])
    train(4, tmp_path / "b")  # the same 4 steps without interruption: identical weights
    a = torch.load(tmp_path / "a" / "ema.ckpt", weights_only=True)
    b = torch.load(tmp_path / "b" / "ema.ckpt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = tmp_path / "samples"
    r = subprocess.run([sys.executable, str(SCRIPTS / "sample.py"), "--config", "digits", "--ckpt",
                        str(tmp_path / "a" / "ckpt.pth"), "--seeds", "0-3", "--steps", "5", "--outdir", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.png"))) == 4
