"""scripts/sample.py: determinism across processes, resumption after SIGKILL, signals, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import SCRIPTS

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # bitwise equality needs equal thread counts


def run(*args, wait=True, **kw):
    cmd = [sys.executable, str(SCRIPTS / "sample.py"), *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, **kw)


def files(folder):
    """Every file's bytes (the settings record by its settings: who created it differs)."""
    out = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
           and "logs" not in p.parts}
    if "settings.json" in out:
        out["settings.json"] = json.loads(out["settings.json"])["settings"]
    return out


def test_two_processes_under_torchrun_write_the_same_bytes(tmp_path, t1_run):
    cfg, ckpt = t1_run
    one = run("--config", cfg, "--ckpt", ckpt, "--seeds", "0-8", "--outdir", tmp_path / "one", "--npz")
    assert one.returncode == 0, one.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPTS / "sample.py"), "--config", str(cfg), "--ckpt", str(ckpt), "--seeds", "0-8",
           "--outdir", str(tmp_path / "two"), "--npz"]
    two = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    a, b = files(tmp_path / "one"), files(tmp_path / "two")
    assert len([k for k in a if k.endswith(".png")]) == 9
    assert a == b
    npz = np.load(tmp_path / "one" / "samples_9x16x16x3.npz")
    assert npz["arr_0"].dtype == np.uint8 and npz["arr_0"].shape == (9, 16, 16, 3)


def _wait_for_images(folder, n, proc, timeout=120):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if len(list(folder.glob("*.png"))) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} images appeared (exit {proc.poll()})")


def test_killed_run_resumes_to_the_same_files(tmp_path, t1_run):
    cfg, ckpt = t1_run
    args = ["--config", cfg, "--ckpt", ckpt, "--seeds", "0-23", "--steps", "40", "--subdirs"]
    full = run(*args, "--outdir", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    proc = run(*args, "--outdir", out, wait=False)
    _wait_for_images(out / "000000", 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(list((out / "000000").glob("*.png"))) < 24, "the kill came too late to test anything"
    again = run(*args, "--outdir", out)
    assert again.returncode == 0, again.stderr
    assert files(out) == files(tmp_path / "full")
    assert not list(out.rglob("*.tmp")), "a temporary file survived"


def test_sigterm_finishes_the_current_image_and_exits_resumably(tmp_path, t1_run):
    cfg, ckpt = t1_run
    out = tmp_path / "out"
    proc = run("--config", cfg, "--ckpt", ckpt, "--seeds", "0-23", "--steps", "40", "--outdir", out, wait=False)
    _wait_for_images(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "rerun the same command to resume" in err
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("extra,message", [
    (["sampling.cache_intervall=2"], "unknown config key 'sampling.cache_intervall'"),
    (["--cache-branch", "9"], "cache branch 9 is out of range"),
    (["--cache-interval", "0"], "cache interval must be an integer >= 1"),
    (["--cache-schedule", "nonuniform", "--cache-power", "1.2"], "needs a center"),
    (["--seeds", "5-1"], "malformed seed range"),
    (["--seeds", "1-x"], "malformed seed range"),
    (["--scale", "2"], "unknown config key 'sampling.scale'"),  # no guidance for DDPM
    (["--cuda-graph", "--device", "cpu"], "CUDA graphs need a CUDA device"),
])
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, t1_run, extra, message):
    cfg, ckpt = t1_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "000000.png").write_bytes(b"existing")
    r = run("--config", cfg, "--ckpt", ckpt, "--outdir", out, *extra)
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert [p.name for p in out.iterdir()] == ["000000.png"] and (out / "000000.png").read_bytes() == b"existing"


@pytest.mark.slow
def test_compiled_channels_last_run_writes_the_eager_images(tmp_path, t1_run):
    cfg, ckpt = t1_run
    args = ["--config", cfg, "--ckpt", ckpt, "--seeds", "0-3"]
    eager = run(*args, "--outdir", tmp_path / "eager")
    fast = run(*args, "--outdir", tmp_path / "fast", "--compile", "default", "--channels-last")
    assert eager.returncode == 0 and fast.returncode == 0, fast.stderr
    a, b = files(tmp_path / "eager"), files(tmp_path / "fast")
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:  # fp32 reassociation may move a pixel across a rounding boundary, no further
        diff = np.abs(np.asarray(Image.open(tmp_path / "eager" / name), np.int16)
                      - np.asarray(Image.open(tmp_path / "fast" / name), np.int16))
        assert diff.max() <= 1, (name, diff.max())


def test_missing_checkpoint_names_file_and_source(tmp_path):
    r = run("--config", "cifar10", "--outdir", tmp_path / "out")
    assert r.returncode == 2 and "model-790000.ckpt" in r.stderr and "heibox.uni-heidelberg.de" in r.stderr
    assert not (tmp_path / "out").exists()


def test_ldm_config_samples_with_guidance_and_seed_derived_classes(tmp_path):
    from conftest import FIXTURES

    out = tmp_path / "ldm"
    r = run("--config", FIXTURES / "ldm/tiny_config.yaml", "--ckpt", FIXTURES / "ldm/tiny_ldm.ckpt", "--steps", "10",
            "--scale", "3", "--cache-interval", "2", "--seeds", "998-1001", "--batch-size", "3", "--outdir", out, "--npz")
    assert r.returncode == 0, r.stderr
    npz = np.load(out / "samples_4x32x32x3.npz")
    assert npz["arr_0"].shape == (4, 32, 32, 3) and npz["arr_1"].tolist() == [998, 999, 0, 1]
