"""Nothing lost, nothing silently wrong: outputs never alias inputs, non-finite samples never
become images, checkpoints are byte-reproducible, values are checked instead of coerced."""

import hashlib
import runpy

import numpy as np
import pytest
import torch

from conftest import FIXTURES, SCRIPTS, tiny_ldm
from deepcache_ref import Pipeline
from deepcache_ref.core.checkpoint import check_state_dict
from deepcache_ref.errors import CheckpointError, UserError
from deepcache_ref.runs.cli import EXIT_ERROR, run
from deepcache_ref.samplers import PerImageRNG


def _main(script):
    return runpy.run_path(str(SCRIPTS / script), run_name="not_main")["main"]


def _bytes(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("argv", [
    ["{x}", "--save-stats", "{x}"],                      # the samples' statistics over the samples
    ["{x}", "{ref}", "--out", "{ref}"],                  # the result over the reference
    ["{x}", "--save-stats", "{other}"],                  # a file fid.py does not write
    ["{x}", "{ref}", "--save-stats", "{s}", "--out", "{s}"],  # two outputs in one file
])
def test_fid_never_writes_over_an_input_or_a_file_it_did_not_make(tmp_path, argv, capsys):
    x, ref, other = tmp_path / "x.npz", tmp_path / "ref.npz", tmp_path / "notes.txt"
    np.savez(x, arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    np.savez(ref, mu=np.zeros(4), sigma=np.eye(4))
    other.write_text("mine")
    before = _bytes(tmp_path)
    argv = [a.format(x=x, ref=ref, other=other, s=tmp_path / "s.npz") for a in argv]
    assert run(_main("fid.py"), argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and _bytes(tmp_path) == before, err


def test_non_finite_samples_are_an_error_and_never_an_image(tmp_path, capsys):
    model = tiny_ldm()
    s = model.config.sampling
    s.steps, s.scale = 4, 1e38  # guidance that overflows
    with pytest.raises(UserError, match=r"seed\(s\) \[0, 1\] hold NaN or infinite values .*guidance scale"):
        Pipeline(model).sample([0, 1], s, classes=[1, 2])
    out = tmp_path / "out"
    code = run(_main("sample.py"), ["--config", str(FIXTURES / "ldm/tiny_config.yaml"), "--ckpt",
                                    str(FIXTURES / "ldm/tiny_ldm.ckpt"), "--steps", "4", "--scale", "1e38",
                                    "--seeds", "0-1", "--outdir", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "NaN or infinite" in err and "Traceback" not in err
    assert not list(out.rglob("*.png"))


def test_checkpoints_are_byte_reproducible(tmp_path):
    save = runpy.run_path(str(SCRIPTS / "train.py"), run_name="not_main")["save"]
    torch.manual_seed(0)
    weights = {"w": torch.randn(3, 3), "b": torch.zeros(3)}
    save(tmp_path / "a.ckpt", weights)
    save(tmp_path / "elsewhere.ckpt", {k: v.clone() for k, v in weights.items()})
    md5 = [hashlib.md5((tmp_path / n).read_bytes()).hexdigest() for n in ("a.ckpt", "elsewhere.ckpt")]
    assert md5[0] == md5[1]
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=True)["w"], weights["w"])


def test_seeds_are_integers_never_coerced():
    assert PerImageRNG([np.int64(3), torch.tensor(3)]).randn((2, 1)).unique().numel() == 1
    for bad in (1.2, 1.7, True, "3", torch.tensor(1.5)):
        with pytest.raises(UserError, match="is not an integer"):
            PerImageRNG([bad])


def test_weights_of_a_non_float_dtype_are_refused():
    model = torch.nn.Linear(2, 2)
    state = {k: v.to(torch.int32) for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="weight holds torch.int32 values where the model has floating-point"):
        check_state_dict(model, state, "ints.safetensors")


def test_a_schedule_file_and_cache_flags_that_disagree_are_refused(tmp_path, capsys):
    import json

    sched = tmp_path / "schedule.json"
    sched.write_text(json.dumps({"sampler": "ddim", "steps": 10, "skip_type": "uniform", "eta": 0.0, "cache_branch": 1,
                                 "cache_full_steps": [0, 4, 7]}))
    common = ["--config", "digits", "--steps", "10", "--cache-file", str(sched), "--seeds", "0-1"]
    for extra, message in [(["--cache-interval", "3"], "--cache-interval would disagree"),
                           (["--cache-branch", "0"], "--cache-branch 0 (the file's is 1)"),
                           (["--outdir", " "], "--outdir is empty")]:
        out = tmp_path / "out"
        assert run(_main("sample.py"), common + extra + (["--outdir", str(out)] if "--outdir" not in extra else [])) \
            == EXIT_ERROR
        err = capsys.readouterr().err
        assert message in err and not out.exists(), err


TRAIN = ["--config", "digits", "training.batch_size=16", "training.save_every=2"]


def _train(workdir, steps, *extra):
    with torch.enable_grad():  # conftest runs tests without autograd; training needs it
        return run(_main("train.py"), [*TRAIN, *extra, "--workdir", str(workdir), "--steps", str(steps)])


def test_a_training_folder_is_one_training(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "ema.ckpt").write_bytes(b"weights someone cares about")
    assert _train(foreign, 2) == EXIT_ERROR and (foreign / "ema.ckpt").read_bytes() == b"weights someone cares about"
    assert "holds ema.ckpt but no ckpt.pth" in capsys.readouterr().err

    work = tmp_path / "work"
    assert _train(work, 2) == 0
    before = _bytes(work)
    assert _train(work, 2) == 0 and _bytes(work) == before  # a finished training: nothing rewritten
    assert _train(work, 2, "training.lr=0.001") == EXIT_ERROR and _bytes(work) == before
    assert "was trained with training.lr=0.0005, this run has training.lr=0.001" in capsys.readouterr().err

    (work / "ema.ckpt").write_bytes(before["ema.ckpt"][:100])  # a kill between ckpt.pth and ema.ckpt
    assert _train(work, 2) == 0 and _bytes(work) == before  # repaired from ckpt.pth, byte for byte


@pytest.mark.slow
def test_sigterm_saves_and_exits_resumably(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    work = tmp_path / "work"
    cmd = [sys.executable, str(SCRIPTS / "train.py"), *TRAIN[:2], "training.batch_size=16", "training.save_every=1000",
           "--workdir", str(work), "--steps", "3000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stderr.read(1)  # the progress bar: drawn once the handlers are installed and training starts
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "rerun the same command to resume" in err, err
    step = torch.load(work / "ckpt.pth", weights_only=True)[3]
    assert 0 < step < 3000 and not list(work.glob(".*.tmp"))
    assert _train(work, step + 2, "training.save_every=1000") == 0
    assert torch.load(work / "ckpt.pth", weights_only=True)[3] == step + 2


class Killed(BaseException):
    """A kill -9 at one write: what is on disk stays as it is, temporary file included."""


def _killed_at(k, monkeypatch):
    """Make the k-th rename (or link) of a finished file kill the run just before it, as SIGKILL would,
    leaving its temporary file; the run's temporary names carry a dead process's pid."""
    import os
    import subprocess

    import deepcache_ref.runs.files as files

    dead = subprocess.Popen(["true"])
    dead.wait()
    calls = []

    def kill_before(real):
        def call(src, dst):
            calls.append(dst)
            if len(calls) == k:
                raise Killed
            return real(src, dst)
        return call

    monkeypatch.setattr(files.os, "replace", kill_before(os.replace))
    monkeypatch.setattr(files.os, "link", kill_before(os.link))
    monkeypatch.setattr(files, "_unlink", lambda path: None)  # a killed process cleans nothing up
    monkeypatch.setattr(files.os, "getpid", lambda: dead.pid)
    return calls


def test_a_kill_at_every_write_of_training_then_a_rerun_gives_the_uninterrupted_files(tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    assert _train(whole, 4) == 0  # writes: train_settings.json, ckpt.pth, ema.ckpt (x2), train.json
    expected = {k: v for k, v in _bytes(whole).items() if k != "train.json"}
    writes = 6
    for k in range(1, writes + 1):
        work = tmp_path / f"killed_at_{k}"
        with monkeypatch.context() as m:
            calls = _killed_at(k, m)
            with pytest.raises(Killed):
                _train(work, 4)
        assert len(calls) == k
        assert _train(work, 4) == 0, k
        files = _bytes(work)
        assert {k: v for k, v in files.items() if k != "train.json"} == expected, f"killed at write {k}"
        assert "train.json" in files
