"""scripts/sample.py: determinism across processes, resumption after SIGKILL, signals, fingerprints,
shared folders, lazy seeds, full disks."""

import json
import os
import resource
import runpy
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SCRIPTS, free_port

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # bitwise equality needs equal thread counts
SAMPLE = {}


def sample_in_process(argv, capsys):
    """(exit status, stderr) of sample.py's real entry point, run in this process (fast)."""
    if not SAMPLE:
        SAMPLE.update(runpy.run_path(str(SCRIPTS / "sample.py")))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        code = SAMPLE["run"](SAMPLE["main"], [str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigterm_finishes_the_current_image_and_exits_resumably(tmp_path, t1_run):
    cfg, ckpt = t1_run
    out = tmp_path / "out"
    proc = run("--config", cfg, "--ckpt", ckpt, "--seeds", "0-23", "--steps", "40", "--outdir", out, wait=False)
    _wait_for_images(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "rerun the same command to resume" in err
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_compiled_channels_last_run_writes_the_eager_images(tmp_path, t1_run):
    cfg, ckpt = t1_run
    args = ["--config", cfg, "--ckpt", ckpt, "--seeds", "0-3"]
    eager = run(*args, "--outdir", tmp_path / "eager")
    fast = run(*args, "--outdir", tmp_path / "fast", "--compile", "default", "--channels-last")
    assert eager.returncode == 0 and fast.returncode == 0, fast.stderr
    a, b = files(tmp_path / "eager"), files(tmp_path / "fast")
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".png")]) == 4
    assert a["settings.json"]["compile"] is None and b["settings.json"]["compile"] == "default"
    for name in (k for k in a if k.endswith(".png")):  # fp32 reassociation may move a pixel across a rounding boundary, no further
        diff = np.abs(np.asarray(Image.open(tmp_path / "eager" / name), np.int16)
                      - np.asarray(Image.open(tmp_path / "fast" / name), np.int16))
        assert diff.max() <= 1, (name, diff.max())


@pytest.mark.slow
def test_missing_checkpoint_names_file_and_source(tmp_path):
    r = run("--config", "cifar10", "--outdir", tmp_path / "out")
    assert r.returncode == 2 and "model-790000.ckpt" in r.stderr and "heibox.uni-heidelberg.de" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ldm_config_samples_with_guidance_and_seed_derived_classes(tmp_path):
    from conftest import FIXTURES

    out = tmp_path / "ldm"
    r = run("--config", FIXTURES / "ldm/tiny_config.yaml", "--ckpt", FIXTURES / "ldm/tiny_ldm.ckpt", "--steps", "10",
            "--scale", "3", "--cache-interval", "2", "--seeds", "998-1001", "--batch-size", "3", "--outdir", out, "--npz")
    assert r.returncode == 0, r.stderr
    npz = np.load(out / "samples_4x32x32x3.npz")
    assert npz["arr_0"].shape == (4, 32, 32, 3) and npz["arr_1"].tolist() == [998, 999, 0, 1]


FINGERPRINT = [  # (changed setting, the key the refusal names)
    (["--eta", "0.5"], "config.sampling.eta"),
    (["--skip-type", "quad"], "config.sampling.skip_type"),
    (["--cache-interval", "2"], "config.sampling.cache_interval"),
    (["--cache-branch", "0"], "config.sampling.cache_branch"),
    (["--cache-schedule", "nonuniform", "--cache-center", "1", "--cache-power", "1.2"], "config.sampling.cache_schedule"),
    (["--cache-schedule", "power", "--cache-power", "1.5"], "config.sampling.cache_schedule"),
    (["--sampler", "plms"], "config.sampling.sampler"),
    (["--steps", "4"], "config.sampling.steps"),
    (["diffusion.beta_end=0.03"], "config.diffusion.beta_end"),
    (["--precision", "bf16"], "precision"),
    (["--channels-last"], "channels_last"),
    (["--compile", "default"], "compile"),
    (["--subdirs"], "subdirs"),
    (["--ckpt", "OTHER"], "checkpoint.md5"),
]


@pytest.mark.slow
def test_a_folder_refuses_every_other_setting_and_stays_unchanged(tmp_path, t1_run, capsys):
    cfg, ckpt = t1_run
    other = tmp_path / "other.ckpt"  # the same architecture, other weights
    state = torch.load(ckpt, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, other)
    out = tmp_path / "out"
    base = ["--config", cfg, "--ckpt", ckpt, "--steps", "3", "--seeds", "0-1", "--outdir", out]
    assert sample_in_process(base, capsys)[0] == 0
    before = files(out)
    for change, key in FINGERPRINT:
        args = [other if a == "OTHER" else a for a in change]
        code, err = sample_in_process(base + args, capsys)
        assert code == 2 and f"was made with {key}=" in err, (change, err)
        assert files(out) == before
    assert sample_in_process(base + ["--seeds", "2-3", "--batch-size", "1"], capsys)[0] == 0  # same settings: continues
    assert len([k for k in files(out) if k.endswith(".png")]) == 4


def test_default_folders_differ_whenever_the_settings_do(t1_run, capsys):
    cfg, ckpt = t1_run
    if not SAMPLE:
        SAMPLE.update(runpy.run_path(str(SCRIPTS / "sample.py")))
    ranks = SAMPLE["Ranks"]()

    def outdir(*extra):
        args = SAMPLE["parse_args"](["--config", str(cfg), "--ckpt", str(ckpt), *extra])
        return SAMPLE["prepare"](args, ranks)[9]

    folders = [outdir(*change) for change, _ in FINGERPRINT if "OTHER" not in change]
    assert len(set(folders)) == len(folders) and not any(f.exists() for f in folders)
    assert outdir("--seeds", "5-9") == outdir("--batch-size", "1") == outdir()  # neither makes other images


def _settings_free(proc):
    out, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.slow
def test_a_billion_seeds_start_at_once_in_constant_memory(tmp_path, t1_run):
    cfg, ckpt = t1_run
    out = tmp_path / "out"
    proc = run("--config", cfg, "--ckpt", ckpt, "--steps", "2", "--seeds", "0-999999999", "--batch-size", "1",
               "--subdirs", "--outdir", out, wait=False)
    _wait_for_images(out / "000000", 1, proc, timeout=60)
    proc.send_signal(signal.SIGTERM)
    code, err = _settings_free(proc)
    assert code == 3 and "1,000,000,000 seeds" in err


@pytest.mark.slow
@pytest.mark.parametrize("ranges", [("0-7", "4-11"), ("0-5", "6-11")], ids=["overlapping", "disjoint"])
def test_two_processes_on_one_folder_write_the_images_of_one(tmp_path, t1_run, ranges):
    """As the array tasks of one SLURM job: started together into one folder."""
    cfg, ckpt = t1_run
    common = ["--config", cfg, "--ckpt", ckpt, "--steps", "4", "--batch-size", "2"]
    procs = [run(*common, "--seeds", r, "--outdir", tmp_path / "shared", wait=False) for r in ranges]
    results = [_settings_free(p) for p in procs]
    assert all(code == 0 for code, _ in results), results
    alone = run(*common, "--seeds", "0-11", "--outdir", tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr
    assert files(tmp_path / "shared") == files(tmp_path / "alone")
    assert not list((tmp_path / "shared").rglob("*.tmp"))


@pytest.mark.slow
def test_sigterm_to_one_of_two_gloo_ranks_stops_both_resumably(tmp_path, t1_run):
    cfg, ckpt = t1_run
    port = free_port()
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPTS / "sample.py"), "--config", str(cfg), "--ckpt", str(ckpt), "--steps", "30",
           "--seeds", "0-199", "--batch-size", "2", "--outdir", str(out)]
    procs = [subprocess.Popen(cmd, env={**ENV, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    _wait_for_images(out, 4, procs[0])
    procs[1].send_signal(signal.SIGTERM)
    results = [_settings_free(p) for p in procs]
    assert [code for code, _ in results] == [3, 3], results
    assert all("rerun the same command to resume" in err for _, err in results)
    assert len(list(out.glob("*.png"))) < 200 and not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_an_image_that_does_not_decode_is_redone(tmp_path, t1_run):
    cfg, ckpt = t1_run
    args = ["--config", cfg, "--ckpt", ckpt, "--steps", "3", "--seeds", "0-3", "--outdir", tmp_path]
    assert run(*args).returncode == 0
    good = (tmp_path / "000001.png").read_bytes()
    (tmp_path / "000001.png").write_bytes(good[: len(good) // 2])
    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "000001.png").read_bytes() == good


@pytest.mark.slow
def test_a_full_disk_is_a_short_error_and_leaves_no_partial_file(tmp_path, t1_run):
    cfg, ckpt = t1_run
    args = ["--config", cfg, "--ckpt", ckpt, "--steps", "3", "--outdir", tmp_path]
    assert run(*args, "--seeds", "0-1").returncode == 0
    before = files(tmp_path)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))  # noqa: E731
    full = run(*args, "--seeds", "2-3", preexec_fn=limit)
    assert full.returncode == 2 and "no space left to write" in full.stderr and "Traceback" not in full.stderr
    assert files(tmp_path) == before and not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_ranks_started_with_different_arguments_stop_with_an_error_not_a_hang(tmp_path, t1_run):
    cfg, ckpt = t1_run
    port = free_port()
    cmd = [sys.executable, str(SCRIPTS / "sample.py"), "--config", str(cfg), "--ckpt", str(ckpt), "--steps", "2",
           "--outdir", str(tmp_path / "out")]
    procs = [subprocess.Popen(cmd + ["--seeds", seeds], env={**ENV, "RANK": str(r), "WORLD_SIZE": "2",
                                                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r, seeds in enumerate(["0-39", "0-3"])]
    results = [_settings_free(p) for p in procs]
    assert [code for code, _ in results] == [2, 2], results
    assert all("started with different" in err and "Traceback" not in err for _, err in results)
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.slow
def test_ldm_classes_keep_their_order_and_repeats(tmp_path):
    from conftest import FIXTURES

    out = tmp_path / "ldm"
    r = run("--config", FIXTURES / "ldm/tiny_config.yaml", "--ckpt", FIXTURES / "ldm/tiny_ldm.ckpt", "--steps", "2",
            "--classes", "9,7,7", "--seeds", "0-3", "--outdir", out, "--npz")
    assert r.returncode == 0, r.stderr
    assert np.load(out / "samples_4x32x32x3.npz")["arr_1"].tolist() == [9, 7, 7, 9]
    assert json.loads((out / "settings.json").read_text())["settings"]["classes"] == [9, 7, 7]
