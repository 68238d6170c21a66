"""Bad inputs and faults, one table: every script answers with exit status 2, one message on stderr
that names the culprit, no traceback, and an output folder left exactly as it was; the library
raises ValueError naming the bad value.

The scripts run in-process through their real entry point (`deepcache_ref.runs.cli.run(main, argv)`), a few
as real subprocesses to prove the process's exit status. Special files (corrupt checkpoints, npz
files, folders) are made by the small builders below, named from the table.
"""

import dataclasses
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deepcache_ref.runs.cli
import deepcache_ref.runs.distributed
from conftest import FIXTURES, REPO, SCRIPTS, Exploit, tiny_ddpm, tiny_ldm

KEEP = b"keep me: bytes the failed run must not touch\n"
T1_STATE = FIXTURES / "ddpm/tiny/T1_state_dict.pt"
LDM_CFG, LDM_CKPT = FIXTURES / "ldm/tiny_config.yaml", FIXTURES / "ldm/tiny_ldm.ckpt"
DIGITS_EMA = REPO / "deepcache_ref/checkpoints/digits/ema.ckpt"  # weights of another architecture than T1's

# What every invocation of a script starts with; a case's own arguments come after and win (argparse
# keeps the last value of a repeated option). {out} is the output folder whose bytes must not change.
BASE = {
    "sample": ["--config", "{cfg}", "--ckpt", "{ckpt}", "--steps", "2", "--seeds", "0-1", "--device", "cpu",
               "--outdir", "{out}"],
    "fid": ["--inception-weights", "{weights}", "--dims", "64", "--batch-size", "4", "--device", "cpu",
            "--out", "{out}/fid.json"],
    "train": ["--config", "digits", "--workdir", "{out}", "--steps", "2"],
    "benchmark": ["--config", "{cfg}", "--ckpt", "{ckpt}", "--batch-size", "1", "--steps", "2", "--intervals", "2",
                  "--repeats", "1", "--warmup", "0", "--no-overhead", "--device", "cpu", "--out", "{out}/bench"],
}
DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS",
             "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")


# ---- builders: each makes its files under ctx["tmp"] and returns placeholders for the table ------

def zero_ckpt(ctx):
    (p := ctx["tmp"] / "zero.ckpt").write_bytes(b"")
    return {"bad": p}


def truncated_ckpt(ctx):
    data = T1_STATE.read_bytes()
    (p := ctx["tmp"] / "half.ckpt").write_bytes(data[: len(data) // 2])
    return {"bad": p}


def text_ckpt(ctx):
    (p := ctx["tmp"] / "notes.ckpt").write_text("these are not weights\n")
    return {"bad": p}


def exploit_ckpt(ctx):
    marker = ctx["tmp"] / "pwned"
    torch.save(Exploit(marker), p := ctx["tmp"] / "evil.ckpt")
    return {"bad": p, "marker": marker}


def int_ckpt(ctx):
    torch.save(42, p := ctx["tmp"] / "int.ckpt")
    return {"bad": p}


def dir_ckpt(ctx):
    (p := ctx["tmp"] / "ckpt_dir").mkdir()
    return {"bad": p}


def nan_ckpt(ctx):
    state = torch.load(T1_STATE, map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, p := ctx["tmp"] / "nan.ckpt")
    return {"bad": p, "key": key}


def not_yaml(ctx):
    (p := ctx["tmp"] / "broken.yaml").write_text("model: {ch: [1, 2\nsampling: : :\n\t- ]]\n")
    return {"bad": p}


def list_yaml(ctx):
    (p := ctx["tmp"] / "list.yaml").write_text("[]\n")
    return {"bad": p}


def scalar_yaml(ctx):
    (p := ctx["tmp"] / "scalar.yaml").write_text("hello\n")
    return {"bad": p}


def top_key_yaml(ctx):
    (p := ctx["tmp"] / "topkey.yaml").write_text("foo: 1\n")
    return {"bad": p}


def out_is_file(ctx):
    (p := ctx["tmp"] / "out.txt").write_bytes(KEEP)
    return {"out": p}


def out_under_file(ctx):
    (f := ctx["tmp"] / "plain.txt").write_bytes(KEEP)
    return {"out": f / "sub"}


def out_in_proc(ctx):
    return {"out": Path("/proc/sys/deepcache_test")}


def corrupt_settings(ctx):
    (ctx["out"] / "settings.json").write_bytes(b"\x00{garbage: not json")
    return {}


def png_without_settings(ctx):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(ctx["out"] / "000000.png")
    return {}


def png_in_subfolder_without_settings(ctx):
    (ctx["out"] / "000000").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(ctx["out"] / "000000" / "000000.png")
    return {}


def corrupt_train_ckpt(ctx):
    (ctx["out"] / "ckpt.pth").write_bytes(b"PK\x03\x04 half a zip file")
    return {}


def images_dir(ctx, name="good", sizes=((32, 32),) * 3):
    (d := ctx["tmp"] / name).mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / f"{i:06d}.png")
    return d


def good_samples(ctx):
    return {"samples": images_dir(ctx)}


def float_npz(ctx):
    np.savez(p := ctx["tmp"] / "float.npz", arr_0=np.random.default_rng(0).random((3, 32, 32, 3), np.float32))
    return {"bad": p}


def ndim_npz(ctx):
    np.savez(p := ctx["tmp"] / "gray.npz", arr_0=np.zeros((3, 32, 32), np.uint8))
    return {"bad": p}


def no_arr0_npz(ctx):
    np.savez(p := ctx["tmp"] / "images.npz", images=np.zeros((3, 32, 32, 3), np.uint8))
    return {"bad": p}


def small_stats(ctx):
    np.savez(p := ctx["tmp"] / "stats10.npz", mu=np.zeros(10), sigma=np.eye(10))
    return {"bad": p}


def npy_named_npz(ctx):
    with open(p := ctx["tmp"] / "plain.npz", "wb") as f:
        np.save(f, np.zeros((2, 8, 8, 3), np.uint8))
    return {"bad": p}


def garbage_npz(ctx):
    (p := ctx["tmp"] / "junk.npz").write_bytes(b"not a zip archive at all")
    return {"bad": p}


def empty_dir(ctx):
    (p := ctx["tmp"] / "empty").mkdir()
    return {"bad": p}


def garbage_png_dir(ctx):
    d = images_dir(ctx, "garbled")
    (d / "000009.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    return {"bad": d, "culprit": d / "000009.png"}


def mixed_sizes_dir(ctx):
    d = images_dir(ctx, "mixed", sizes=((32, 32), (32, 32), (48, 40)))
    return {"bad": d, "culprit": d / "000002.png"}


def missing_data(ctx):
    return {"bad": ctx["tmp"] / "nowhere" / "digits.npz"}


def one_image_dir(ctx):
    return {"bad": images_dir(ctx, "single", sizes=((32, 32),))}


def object_npz(ctx):
    np.savez(p := ctx["tmp"] / "objects.npz", arr_0=np.array([{"an": "object"}, None], dtype=object))
    return {"bad": p}


def wrong_shape_data(ctx):
    np.savez(p := ctx["tmp"] / "big.npz", images=np.zeros((4, 16, 16), np.uint8))
    return {"bad": p}


def single_image_data(ctx):
    np.savez(p := ctx["tmp"] / "one.npz", images=np.zeros((1, 8, 8), np.uint8))
    return {"bad": p}


def foreign_train_ckpt(ctx):
    torch.save([{"conv_in.weight": torch.zeros(1)}, {}, 0, 0], ctx["out"] / "ckpt.pth")
    return {}


def stats_and_out_dir(ctx):
    np.savez(p := ctx["tmp"] / "stats64.npz", mu=np.zeros(64), sigma=np.eye(64))
    (ctx["out"] / "stats_dir").mkdir()
    return {"stats": p}


def samples_and_plain_file(ctx):
    return {**good_samples(ctx), **out_under_file(ctx)}


def stats_and_plain_file(ctx):
    return {**stats_and_out_dir(ctx), **out_under_file(ctx)}


def free_port(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return {"port": s.getsockname()[1]}


# ---- the table -------------------------------------------------------------------------------------

def case(id, script, args, expect, env=None, build=None, marks=()):
    return pytest.param(script, args, expect, env or {}, build, id=f"{script}:{id}", marks=marks)


LDM = ["--config", str(LDM_CFG), "--ckpt", str(LDM_CKPT)]
NO_SCONTROL = pytest.mark.skipif(shutil.which("scontrol") is not None, reason="checks the message without SLURM")
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
FEW_GPUS = pytest.mark.skipif(torch.cuda.device_count() > 7, reason="needs a machine without a CUDA device 7")

CASES = [
    # sample.py: numbers
    case("batch-size-0", "sample", ["--batch-size", "0"], "--batch-size"),
    case("batch-size-negative", "sample", ["--batch-size", "-1"], "--batch-size"),
    case("batch-size-abc", "sample", ["--batch-size", "abc"], "'abc'"),
    case("eta-nan", "sample", ["--eta", "nan"], "sampling.eta must be a finite number"),
    case("eta-negative", "sample", ["--eta", "-1"], "sampling.eta must be in [0, 1]"),
    case("eta-2", "sample", ["--eta", "2"], "sampling.eta must be in [0, 1]"),
    case("plms-with-eta", "sample", ["--sampler", "plms", "--eta", "0.5"], "plms needs sampling.eta=0"),
    case("ddpm-with-eta", "sample", ["--sampler", "ddpm", "--eta", "0.5"], "ddpm needs sampling.eta=0"),
    case("sampler-unknown", "sample", ["--sampler", "euler"], "--sampler"),
    case("skip-type-unknown", "sample", ["--skip-type", "cubic"], "--skip-type"),
    case("precision-fp8", "sample", ["--precision", "fp8"], "--precision"),
    case("steps-0", "sample", ["--steps", "0"], "sampler steps must be in 1..1000, got 0"),
    case("steps-5000", "sample", ["--steps", "5000"], "sampler steps must be in 1..1000, got 5000"),
    # sample.py: DeepCache settings
    case("cache-power-nan", "sample", ["--cache-schedule", "power", "--cache-power", "nan"], "sampling.cache_power"),
    case("cache-nonuniform-no-center", "sample", ["--cache-schedule", "nonuniform", "--cache-power", "1.5"],
         "center"),
    case("cache-center-abc", "sample", ["--cache-center", "abc"], "--cache-center"),
    case("cache-interval-0", "sample", ["--cache-interval", "0"], "cache interval must be an integer >= 1, got 0"),
    case("cache-branch-99", "sample", ["--cache-branch", "99"], "cache branch 99 is out of range"),
    case("cache-power-0.001", "sample", ["--steps", "100", "--cache-schedule", "power", "--cache-power", "0.001"],
         "cache power 0.001"),
    case("cache-nonuniform-power-0.001", "sample",
         ["--steps", "100", "--cache-schedule", "nonuniform", "--cache-power", "0.001", "--cache-center", "1"],
         "cache power 0.001"),
    case("cache-center-outside", "sample",
         ["--cache-schedule", "nonuniform", "--cache-power", "1.5", "--cache-center", "7"], "cache center 7"),
    # sample.py: seeds and classes
    case("seeds-2^63", "sample", ["--seeds", "9223372036854775808"], "seed 9223372036854775808 is out of range"),
    case("seeds-reversed", "sample", ["--seeds", "5-1"], "'5-1'"),
    case("seeds-empty", "sample", ["--seeds", ""], "malformed seed range ''"),
    case("seeds-1-x", "sample", ["--seeds", "1-x"], "'1-x'"),
    case("classes-on-ddpm", "sample", ["--classes", "1,2"], "--classes applies to class-conditional models only"),
    case("classes-out-of-range", "sample", [*LDM, "--classes", "5000"], "--classes: class 5000 is out of range"),
    case("scale-nan-ldm", "sample", [*LDM, "--scale", "nan"], "sampling.scale"),
    case("scale-on-ddpm", "sample", ["--scale", "2"], "sampling.scale"),
    # sample.py: configs
    case("unknown-key", "sample", ["sampling.etaa=0.5"], "sampling.etaa"),
    case("override-without-equals", "sample", ["sampling.eta"], "expected key=value, got 'sampling.eta'"),
    case("override-bad-type", "sample", ["sampling.steps=many"], "sampling.steps"),
    case("ch-mult-empty", "sample", ["model.ch_mult=[]"], "model.ch_mult"),
    case("dropout-2", "sample", ["model.dropout=2"], "dropout"),
    case("ldm-timesteps-0", "sample", [*LDM, "model.params.timesteps=0"], "timesteps"),
    case("ldm-model-channels-0", "sample", [*LDM, "model.params.unet_config.params.model_channels=0"],
         "model_channels"),
    case("ldm-linear-end-5", "sample", [*LDM, "model.params.linear_end=5"], "linear_end"),
    case("unknown-config", "sample", ["--config", "cifar100"], "config 'cifar100' not found"),
    case("config-not-yaml", "sample", ["--config", "{bad}"], "{bad}", build=not_yaml),
    case("config-empty-list", "sample", ["--config", "{bad}"], "{bad}", build=list_yaml),
    case("config-scalar", "sample", ["--config", "{bad}"], "{bad}", build=scalar_yaml),
    case("config-unknown-top-key", "sample", ["--config", "{bad}"], "{bad}: unknown config key 'foo'",
         build=top_key_yaml),
    # sample.py: checkpoints
    case("ckpt-missing", "sample", ["--ckpt", "{tmp}/absent.ckpt"], "checkpoint not found: {tmp}/absent.ckpt"),
    case("ckpt-0-bytes", "sample", ["--ckpt", "{bad}"], "{bad} is empty (0 bytes)", build=zero_ckpt),
    case("ckpt-truncated", "sample", ["--ckpt", "{bad}"], "{bad} is not a readable PyTorch checkpoint",
         build=truncated_ckpt),
    case("ckpt-text", "sample", ["--ckpt", "{bad}"], "{bad} is not a readable PyTorch checkpoint", build=text_ckpt),
    case("ckpt-malicious-pickle", "sample", ["--ckpt", "{bad}"], "refused to load {bad}", build=exploit_ckpt),
    case("ckpt-holds-an-int", "sample", ["--ckpt", "{bad}"], "{bad} holds a int", build=int_ckpt),
    case("ckpt-other-architecture", "sample", ["--ckpt", str(DIGITS_EMA)], f"{DIGITS_EMA} does not fit the model"),
    case("ckpt-directory", "sample", ["--ckpt", "{bad}"], "checkpoint {bad} is a directory", build=dir_ckpt),
    case("ckpt-nan-weights", "sample", ["--ckpt", "{bad}"], "{bad} is corrupt: {key} holds NaN", build=nan_ckpt),
    # sample.py: devices and fast paths
    case("device-cuda", "sample", ["--device", "cuda"], "device 'cuda'", marks=NO_GPU),
    case("device-meta", "sample", ["--device", "meta"], "device 'meta'"),
    case("device-tpu", "sample", ["--device", "tpu"], "device 'tpu'"),
    case("device-cuda-7", "sample", ["--device", "cuda:7"], "device 'cuda:7'", marks=FEW_GPUS),
    case("cuda-graph-on-cpu", "sample", ["--cuda-graph"], "CUDA graphs need a CUDA device, not cpu"),
    case("compile-reduce-overhead-with-graph", "sample", ["--compile", "reduce-overhead", "--cuda-graph"],
         "compile mode 'reduce-overhead'"),
    # sample.py: output folders
    case("outdir-is-file", "sample", [], "output folder {out} is a file", build=out_is_file),
    case("outdir-under-file", "sample", [], "cannot create output folder {out}", build=out_under_file),
    case("outdir-proc-sys", "sample", [], "/proc/sys", build=out_in_proc),
    case("outdir-corrupt-settings", "sample", [], "{out}/settings.json is unreadable", build=corrupt_settings),
    case("outdir-png-without-settings", "sample", [], "holds images but no settings.json", build=png_without_settings),
    case("outdir-subfolder-png-without-settings", "sample", ["--subdirs"], "holds images but no settings.json",
         build=png_in_subfolder_without_settings),
    case("cache-branch-99-uncached", "sample", ["--cache-interval", "1", "--cache-branch", "99"],
         "cache branch 99 is out of range"),
    case("outdir-new-but-bad-ckpt", "sample", ["--outdir", "{new}", "--ckpt", "{bad}"], "{bad}", build=nan_ckpt),
    # sample.py: process layout
    case("world-size-without-rank", "sample", [], "RANK is not set", env={"WORLD_SIZE": "2"}),
    case("rank-without-world-size", "sample", [], "WORLD_SIZE is not set", env={"RANK": "0"}),
    case("world-size-abc", "sample", [], "WORLD_SIZE='abc'", env={"WORLD_SIZE": "abc", "RANK": "0"}),
    case("rank-5-of-2", "sample", [], "RANK=5, WORLD_SIZE=2", env={"WORLD_SIZE": "2", "RANK": "5"}),
    case("no-master-addr", "sample", [], "MASTER_ADDR is not set", env={"WORLD_SIZE": "2", "RANK": "0"}),
    case("local-rank-abc", "sample", [], "LOCAL_RANK='abc'", env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "abc"}),
    case("world-size-0", "sample", [], "WORLD_SIZE=0", env={"WORLD_SIZE": "0", "RANK": "0"}),
    case("slurm-ntasks-abc", "sample", [], "SLURM_NTASKS", env={"SLURM_PROCID": "0", "SLURM_NTASKS": "abc"}),
    case("slurm-without-scontrol", "sample", [], "scontrol", marks=NO_SCONTROL,
         env={"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "node[1-2]"}),
    case("rendezvous-timeout", "sample", [], "127.0.0.1:{port}", build=free_port,
         env={"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "{port}"}),
    # fid.py
    case("samples-missing", "fid", ["{tmp}/nope", "{tmp}/nope2"], "{tmp}/nope does not exist"),
    case("reference-missing", "fid", ["{samples}", "{tmp}/ref.npz"], "{tmp}/ref.npz does not exist",
         build=good_samples),
    case("float-npz", "fid", ["{bad}", "{bad}"], "{bad}: arr_0 is float32", build=float_npz),
    case("npz-3-dims", "fid", ["{bad}", "{bad}"], "{bad}: arr_0 is uint8 [3, 32, 32]", build=ndim_npz),
    case("npz-without-arr_0", "fid", ["{bad}", "{bad}"], "{bad} has no arr_0", build=no_arr0_npz),
    case("npz-garbage", "fid", ["{bad}", "{bad}"], "{bad} is not a readable npz", build=garbage_npz),
    case("npy-named-npz", "fid", ["{bad}", "{bad}"], "{bad} is a single array", build=npy_named_npz),
    case("stats-wrong-dims", "fid", ["{bad}", "{bad}"], "{bad}: statistics of shape mu [10]", build=small_stats),
    case("batch-size-0", "fid", ["{tmp}", "{tmp}", "--batch-size", "0"], "--batch-size"),
    case("dims-100", "fid", ["{tmp}", "{tmp}", "--dims", "100"], "--dims"),
    case("inception-weights-missing", "fid", ["{samples}", "{samples}", "--inception-weights", "{tmp}/inc.pth"],
         "Inception weights not found: {tmp}/inc.pth", build=good_samples),
    case("inception-weights-not-weights", "fid", ["{samples}", "{samples}", "--inception-weights", str(T1_STATE)],
         f"{T1_STATE} is not pytorch-fid's Inception weights", build=good_samples),
    case("folder-without-images", "fid", ["{bad}", "{bad}"], "no images in {bad}", build=empty_dir),
    case("unreadable-png", "fid", ["{bad}", "{bad}"], "{culprit} is not a readable image", build=garbage_png_dir),
    case("images-of-different-sizes", "fid", ["{bad}", "{bad}"], "{culprit} is 40x48", build=mixed_sizes_dir),
    case("a-single-image", "fid", ["{bad}", "{bad}"], "{bad}", build=one_image_dir),
    case("npz-of-objects", "fid", ["{bad}", "{bad}"], "{bad}", build=object_npz),
    case("device-tpu", "fid", ["{tmp}", "{tmp}", "--device", "tpu"], "device 'tpu'"),
    case("out-under-file", "fid", ["{stats}", "{stats}", "--out", "{tmp}/plain.txt/fid.json"],
         "{tmp}/plain.txt is a file", build=stats_and_plain_file),
    case("save-stats-is-a-folder", "fid", ["{stats}", "--save-stats", "{out}/stats_dir"], "{out}/stats_dir",
         build=stats_and_out_dir),
    case("no-reference-no-save-stats", "fid", ["{samples}"], "give a reference, or --save-stats", build=good_samples),
    case("save-stats-under-file", "fid", ["{samples}", "--save-stats", "{tmp}/plain.txt/stats.npz"],
         "{tmp}/plain.txt is a file", build=samples_and_plain_file),
    # train.py
    case("ldm-config", "train", ["--config", "cin256-v2"], "train.py trains DDPM configs; cin256-v2 is an ldm config"),
    case("batch-size-0", "train", ["training.batch_size=0"], "training.batch_size=0"),
    case("lr-nan", "train", ["training.lr=nan"], "training.lr=nan"),
    case("ema-rate-1", "train", ["training.ema_rate=1"], "training.ema_rate=1"),
    case("data-missing", "train", ["training.data={bad}"], "no data file {bad}", build=missing_data),
    case("data-garbage", "train", ["training.data={bad}"], "training.data: {bad}", build=garbage_npz),
    case("data-without-images", "train", ["training.data={bad}"], "training.data: {bad}", build=no_arr0_npz),
    case("data-wrong-shape", "train", ["training.data={bad}"], "holds images [4, 16, 16, 1]", build=wrong_shape_data),
    case("data-one-image", "train", ["training.data={bad}"], "N >= 2", build=single_image_data),
    case("save-every-0", "train", ["training.save_every=0"], "training.save_every=0"),
    case("workdir-proc-sys", "train", [], "/proc/sys", build=out_in_proc),
    case("foreign-ckpt-in-workdir", "train", [], "{out}/ckpt.pth is not a checkpoint of this script",
         build=foreign_train_ckpt),
    case("workdir-is-file", "train", [], "output folder {out} is a file", build=out_is_file),
    case("corrupt-ckpt-in-workdir", "train", [], "{out}/ckpt.pth is not a readable PyTorch checkpoint",
         build=corrupt_train_ckpt),
    case("steps-0", "train", ["--steps", "0"], "--steps"),
    case("unknown-key", "train", ["training.epochs=3"], "training.epochs"),
    # benchmark.py
    case("intervals-abc", "benchmark", ["--intervals", "abc"], "--intervals"),
    case("branches-99", "benchmark", ["--branches", "99"], "cache branch 99 is out of range"),
    case("random-init-and-ckpt", "benchmark", ["--random-init"], "--random-init or --ckpt"),
    case("variant-fp8", "benchmark", ["--variants", "eager:fp8"], "'eager:fp8'"),
    case("batch-size-0", "benchmark", ["--batch-size", "0"], "--batch-size"),
    case("graph-on-cpu", "benchmark", ["--variants", "eager:fp32:graph"], "CUDA graphs need a CUDA device"),
    case("ddim-steps-5000", "benchmark", ["--ddim-steps", "5000"], "got 5000"),
    case("ckpt-missing", "benchmark", ["--ckpt", "{tmp}/absent.ckpt"], "checkpoint not found: {tmp}/absent.ckpt"),
    case("ckpt-truncated", "benchmark", ["--ckpt", "{bad}"], "{bad} is not a readable PyTorch checkpoint",
         build=truncated_ckpt),
    case("warmup-100", "benchmark", ["--warmup", "100"], "--warmup"),
    case("steps-0", "benchmark", ["--steps", "0"], "--steps"),
    case("unknown-key", "benchmark", ["sampling.etaa=1"], "sampling.etaa"),
    case("out-under-file", "benchmark", ["--out", "{out}/bench"], "plain.txt is a file", build=out_under_file),
]


# ---- running the scripts ---------------------------------------------------------------------------

SCRIPT_NS = {}  # script name -> its module globals, loaded once


def script_main(script):
    if script not in SCRIPT_NS:
        SCRIPT_NS[script] = runpy.run_path(str(SCRIPTS / f"{script}.py"))
    return SCRIPT_NS[script]["main"]


def invoke(script, argv, capsys):
    """(exit status, stderr) of `scripts/<script>.py argv`, run in-process through `deepcache_ref.runs.cli.run`;
    an exception escaping it is what a user would see as a traceback (status 1)."""
    main = script_main(script)
    capsys.readouterr()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        code = deepcache_ref.runs.cli.run(main, argv)
    except SystemExit as e:
        code = e.code
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return code, capsys.readouterr().err


def snapshot(path):
    """Names and bytes of everything at `path` (a folder, a file, or None if absent)."""
    path = Path(path)
    if path.is_file():
        return path.read_bytes()
    if not path.is_dir():
        return None
    return {p.relative_to(path).as_posix(): (p.read_bytes() if p.is_file() else "<dir>")
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """Random weights with the keys pytorch-fid's Inception expects (what matters is that they load)."""
    import torchvision

    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.save(torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                               init_weights=False).state_dict(), path)
    return path


@pytest.fixture
def ctx(tmp_path, t1_run, monkeypatch, request):
    """Placeholders of the table: {tmp}, {cfg}, {ckpt}, {out} (a folder holding keep.txt), {new} (a folder
    that does not exist), {weights}; builders add their own."""
    for var in DIST_VARS:
        monkeypatch.delenv(var, raising=False)
    cfg, ckpt = t1_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_bytes(KEEP)
    c = {"tmp": tmp_path, "cfg": cfg, "ckpt": ckpt, "out": out, "new": tmp_path / "new"}
    if request.node.callspec.params.get("script") == "fid":
        c["weights"] = request.getfixturevalue("inception_weights")
    return c


def fill(text, ctx):
    return str(text).format(**ctx)


@pytest.mark.parametrize("script, args, expect, env, build", CASES)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(script, args, expect, env, build, ctx, monkeypatch,
                                                          capsys):
    if build is not None:
        ctx.update(build(ctx))
    for key, value in env.items():
        monkeypatch.setenv(key, fill(value, ctx))
    monkeypatch.setattr(deepcache_ref.runs.distributed, "RENDEZVOUS_TIMEOUT", 3.0)  # a missing peer: an error, not a hang
    argv = [fill(a, ctx) for a in BASE[script] + args]
    watched = [ctx["tmp"], ctx["out"], ctx["new"]]
    before = [snapshot(p) for p in watched]

    start = time.perf_counter()
    code, err = invoke(script, argv, capsys)
    seconds = time.perf_counter() - start

    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert fill(expect, ctx) in err[err.index("error: "):], err
    assert [snapshot(p) for p in watched] == before, "the failed run changed its output folder"
    assert not ctx["new"].exists()
    if "marker" in ctx:
        assert not ctx["marker"].exists(), "the malicious pickle ran its code"
    assert seconds < 60, f"took {seconds:.0f} s to fail"


# ---- the same, as real processes: the exit status the shell sees ------------------------------------

PROCESS_CASES = [
    pytest.param(["--batch-size", "-1"], "--batch-size", None, {}, id="batch-size-negative"),
    pytest.param(["--eta", "nan"], "sampling.eta must be a finite number", None, {}, id="eta-nan"),
    pytest.param(["--ckpt", "{bad}"], "{bad} is empty (0 bytes)", zero_ckpt, {}, id="ckpt-0-bytes"),
    pytest.param([], "DEEPCACHE_RENDEZVOUS_TIMEOUT", None, {"DEEPCACHE_RENDEZVOUS_TIMEOUT": "abc"},
                 id="rendezvous-timeout-abc"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, expect, build, extra_env", PROCESS_CASES)
def test_bad_input_exits_2_as_a_process(args, expect, build, extra_env, ctx):
    if build is not None:
        ctx.update(build(ctx))
    ctx["out"] = ctx["new"]  # a folder that does not exist yet, and must not afterwards
    argv = [fill(a, ctx) for a in BASE["sample"] + args]
    before = snapshot(ctx["tmp"])
    env = {**{k: v for k, v in os.environ.items() if k not in DIST_VARS}, **extra_env}
    r = subprocess.run([sys.executable, str(SCRIPTS / "sample.py"), *argv], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert fill(expect, ctx) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not ctx["new"].exists() and snapshot(ctx["tmp"]) == before


# ---- the library -------------------------------------------------------------------------------------

def _t1():
    return tiny_ddpm("T1")[0]


def _digits():
    import deepcache_ref as P

    cfg = P.load_config("digits")
    return cfg, P.build_model(cfg, "meta")


def lib_ddim_no_timesteps():
    from deepcache_ref import samplers

    samplers.ddim_sample(_t1(), torch.zeros(1, 3, 16, 16), [], torch.linspace(0.99, 0.01, 1000))


def lib_ddim_eta_nan():
    from deepcache_ref import samplers

    samplers.ddim_sample(_t1(), torch.zeros(1, 3, 16, 16), [0, 500], torch.linspace(0.99, 0.01, 1000),
                         eta=float("nan"))


def lib_ddim_timesteps_out_of_range():
    from deepcache_ref import samplers

    samplers.ddim_sample(_t1(), torch.zeros(1, 3, 16, 16), [0, 1000], torch.linspace(0.99, 0.01, 1000))


def lib_rng_2_63():
    from deepcache_ref import samplers

    samplers.PerImageRNG([2 ** 63])


def lib_rng_negative():
    from deepcache_ref import samplers

    samplers.PerImageRNG([0, -1])


def lib_guidance_nan():
    from deepcache_ref import samplers

    samplers.ClassifierFreeGuidance(_t1(), float("nan"), torch.zeros(1, 1, 4))


def lib_guidance_label_count():
    from deepcache_ref import samplers

    unet = _t1()
    guided = samplers.ClassifierFreeGuidance(unet, 2.0, torch.zeros(1, 1, 4))
    guided(torch.zeros(4, 3, 16, 16), torch.zeros(4, dtype=torch.long), context=torch.zeros(2, 1, 4))


def lib_power_nan():
    from deepcache_ref import samplers

    samplers.CacheSchedule(2, 0, "power", power=float("nan"))


def lib_timesteps_0():
    from deepcache_ref import samplers

    samplers.make_timesteps(0)


def lib_seed_range_reversed():
    import deepcache_ref as P

    P.SeedRanges.parse("1-0")


def lib_check_sampling_batch_0():
    import deepcache_ref as P

    cfg, meta = _digits()
    P.check_sampling(meta, dataclasses.replace(cfg.sampling, batch_size=0))


def lib_ldm_label_5000():
    tiny_ldm().denoiser(labels=[5000])


def lib_ddpm_labels():
    _digits()[1].denoiser(labels=[1])


def lib_ddpm_scale():
    _digits()[1].denoiser(scale=2.0)


def lib_pipeline_graph_on_cpu():
    import deepcache_ref as P

    cfg, _ = _digits()
    P.Pipeline(P.build_model(cfg), "cpu", P.FastPath(cuda_graph=True))


LIBRARY_CASES = [
    pytest.param(lib_ddim_no_timesteps, "no timesteps", id="ddim_sample-timesteps-empty"),
    pytest.param(lib_ddim_eta_nan, "eta must be a number in \\[0, 1\\].*nan", id="ddim_sample-eta-nan"),
    pytest.param(lib_ddim_timesteps_out_of_range, "timesteps must lie in 0..999", id="ddim_sample-timestep-1000"),
    pytest.param(lib_rng_2_63, "seed 9223372036854775808 is out of range", id="PerImageRNG-2^63"),
    pytest.param(lib_rng_negative, "seed -1 is out of range", id="PerImageRNG-negative"),
    pytest.param(lib_guidance_nan, "guidance scale must be a finite number, got nan", id="ClassifierFreeGuidance-nan"),
    pytest.param(lib_guidance_label_count, "2 conditioning rows for a batch of 4", id="ClassifierFreeGuidance-labels"),
    pytest.param(lib_power_nan, "power cache schedule needs a finite power > 0, got nan", id="CacheSchedule-power-nan"),
    pytest.param(lib_timesteps_0, "sampler steps must be in 1..1000, got 0", id="make_timesteps-0"),
    pytest.param(lib_seed_range_reversed, "'1-0'", id="SeedRanges-1-0"),
    pytest.param(lib_check_sampling_batch_0, "batch size must be an integer >= 1, got 0", id="check_sampling-batch-0"),
    pytest.param(lib_ldm_label_5000, "class labels must be in 0..", id="ldm-denoiser-label-5000"),
    pytest.param(lib_ddpm_labels, "unconditional: it takes no class labels", id="ddpm-denoiser-labels"),
    pytest.param(lib_ddpm_scale, "unconditional: no guidance scale", id="ddpm-denoiser-scale"),
    pytest.param(lib_pipeline_graph_on_cpu, "CUDA graphs need a CUDA device", id="Pipeline-graph-on-cpu"),
]


@pytest.mark.parametrize("call, match", LIBRARY_CASES)
def test_library_raises_value_error_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
