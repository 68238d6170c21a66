"""Bad inputs and faults, one table: every script answers with exit status 2, one message on stderr
that names the culprit, no traceback, and an output folder left exactly as it was; the library
raises ValueError naming the bad value.

The scripts run in-process through their real entry point (`deepcache_ref.runs.cli.run(main, argv)`), a few
as real subprocesses to prove the process's exit status. Special files (corrupt checkpoints, npz
files, folders) are made by the small builders below, named from the table.
"""

import dataclasses
import io
import json
import os
import runpy
import shutil
import signal
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
from conftest import FIXTURES, REPO, SCRIPTS, Exploit, free_port, tiny_ddpm, tiny_ldm
from local_server import local_server

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
    "plan": ["--config", "{cfg}", "--ckpt", "{ckpt}", "--speedup", "2", "--ddim-steps", "2", "--plms-steps", "2",
             "--dpm-steps", "2", "--dpm-cache-steps", "2", "--intervals", "2", "--branches", "0", "--calib-seeds",
             "0-1", "--held-out-seeds", "10-11", "--reference-steps", "4", "--repeats", "1", "--device", "cpu",
             "--out", "{out}/plan"],
    "reproduce": ["--outdir", "{out}"],
    "check_fast_paths": ["--config", "{cfg}", "--device", "cpu", "--variants", "eager:fp32", "--batch-size", "1",
                         "--out", "{out}/fast.json"],
    "download": ["--root", "{out}", "--timeout", "1"],
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


def unused_port(ctx):
    return {"port": free_port()}


def written(files, where="out", key=None):
    """A builder that writes `files` ({name: bytes or text}) under {where}; with `key`, the one file's path
    becomes that placeholder (e.g. {bad})."""
    def build(ctx):
        for name, data in files.items():
            (p := ctx[where] / name).parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return {key: p} if key else {}
    return build


def foreign_files(*names):
    """Files of the user's own (notes, results of another tool) where a script would write."""
    return written(dict.fromkeys(names, KEEP))


def out_folder(name):
    def build(ctx):
        (ctx["out"] / name).mkdir(parents=True)
        return {}
    return build


def ckpt_named(name):
    """The run's checkpoint, under a name an output would take."""
    def build(ctx):
        (p := ctx["out"] / name).write_bytes(Path(ctx["ckpt"]).read_bytes())
        return {"ckpt": p}
    return build


def config_named(name):
    def build(ctx):
        (p := ctx["out"] / name).write_bytes(Path(ctx["cfg"]).read_bytes())
        return {"cfg": p}
    return build


SCHEDULE = {"sampler": "ddim", "steps": 2, "skip_type": "uniform", "eta": 0.0, "cache_branch": 0,
            "cache_full_steps": [0], "calibration": {}}


def schedule_file(text=None, **changes):
    """A --cache-file for the base run (ddim, 2 steps): valid, with `changes` (None: key removed), or `text`."""
    def build(ctx):
        data = {k: v for k, v in {**SCHEDULE, **changes}.items() if v is not None}
        (p := ctx["tmp"] / "schedule.json").write_text(text if text is not None else json.dumps(data))
        return {"bad": p}
    return build


def settings_file(text):
    return written({"settings.json": text})


def save_npz(ctx, name, **arrays):
    np.savez(p := ctx["tmp"] / name, **arrays)
    return p


def trained_without_record(ctx):
    """A finished training folder whose settings record was deleted."""
    with torch.enable_grad():
        assert script_main("train")([fill(a, ctx) for a in BASE["train"]]) == 0
    (ctx["out"] / "train_settings.json").unlink()
    return {}


def other_run_settings(ctx):
    """The folder of a finished run with other settings (2 sampler steps, here 3)."""
    argv = [fill(a, ctx) for a in BASE["sample"] + ["--seeds", "0", "--steps", "3"]]
    assert script_main("sample")(argv) == 0
    return {}


def npz_stats(ctx):
    np.savez(p := ctx["tmp"] / "stats64.npz", mu=np.zeros(64), sigma=np.eye(64))
    return {"stats": p}


def real_images_npz(ctx):
    np.savez(p := ctx["tmp"] / "real.npz", images=np.zeros((4, 16, 16, 3), np.uint8))
    return {"real": p}


def empty_folder_named_like_a_config(ctx):
    (p := ctx["tmp"] / "cifar10").mkdir()
    return {"bad": p}


def diffusers_folder_without_scheduler(ctx):
    (p := ctx["tmp"] / "unet_folder").mkdir()
    (p / "config.json").write_bytes((FIXTURES / "diffusers/tiny_ddpm/config.json").read_bytes())
    return {"bad": p}


# ---- downloads: files served by the local server, under a prefix of their own --------------------

REPO_NAME = "google/ddpm-cifar10-32"
GOOD_JSON = b'{"_class_name": "UNet2DModel"}'


def pickled(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def safetensors_bytes(header=None, data=b"\0" * 24, raw_header=None):
    header = header if header is not None else {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
    head = raw_header if raw_header is not None else json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + data


def served(files=None, quirks=None, have=None):
    """A builder: the server serves `files` ({name: bytes}, or a callable of ctx) with `quirks` under a
    fresh prefix ({url}); `have` are files already in the repo's folder under --root."""
    def build(ctx):
        srv, prefix = ctx["srv"], f"/c{len(ctx['srv'].files) + len(ctx['srv'].quirks)}-{os.urandom(4).hex()}"
        extra = {}
        content = files(ctx, extra) if callable(files) else (files or {})
        for name, data in content.items():
            srv.files[f"{prefix}/{name}"] = data
        for name, q in (quirks or {}).items():
            srv.quirks[f"{prefix}/{name}"] = {k: (v.replace("{prefix}", prefix) if isinstance(v, str) else v)
                                              for k, v in q.items()}
        for name, data in (have or {}).items():
            (p := ctx["out"] / REPO_NAME / name).parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                p.mkdir()
            elif data == "symlink":  # to a file of the user's, outside the download folder
                (target := ctx["tmp"] / "user_notes.txt").write_bytes(KEEP)
                p.symlink_to(target)
            else:
                p.write_bytes(data)
        return {"url": srv.url + prefix, **extra}
    return build


CONFIGS_OK = {"config.json": GOOD_JSON, "scheduler_config.json": GOOD_JSON}


def exploit_bin(ctx, extra):
    extra["marker"] = ctx["tmp"] / "pwned"
    return {"diffusion_pytorch_model.bin": pickled(Exploit(extra["marker"]))}


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
    case("rendezvous-timeout", "sample", [], "127.0.0.1:{port}", build=unused_port,
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
    # benchmark.py: values and outputs
    case("intervals-0", "benchmark", ["--intervals", "0,2"], "--intervals: a cache interval is an integer >= 1"),
    case("out-empty", "benchmark", ["--out", ""], "--out is empty"),
    case("out-foreign-json", "benchmark", [], "{out}/bench.json exists and is not a file this script writes",
         build=foreign_files("bench.json")),
    case("out-foreign-md", "benchmark", [], "{out}/bench.md exists and is not a file this script writes",
         build=foreign_files("bench.md")),
    case("out-is-the-ckpt", "benchmark", ["--ckpt", "{ckpt}"], "is also --ckpt", build=ckpt_named("bench.json")),
    case("out-json-is-a-folder", "benchmark", [], "{out}/bench.json is a folder", build=out_folder("bench.json")),
    case("out-root", "benchmark", ["--out", "/"], "--out / is a folder"),
    case("out-dot-dot", "benchmark", ["--out", ".."], "--out .. is a folder"),
    case("out-md-of-the-user-beside-a-record", "benchmark", [], "{out}/bench.md exists and is not a file this script",
         build=written({"bench.json": '{"device": "cpu", "args": {}, "rows": []}', "bench.md": KEEP})),
    case("variants-abc", "benchmark", ["--variants", "abc"], "'abc'"),
    case("repeats-0", "benchmark", ["--repeats", "0"], "--repeats"),
    # plan.py
    case("speedup-0", "plan", ["--speedup", "0"], "--speedup"),
    case("speedup-nan", "plan", ["--speedup", "nan"], "--speedup"),
    case("speedup-abc", "plan", ["--speedup", "abc"], "--speedup"),
    case("max-error-negative", "plan", ["--max-error", "-1", "--speedup", None], "--max-error must be a number >= 0"),
    case("max-error-nan", "plan", ["--max-error", "nan", "--speedup", None], "--max-error must be a number >= 0"),
    case("both-goals", "plan", ["--max-error", "1"], "--max-error"),
    case("targets-0", "plan", ["--targets", "2,0"], "--targets"),
    case("targets-nan", "plan", ["--targets", "nan"], "--targets"),
    case("fd-max-0", "plan", ["--fd-max", "0"], "--fd-max"),
    case("ddim-steps-5000", "plan", ["--ddim-steps", "5000"], "--ddim-steps 5000: "),
    case("plms-steps-0", "plan", ["--plms-steps", "0"], "--plms-steps 0: "),
    case("dpm-steps-2000", "plan", ["--dpm-steps", "2000"], "--dpm-steps 2000: "),
    case("dpm-cache-steps-0", "plan", ["--dpm-cache-steps", "0"], "--dpm-cache-steps 0: "),
    case("intervals-0", "plan", ["--intervals", "0"], "--intervals 0"),
    case("branches-99", "plan", ["--branches", "99"], "--branches 99: cache branch 99 is out of range"),
    case("reference-steps-5000", "plan", ["--reference-steps", "5000"], "--reference-steps 5000: "),
    case("seeds-overlap", "plan", ["--held-out-seeds", "1-3"], "overlap"),
    case("calib-seeds-abc", "plan", ["--calib-seeds", "abc"], "'abc'"),
    case("held-out-seeds-float", "plan", ["--held-out-seeds", "1.5"], "'1.5'"),
    case("unknown-key", "plan", ["sampling.etaa=1"], "sampling.etaa"),
    case("ckpt-missing", "plan", ["--ckpt", "{tmp}/absent.ckpt"], "checkpoint not found: {tmp}/absent.ckpt"),
    case("fd-real-missing", "plan", ["--fd-real", "{tmp}/real.npz"], "{tmp}/real.npz"),
    case("fd-real-garbage", "plan", ["--fd-real", "{bad}"], "{bad}", build=garbage_npz),
    case("device-tpu", "plan", ["--device", "tpu"], "device 'tpu'"),
    case("out-empty", "plan", ["--out", ""], "--out is empty"),
    case("out-foreign-md", "plan", [], "{out}/plan.md exists and is not a file this script writes",
         build=foreign_files("plan.md")),
    case("out-foreign-json", "plan", [], "{out}/plan.json exists and is not a file this script writes",
         build=foreign_files("plan.json")),
    case("out-foreign-png", "plan", [], "{out}/plan.png exists and is not a file this script writes",
         build=foreign_files("plan.png")),
    case("out-foreign-schedule", "plan", [], "{out}/plan_schedule.json exists and is not a file this script writes",
         build=foreign_files("plan_schedule.json")),
    case("out-is-the-ckpt", "plan", ["--ckpt", "{ckpt}"], "is also --ckpt", build=ckpt_named("plan.json")),
    case("out-is-fd-real", "plan", ["--fd-real", "{out}/plan.json"], "is also --fd-real",
         build=foreign_files("plan.json")),
    case("out-under-file", "plan", ["--out", "{out}/plain.txt/plan"], "plain.txt is a file", build=out_under_file),
    case("calib-seeds-huge", "plan", ["--calib-seeds", "0-99999999999"], "--calib-seeds gives 100,000,000,000 seeds"),
    case("held-out-seeds-huge", "plan", ["--held-out-seeds", "20-999999"], "--held-out-seeds gives"),
    case("fd-samples-huge", "plan", ["--fd-samples", "100000000000"], "--fd-samples"),
    case("out-trailing-slash", "plan", ["--out", "{out}/"], "is a folder: give a prefix"),
    case("out-an-existing-folder", "plan", ["--out", "{out}"], "is a folder: give a prefix"),
    case("out-png-of-the-user-beside-a-record", "plan", [], "{out}/plan.png exists and is not a file this script",
         build=written({"plan.json": '{"baseline": {}, "candidates": [], "recommended": null}', "plan.png": KEEP})),
    case("out-md-is-a-folder", "plan", [], "{out}/plan.md is a folder", build=out_folder("plan.md")),
    # reproduce.py
    case("gpus-0", "reproduce", ["ddpm", "--gpus", "0"], "--gpus"),
    case("gpus-abc", "reproduce", ["ddpm", "--gpus", "abc"], "--gpus"),
    case("ref-unknown-config", "reproduce", ["ddpm", "--dry-run", "--ref", "cifar100=x.npz"], "'cifar100=x.npz'"),
    case("ref-without-equals", "reproduce", ["ddpm", "--dry-run", "--ref", "x.npz"], "'x.npz'"),
    case("ref-empty-path", "reproduce", ["ddpm", "--dry-run", "--ref", "cifar10="], "'cifar10='"),
    case("outdir-empty", "reproduce", ["ddpm", "--outdir", ""], "--outdir is empty"),
    case("ref-missing", "reproduce", ["ddpm", "--ref", "cifar10={tmp}/none.npz"],
         "{tmp}/none.npz: not the pytorch-fid statistics"),
    case("ref-images-not-stats", "reproduce", ["ddpm", "--ref", "cifar10={bad}"],
         "{bad}: not the pytorch-fid statistics",
         build=float_npz),
    case("default-refs-absent", "reproduce", ["ddpm"], "fid_stats/cifar10.npz: not the pytorch-fid statistics",
         marks=pytest.mark.skipif((REPO / "checkpoints/fid_stats/cifar10.npz").exists(), reason="statistics present")),
    case("checkpoints-absent", "reproduce", ["ddpm", "--ref", "cifar10={stats}", "--ref", "lsun_bedroom={stats}",
                                             "--ref", "lsun_church={stats}"], "checkpoint not found", build=npz_stats,
         marks=pytest.mark.skipif((REPO / "checkpoints/diffusion_models_converted").exists(), reason="weights present")),
    case("collect-fid-not-a-number", "reproduce", ["ddpm", "--collect"], "fid.json: fid is 'abc', not a number",
         build=written({"cifar10-N2/fid.json": '{"fid": "abc"}'})),
    case("collect-benchmark-rows-malformed", "reproduce", ["ddpm", "--collect"], "rows is not a list",
         build=written({"cifar10-benchmark.json": '{"rows": "abc"}'})),
    case("collect-benchmark-row-without-speedup", "reproduce", ["ddpm", "--collect"], "a DeepCache row has no",
         build=written({"cifar10-benchmark.json": '{"rows": [{"method": "DeepCache", "N": 2}]}'})),
    case("adm-evaluator-absent", "reproduce", ["ldm"], "evaluator.py is missing",
         marks=pytest.mark.skipif((REPO / "guided-diffusion").exists(), reason="a guided-diffusion checkout is present")),
    case("collect-over-a-foreign-table", "reproduce", ["ddpm", "--collect"], "table_ddpm.md exists and is not a file",
         build=foreign_files("table_ddpm.md")),
    case("collect-outdir-under-file", "reproduce", ["ddpm", "--collect", "--outdir", "{out}/plain.txt/paper"],
         "plain.txt is a file", build=out_under_file),
    case("collect-table-is-a-folder", "reproduce", ["ddpm", "--collect"], "table_ddpm.md is a folder",
         build=out_folder("table_ddpm.md")),
    case("collect-ref-is-the-table", "reproduce", ["ddpm", "--collect", "--ref", "cifar10={out}/table_ddpm.md"],
         "is also --ref cifar10"),
    # check_fast_paths.py
    case("branches-99", "check_fast_paths", ["--branches", "99"], "cache branch 99 is out of range"),
    case("batch-size-0", "check_fast_paths", ["--batch-size", "0"], "--batch-size"),
    case("variants-fp8", "check_fast_paths", ["--variants", "eager:fp8"], "'eager:fp8'"),
    case("graph-on-cpu", "check_fast_paths", ["--variants", "eager:fp32:graph"], "CUDA graphs need a CUDA device"),
    case("config-unknown", "check_fast_paths", ["--config", "cifar100"], "config 'cifar100' not found"),
    case("device-tpu", "check_fast_paths", ["--device", "tpu"], "device 'tpu'"),
    case("out-foreign", "check_fast_paths", [], "{out}/fast.json exists and is not a file this script writes",
         build=foreign_files("fast.json")),
    case("out-is-the-config", "check_fast_paths", ["--out", "{cfg}"], "is also --config"),
    case("out-under-file", "check_fast_paths", ["--out", "{out}/plain.txt/fast.json"], "plain.txt is a file",
         build=out_under_file),
    case("out-empty", "check_fast_paths", ["--out", ""], "--out is empty"),
    case("out-is-a-folder", "check_fast_paths", [], "{out}/fast.json is a folder", build=out_folder("fast.json")),
    # train.py: more values
    case("steps-abc", "train", ["--steps", "abc"], "--steps"),
    case("steps-negative", "train", ["--steps", "-3"], "--steps"),
    case("steps-float", "train", ["--steps", "2.5"], "--steps"),
    case("batch-size-float", "train", ["training.batch_size=2.5"], "training.batch_size"),
    case("lr-abc", "train", ["training.lr=abc"], "training.lr"),
    case("ema-rate-negative", "train", ["training.ema_rate=-0.1"], "training.ema_rate=-0.1"),
    case("grad-clip-0", "train", ["training.grad_clip=0"], "training.grad_clip=0"),
    case("data-max-nan", "train", ["training.data_max=nan"], "training.data_max=nan"),
    case("workdir-empty", "train", ["--workdir", ""], "--workdir is empty"),
    case("config-unknown", "train", ["--config", "cifar100"], "config 'cifar100' not found"),
    case("data-nan", "train", ["training.data={bad}"], "holds values outside 0..training.data_max",
         build=lambda ctx: {"bad": save_npz(ctx, "nan.npz", images=np.full((4, 8, 8), np.nan, np.float32))}),
    case("data-above-data-max", "train", ["training.data={bad}"], "holds values outside 0..training.data_max",
         build=lambda ctx: {"bad": save_npz(ctx, "big.npz", images=np.full((4, 8, 8), 255, np.uint8))}),
    case("data-strings", "train", ["training.data={bad}"], "holds <U1 images",
         build=lambda ctx: {"bad": save_npz(ctx, "str.npz", images=np.full((4, 8, 8), "a"))}),
    case("data-npy", "train", ["training.data={bad}"], "is not an npz with an `images` array", build=npy_named_npz),
    case("seed-2^64", "train", ["training.seed=18446744073709551616"], "training.seed"),
    case("lr-diverges", "train", ["training.lr=1e30", "training.warmup=0"], "training diverged"),
    case("ckpt-without-settings-record", "train", [], "holds ckpt.pth but no train_settings.json",
         build=trained_without_record),
    case("shipped-weights-folder", "train", ["--workdir", str(DIGITS_EMA.parent)], "holds ema.ckpt but no ckpt.pth"),
    # fid.py: outputs
    case("save-stats-is-samples", "fid", ["{stats}", "--save-stats", "{stats}"], "is also SAMPLES", build=npz_stats),
    case("out-is-reference", "fid", ["{stats}", "{stats}", "--out", "{stats}"], "is also SAMPLES", build=npz_stats),
    case("out-is-save-stats", "fid", ["{stats}", "--save-stats", "{out}/s.npz", "--out", "{out}/s.npz"],
         "is also --save-stats", build=npz_stats),
    case("out-is-inception-weights", "fid", ["{stats}", "{stats}", "--out", "{weights}"],
         "is also --inception-weights", build=npz_stats),
    case("out-foreign", "fid", ["{stats}", "{stats}"], "{out}/fid.json exists and is not a file this script writes",
         build=lambda ctx: {**npz_stats(ctx), **foreign_files("fid.json")(ctx)}),
    case("dims-abc", "fid", ["{tmp}", "{tmp}", "--dims", "abc"], "--dims"),
    case("stats-of-strings", "fid", ["{bad}", "{bad}"], "{bad}: statistics of dtype",
         build=lambda ctx: {"bad": save_npz(ctx, "strmu.npz", mu=np.full(64, "a"), sigma=np.eye(64))}),
    case("stats-not-a-covariance", "fid", ["{bad}", "{bad}"], "{bad}: sigma is not a covariance matrix",
         build=lambda ctx: {"bad": save_npz(ctx, "negdef.npz", mu=np.zeros(64), sigma=-np.eye(64))}),
    case("npz-zip-signature-then-garbage", "fid", ["{bad}", "{bad}"], "{bad}",
         build=written({"pk.npz": b"PK\x03\x04garbage"}, "tmp", "bad")),
    case("save-stats-not-npz", "fid", ["{stats}", "--save-stats", "{out}/x.png"], "give a name ending in .npz",
         build=npz_stats),
    case("reference-stats-checked-before-the-images", "fid", ["{samples}", "{bad}", "--inception-weights", "{tmp}/no.pth"],
         "{bad}: statistics of shape mu [10]", build=lambda ctx: {**good_samples(ctx), **small_stats(ctx)}),
    # sample.py: config lookup
    case("config-path-missing", "sample", ["--config", "{tmp}/configs/cifar10.yaml"], "{tmp}/configs/cifar10.yaml"),
    case("config-empty-folder-named-like-a-bundled-one", "sample", ["--config", "{bad}"], "{bad}",
         build=empty_folder_named_like_a_config),
    case("config-folder-without-scheduler", "sample", ["--config", "{bad}"], "scheduler_config.json",
         build=diffusers_folder_without_scheduler),
    case("config-empty-file", "sample", ["--config", "{bad}"], "{bad} is empty",
         build=written({"empty.yaml": ""}, "tmp", "bad")),
    case("config-long-unknown-key", "sample", ["--config", "{bad}"], "unknown config key",
         build=written({"passwd.yaml": "root:x:0:0:root:/root:/bin/bash-and-a-line-long-enough-to-need-shortening-in-"
                                       "a-message: 1\n"}, "tmp", "bad")),
    case("config-binary", "sample", ["--config", "{bad}"], "{bad}", build=truncated_ckpt),
    case("override-steps-float", "sample", ["sampling.steps=2.5"], "sampling.steps"),
    case("override-steps-nan", "sample", ["sampling.steps=nan"], "sampling.steps"),
    case("override-batch-bool", "sample", ["sampling.batch_size=true"], "sampling.batch_size"),
    # sample.py: schedule files
    case("cache-file-missing", "sample", ["--cache-file", "{tmp}/none.json"], "--cache-file {tmp}/none.json"),
    case("cache-file-not-json", "sample", ["--cache-file", "{bad}"], "--cache-file {bad}: not a schedule file",
         build=schedule_file("{oops")),
    case("cache-file-a-list", "sample", ["--cache-file", "{bad}"], "--cache-file {bad}: holds a JSON list",
         build=schedule_file("[0, 1]")),
    case("cache-file-steps-float", "sample", ["--cache-file", "{bad}"], "--cache-file {bad}: steps must be an integer",
         build=schedule_file(steps=2.0)),
    case("cache-file-full-steps-float", "sample", ["--cache-file", "{bad}"],
         "--cache-file {bad}: cache_full_steps must be integer step indices, got 1.5",
         build=schedule_file(cache_full_steps=[0, 1.5])),
    case("cache-file-full-steps-bool", "sample", ["--cache-file", "{bad}"],
         "--cache-file {bad}: cache_full_steps must be integer step indices, got True",
         build=schedule_file(cache_full_steps=[0, True])),
    case("cache-file-full-steps-unsorted", "sample", ["--cache-file", "{bad}"],
         "--cache-file {bad}: cache_full_steps must increase strictly from step 0",
         build=schedule_file(cache_full_steps=[0, 1, 1])),
    case("cache-file-full-steps-negative", "sample", ["--cache-file", "{bad}"],
         "--cache-file {bad}: cache_full_steps must increase strictly from step 0",
         build=schedule_file(cache_full_steps=[-1, 0])),
    case("cache-file-full-steps-beyond", "sample", ["--cache-file", "{bad}"], "explicit full step 7 is outside",
         build=schedule_file(cache_full_steps=[0, 7])),
    case("cache-file-branch-negative", "sample", ["--cache-file", "{bad}"], "--cache-file {bad}: cache_branch must be >= 0",
         build=schedule_file(cache_branch=-1)),
    case("cache-file-branch-string", "sample", ["--cache-file", "{bad}"],
         "--cache-file {bad}: cache_branch must be an integer", build=schedule_file(cache_branch="1")),
    case("cache-file-without-eta", "sample", ["--cache-file", "{bad}"], "--cache-file {bad}: has no 'eta'",
         build=schedule_file(eta=None)),
    case("cache-file-unknown-sampler", "sample", ["--cache-file", "{bad}"], "--cache-file {bad}: unknown sampler 'euler'",
         build=schedule_file(sampler="euler")),
    case("cache-file-other-steps", "sample", ["--cache-file", "{bad}"], "made for sampling.steps=5",
         build=schedule_file(steps=5)),
    case("cache-file-other-order", "sample", ["--sampler", "dpm++", "--skip-type", "linspace", "--cache-file", "{bad}"],
         "made for sampling.solver_order=3", build=schedule_file(sampler="dpm++", skip_type="linspace", eta=None,
                                                                  solver_order=3)),
    case("cache-file-without-order", "sample", ["--sampler", "dpm++", "--skip-type", "linspace", "--cache-file", "{bad}"],
         "has no 'solver_order'", build=schedule_file(sampler="dpm++", skip_type="linspace", eta=None)),
    case("cache-file-and-interval", "sample", ["--cache-file", "{bad}", "--cache-interval", "2"],
         "--cache-interval would disagree", build=schedule_file()),
    # sample.py: settings records of the output folder
    case("settings-a-list", "sample", [], "{out}/settings.json is unreadable or not a settings record",
         build=settings_file("[]")),
    case("settings-empty-object", "sample", [], "{out}", build=settings_file("{}")),
    case("settings-of-another-run", "sample", [], "was made with", build=other_run_settings),
    # download.py: arguments
    case("unknown-name", "download", ["cifar100"], "unknown download 'cifar100'"),
    case("no-name", "download", [], "NAME"),
    case("url-ftp", "download", ["inception", "--url", "ftp://127.0.0.1/x.pth"], "is not an http:// or https:// address"),
    case("url-for-two-names", "download", ["inception", "cifar10", "--url", "http://127.0.0.1:9/x"], "exactly one"),
    case("root-is-file", "download", ["inception", "--root", "{out}"], "output folder {out} is a file",
         build=out_is_file),
    case("root-under-file", "download", ["inception", "--root", "{out}/x"], "cannot create output folder",
         build=out_under_file),
    case("root-empty", "download", ["inception", "--root", ""], "--root is empty"),
    case("timeout-0", "download", ["inception", "--timeout", "0"], "--timeout"),
    case("timeout-nan", "download", ["inception", "--timeout", "nan"], "--timeout"),
    case("timeout-abc", "download", ["inception", "--timeout", "abc"], "--timeout"),
    case("celeba-without-source", "download", ["celeba"], "no direct download is known"),
    # download.py: a misbehaving server (nothing may land, nothing pre-existing may change)
    case("404", "download", [REPO_NAME, "--url", "{url}"], "HTTP 404", build=served()),
    case("500", "download", [REPO_NAME, "--url", "{url}"], "HTTP 500",
         build=served(CONFIGS_OK, {"config.json": {"status": 500}})),
    case("416-to-a-fresh-request", "download", [REPO_NAME, "--url", "{url}"], "HTTP 416",
         build=served(CONFIGS_OK, {"config.json": {"status": 416}})),
    case("206-unasked", "download", [REPO_NAME, "--url", "{url}"], "answered bytes 5-9/10",
         build=served(CONFIGS_OK, {"config.json": {"range": "bytes 5-9/10"}})),
    case("206-malformed-range", "download", [REPO_NAME, "--url", "{url}"], "not a byte range",
         build=served(CONFIGS_OK, {"config.json": {"range": "bytes */10"}})),
    case("json-not-json", "download", [REPO_NAME, "--url", "{url}"], "not JSON",
         build=served({"config.json": b"{not json"})),
    case("json-a-list", "download", [REPO_NAME, "--url", "{url}"], "not a JSON object",
         build=served({"config.json": b"[1, 2]"})),
    case("no-length-no-checksum", "download", [REPO_NAME, "--url", "{url}"], "sends no length and no checksum",
         build=served(CONFIGS_OK, {"config.json": {"length": None}})),
    case("body-longer-than-announced", "download", [REPO_NAME, "--url", "{url}"], "not JSON",
         build=served(CONFIGS_OK, {"config.json": {"length": 5}})),
    case("hang", "download", [REPO_NAME, "--url", "{url}"], "timed out",
         build=served(CONFIGS_OK, {"config.json": {"delay": 2}})),
    case("redirect-loop", "download", [REPO_NAME, "--url", "{url}"], "HTTP 302",
         build=served(CONFIGS_OK, {"config.json": {"redirect": "{prefix}/config.json"}})),
    case("redirect-to-404", "download", [REPO_NAME, "--url", "{url}"], "HTTP 404",
         build=served(CONFIGS_OK, {"config.json": {"redirect": "/nowhere.json"}})),
    case("safetensors-garbage", "download", [REPO_NAME, "--url", "{url}"], "its header claims",
         build=served({"diffusion_pytorch_model.safetensors": b"garbage, not tensors"}, have=CONFIGS_OK)),
    case("safetensors-truncated", "download", [REPO_NAME, "--url", "{url}"], "its tensors need",
         build=served({"diffusion_pytorch_model.safetensors": safetensors_bytes(data=b"\0" * 20)}, have=CONFIGS_OK)),
    case("safetensors-wrong-offsets", "download", [REPO_NAME, "--url", "{url}"], "do not hold",
         build=served({"diffusion_pytorch_model.safetensors": safetensors_bytes(
             {"w": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 24]}})}, have=CONFIGS_OK)),
    case("safetensors-header-not-json", "download", [REPO_NAME, "--url", "{url}"], "header is not JSON",
         build=served({"diffusion_pytorch_model.safetensors": safetensors_bytes(raw_header=b"{oops")},
                      have=CONFIGS_OK)),
    case("safetensors-unknown-dtype", "download", [REPO_NAME, "--url", "{url}"], "malformed header entry",
         build=served({"diffusion_pytorch_model.safetensors": safetensors_bytes(
             {"w": {"dtype": "F13", "shape": [2, 3], "data_offsets": [0, 24]}})}, have=CONFIGS_OK)),
    case("bin-malicious-pickle", "download", [REPO_NAME, "--url", "{url}"], "refused to load",
         build=served(exploit_bin, have=CONFIGS_OK)),
    case("bin-an-int", "download", [REPO_NAME, "--url", "{url}"], "holds a int",
         build=served({"diffusion_pytorch_model.bin": pickled(42)}, have=CONFIGS_OK)),
    case("bin-text", "download", [REPO_NAME, "--url", "{url}"], "not a readable PyTorch checkpoint",
         build=served({"diffusion_pytorch_model.bin": b"plain text"}, have=CONFIGS_OK)),
    case("existing-file-corrupt", "download", [REPO_NAME, "--url", "{url}"], "config.json exists but does not match",
         build=served(CONFIGS_OK, have={"config.json": b"junk"})),
    case("target-is-a-folder", "download", [REPO_NAME, "--url", "{url}"], "is a folder where the download must go",
         build=served(CONFIGS_OK, have={"config.json": None})),
    case("timeout-1e300", "download", ["inception", "--timeout", "1e300"], "--timeout"),
    case("url-broken-ipv6", "download", ["inception", "--url", "http://[::1/x.pth"], "is not a valid address"),
    case("url-non-ascii", "download", ["inception", "--url", "http://127.0.0.1:9/\u00e9.pth"], "percent-encode"),
    case("url-empty-label", "download", ["inception", "--url", "http://a..b/x.pth"], "is not a valid address"),
    case("url-port-abc", "download", ["inception", "--url", "http://127.0.0.1:abc/x.pth"], "is not a valid address"),
    case("json-nested-too-deeply", "download", [REPO_NAME, "--url", "{url}"], "not JSON",
         build=served({"config.json": b"[" * 200000 + b"]" * 200000})),
    case("safetensors-without-tensors", "download", [REPO_NAME, "--url", "{url}"], "it holds no tensors",
         build=served({"diffusion_pytorch_model.safetensors": safetensors_bytes({}, data=b"")}, have=CONFIGS_OK)),
    case("part-is-a-symlink-to-a-user-file", "download", [REPO_NAME, "--url", "{url}"], "is a symbolic link",
         build=served(CONFIGS_OK, have={"config.json.part": "symlink"})),
    case("inception-wrong-bytes", "download", ["inception", "--url", "{url}/inc.pth"], "sha256",
         build=served({"inc.pth": b"not the inception weights"})),
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
        with torch.enable_grad():  # as a script runs (conftest switches autograd off for the tests)
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
    if request.node.callspec.params.get("script") == "download":
        c["srv"] = request.getfixturevalue("file_server")
    return c


@pytest.fixture(scope="module")
def file_server():
    with local_server() as s:
        yield s


def fill(text, ctx):
    return str(text).format(**ctx)


def merge(base, args):
    """A case's arguments after the base ones; `FLAG, None` in a case removes FLAG and its value from the base."""
    drop = {args[i - 1] for i, a in enumerate(args) if a is None}
    out, skip = [], False
    for i, a in enumerate(base):
        if skip:
            skip = False
        elif a in drop:
            skip = True
        else:
            out.append(a)
    return out + [a for i, a in enumerate(args) if a is not None and not (i + 1 < len(args) and args[i + 1] is None)]


@pytest.mark.parametrize("script, args, expect, env, build", CASES)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(script, args, expect, env, build, ctx, monkeypatch,
                                                          capsys):
    if build is not None:
        ctx.update(build(ctx))
    for key, value in env.items():
        monkeypatch.setenv(key, fill(value, ctx))
    monkeypatch.setattr(deepcache_ref.runs.distributed, "RENDEZVOUS_TIMEOUT", 3.0)  # a missing peer: an error, not a hang
    argv = [fill(a, ctx) for a in merge(BASE[script], args)]
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


AC = torch.linspace(0.99, 0.01, 1000)


def ddim(**changes):
    """`ddim_sample` on the T1 U-Net (1 image, 2 steps) with some arguments replaced."""
    from deepcache_ref import samplers

    a = {"unet": _t1(), "x_T": torch.zeros(1, 3, 16, 16), "timesteps": [0, 500], "alphas_cumprod": AC, **changes}
    return lambda: samplers.ddim_sample(a.pop("unet"), a.pop("x_T"), a.pop("timesteps"), a.pop("alphas_cumprod"), **a)


def dpm(timesteps=(0, 500), **changes):
    from deepcache_ref import samplers

    return lambda: samplers.dpm_solver_pp_sample(_t1(), torch.zeros(1, 3, 16, 16), list(timesteps), AC, **changes)


def schedule(*args, **kwargs):
    from deepcache_ref import samplers

    return lambda: samplers.CacheSchedule(*args, **kwargs)


def rng(*seeds):
    from deepcache_ref import samplers

    return lambda: samplers.PerImageRNG(list(seeds))


def with_value(values, i, v):
    values = values.clone()
    values[i] = v
    return values


def lib_make_timesteps(*args):
    from deepcache_ref import samplers

    return lambda: samplers.make_timesteps(*args)


def lib_load_config(*args):
    import deepcache_ref as P

    return lambda: P.load_config(*args)


def lib_pipeline_float_seed():
    import deepcache_ref as P

    cfg, _ = _digits()
    P.Pipeline(P.build_model(cfg), "cpu").sample_x0([1.5], cfg.sampling)


def adm_sample(labels, channels=3):
    """ddim_sample on a tiny ADM U-Net (class-conditional, 10 classes) with labels `labels`."""
    from deepcache_ref import samplers
    from deepcache_ref.ldm import adm_unet

    adm = adm_unet(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", class_cond=True,
                   attention_resolutions="8")
    adm.label_emb = torch.nn.Embedding(10, adm.label_emb.embedding_dim)
    adm.num_classes = 10
    samplers.ddim_sample(adm, torch.zeros(2, channels, 16, 16), [0, 500], AC, model_kwargs={"y": labels})


def pipeline_sample(**changes):
    import deepcache_ref as P

    cfg = P.load_config("digits")
    classes = changes.pop("classes", None)
    P.Pipeline(P.build_model(cfg), "cpu").sample_x0([0], dataclasses.replace(cfg.sampling, **changes), classes=classes)


def ldm_steps_300():
    import deepcache_ref as P

    model = tiny_ldm()
    P.check_sampling(model, dataclasses.replace(model.config.sampling, steps=300))


def lib_guidance_string_scale():
    from deepcache_ref import samplers

    samplers.ClassifierFreeGuidance(_t1(), "2", torch.zeros(1, 1, 4))


NEW_LIBRARY_CASES = [
    pytest.param(ddim(x_T=torch.zeros(1, 4, 16, 16)), "x_T has 4 channels, the U-Net takes 3", id="x_T-channels"),
    pytest.param(ddim(x_T=torch.zeros(1, 3, 16, 16, dtype=torch.long)), "x_T must be a floating tensor",
                 id="x_T-integers"),
    pytest.param(ddim(x_T=torch.zeros(3, 16, 16)), "x_T must have shape \\[B, C, H, W\\]", id="x_T-3-dims"),
    pytest.param(ddim(x_T=torch.zeros(0, 3, 16, 16)), "with B >= 1", id="x_T-empty-batch"),
    pytest.param(ddim(x_T=np.zeros((1, 3, 16, 16), np.float32)), "x_T must be a torch.Tensor", id="x_T-numpy"),
    pytest.param(ddim(x_T=torch.zeros(1, 3, 16, 16, dtype=torch.float64)), "x_T is torch.float64, the U-Net's weights "
                 "torch.float32", id="x_T-float64"),
    pytest.param(ddim(x_T=torch.zeros(1, 3, 16, 16, device="meta")), "x_T is on meta, the U-Net's weights on cpu",
                 id="x_T-other-device"),
    pytest.param(ddim(timesteps=[0.0, 500.5]), "timesteps\\[0\\] must be an integer, got 0.0", id="timesteps-floats"),
    pytest.param(ddim(timesteps=torch.tensor([0.0, 500.0])), "timesteps must be integers, got a torch.float32",
                 id="timesteps-float-tensor"),
    pytest.param(ddim(timesteps=[True, 500]), "timesteps\\[0\\] must be an integer, got True", id="timesteps-bool"),
    pytest.param(ddim(timesteps=5), "timesteps must be a sequence of integers", id="timesteps-an-int"),
    pytest.param(ddim(alphas_cumprod=AC[None]), "alphas_cumprod must be a 1-D floating tensor", id="alphas-2-dims"),
    pytest.param(ddim(alphas_cumprod=with_value(AC, 3, 0.0)), "alphas_cumprod must lie in \\(0, 1\\)",
                 id="alphas-with-0"),
    pytest.param(ddim(alphas_cumprod=with_value(AC, 3, float("nan"))), "alphas_cumprod must lie in", id="alphas-nan"),
    pytest.param(ddim(alphas_cumprod=with_value(AC, 3, 1.5)), "alphas_cumprod must lie in", id="alphas-above-1"),
    pytest.param(ddim(alphas_cumprod=torch.ones(1000, dtype=torch.long)), "1-D floating tensor", id="alphas-integers"),
    pytest.param(ddim(alphas_cumprod="abc"), "alphas_cumprod must be a 1-D tensor of numbers", id="alphas-string"),
    pytest.param(ddim(final_alpha_cumprod=float("nan")), "final_alpha_cumprod must be a finite number",
                 id="final-alpha-nan"),
    pytest.param(ddim(final_alpha_cumprod="1"), "final_alpha_cumprod must be a number, got '1'", id="final-alpha-string"),
    pytest.param(ddim(eta="0.5"), "eta must be a number in \\[0, 1\\].*'0.5'", id="eta-string"),
    pytest.param(ddim(eta=True), "eta must be a number in \\[0, 1\\].*True", id="eta-bool"),
    pytest.param(ddim(model_kwargs={"y": torch.zeros(3, dtype=torch.long)}),
                 "model_kwargs\\['y'\\] has shape \\[3\\]: it needs one row per image of the batch \\(1\\)",
                 id="model_kwargs-rows"),
    pytest.param(ddim(model_kwargs={"y": torch.zeros(1)}), "model_kwargs\\['y'\\] holds class labels: it must be an "
                 "int64 tensor", id="model_kwargs-float-labels"),
    pytest.param(ddim(model_kwargs={"y": [1]}), "model_kwargs\\['y'\\] holds class labels: it must be an int64 "
                 "tensor \\[B\\], got list", id="model_kwargs-labels-list"),
    pytest.param(ddim(model_kwargs=[("y", 1)]), "model_kwargs must be a dict", id="model_kwargs-not-a-dict"),
    pytest.param(lambda: adm_sample(torch.tensor([1, 1000])), "class labels must be in 0..9, got \\[1, 1000\\]",
                 id="model_kwargs-label-beyond-the-embedding"),
    pytest.param(lambda: adm_sample(torch.tensor([1, 2]), channels=4), "x_T has 4 channels, the U-Net takes 3",
                 id="x_T-channels-openaimodel"),
    pytest.param(ddim(alphas_cumprod=with_value(AC, 0, 1.0)), "alphas_cumprod must lie in \\(0, 1\\)",
                 id="alphas-with-1"),
    pytest.param(ddim(alphas_cumprod=AC.flip(0)), "alphas_cumprod must decrease as t grows", id="alphas-increasing"),
    pytest.param(ddim(final_alpha_cumprod=0.5), "final_alpha_cumprod be at least", id="final-alpha-below-the-first"),
    pytest.param(dpm(timesteps=[0, 0, 500]), "DPM-Solver\\+\\+ needs distinct timesteps", id="dpm-repeated-timesteps"),
    pytest.param(ddim(cache=5), "cache must be a CacheSchedule", id="cache-an-int"),
    pytest.param(ddim(eta=10 ** 400), "eta must be a number in \\[0, 1\\]", id="eta-huge-int"),
    pytest.param(ddim(final_alpha_cumprod=torch.tensor(0.5, device="meta")), "final_alpha_cumprod is a tensor on the "
                 "meta device", id="final-alpha-on-meta"),
    pytest.param(ddim(timesteps=torch.tensor(5)), "timesteps must be integers, got a torch.int64 tensor of shape \\[\\]",
                 id="timesteps-0-dim"),
    pytest.param(ddim(eta=0.5, noise_fn=5), "noise_fn must be a function", id="noise_fn-not-callable"),
    pytest.param(schedule(2, 1, "power", power=10 ** 400), "needs a finite power > 0", id="CacheSchedule-power-huge"),
    pytest.param(lambda: __import__("deepcache_ref").samplers.plms_sample(_t1(), torch.zeros(1, 3, 16, 16), [0, 500],
                                                                          AC, eta=torch.zeros(2)),
                 "eta must be a number in \\[0, 1\\]", id="plms-eta-two-elements"),
    pytest.param(lambda: __import__("deepcache_ref").samplers.ClassifierFreeGuidance(_t1(), 2.0, None),
                 "uncond_context must be a tensor", id="ClassifierFreeGuidance-uncond-None"),
    pytest.param(rng(), "no seeds", id="PerImageRNG-empty"),
    pytest.param(lambda: __import__("deepcache_ref").samplers.PerImageRNG(4), "seeds must be a sequence of integers",
                 id="PerImageRNG-an-int"),
    pytest.param(lib_make_timesteps(10, "uniform", 1000, 1.5), "offset must be an integer, got 1.5",
                 id="make_timesteps-offset-float"),
    pytest.param(lambda: pipeline_sample(classes=[3]), "--classes applies to class-conditional models only",
                 id="Pipeline-classes-on-unconditional"),
    pytest.param(lambda: pipeline_sample(cache_branch=100, cache_interval=1), "cache branch 100 is out of range",
                 id="Pipeline-checks-its-sampling-section"),
    pytest.param(lambda: pipeline_sample(sampler="dpm++", skip_type="quad", steps=100),
                 "dpm\\+\\+ needs distinct timesteps", id="Pipeline-dpm-quad"),
    pytest.param(lambda: ldm_steps_300(), "sampling.steps=300 with skip_type uniform visits timestep 1000",
                 id="check_sampling-ldm-steps-beyond-the-schedule"),
    pytest.param(ddim(model_kwargs={"y": torch.zeros(1, dtype=torch.long, device="meta")}),
                 "model_kwargs\\['y'\\] is on meta", id="model_kwargs-device"),
    pytest.param(dpm(order=2.0), "DPM-Solver\\+\\+ order must be an integer, got 2.0", id="dpm-order-float"),
    pytest.param(dpm(order=True), "DPM-Solver\\+\\+ order must be an integer, got True", id="dpm-order-bool"),
    pytest.param(schedule(2.0), "cache interval must be an integer >= 1, got 2.0", id="CacheSchedule-interval-float"),
    pytest.param(schedule(2, True), "cache branch must be an integer >= 0, got True", id="CacheSchedule-branch-bool"),
    pytest.param(schedule(1, 0, "explicit", explicit_steps=[0, 1.5]), "explicit full steps must be a list of integers",
                 id="CacheSchedule-explicit-float"),
    pytest.param(schedule(1, 0, "explicit", explicit_steps=[1, 2]), "must contain step 0",
                 id="CacheSchedule-explicit-without-0"),
    pytest.param(schedule(2, 0, "nonuniform", center=2.5, power=1.4), "integer center step, got 2.5",
                 id="CacheSchedule-center-float"),
    pytest.param(schedule(2, 0, "cubic"), "unknown cache schedule kind 'cubic'", id="CacheSchedule-kind"),
    pytest.param(rng(1.5), "seed 1.5 is not an integer", id="PerImageRNG-float"),
    pytest.param(rng("3"), "seed '3' is not an integer", id="PerImageRNG-string"),
    pytest.param(rng(True), "seed True is not an integer", id="PerImageRNG-bool"),
    pytest.param(lib_make_timesteps(2.0), "steps must be in 1..1000, got 2.0", id="make_timesteps-float"),
    pytest.param(lib_make_timesteps(10, "cubic"), "unknown skip_type 'cubic'", id="make_timesteps-skip-type"),
    pytest.param(lib_load_config("/nonexistent/cifar10.yaml"), "/nonexistent/cifar10.yaml", id="load_config-missing"),
    pytest.param(lib_load_config("digits", ["sampling.steps=many"]), "sampling.steps", id="load_config-override"),
    pytest.param(lib_pipeline_float_seed, "seed 1.5 is not an integer", id="Pipeline-float-seed"),
    pytest.param(lambda: tiny_ldm().denoiser(labels=[1.5]), "class labels\\[0\\] must be an integer, got 1.5",
                 id="ldm-denoiser-label-float"),
    pytest.param(lambda: tiny_ldm().denoiser(labels=[True]), "class labels\\[0\\] must be an integer, got True",
                 id="ldm-denoiser-label-bool"),
    pytest.param(lambda: tiny_ldm().denoiser(labels=torch.tensor([1.0])), "class labels must be integers",
                 id="ldm-denoiser-label-float-tensor"),
    pytest.param(lambda: tiny_ldm().denoiser(labels=[]), "class labels must be in 0..", id="ldm-denoiser-no-labels"),
    pytest.param(lib_guidance_string_scale, "guidance scale must be a finite number, got '2'",
                 id="ClassifierFreeGuidance-string"),
]


@pytest.mark.parametrize("call, match", NEW_LIBRARY_CASES)
def test_library_checks_arguments_against_the_model(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def lib_pipeline(*args, **kwargs):
    import deepcache_ref as P

    return lambda: P.Pipeline(*args, **kwargs)


MORE_LIBRARY_CASES = [
    pytest.param(lib_load_config(None), "a config is a bundled name or a path, got NoneType", id="load_config-None"),
    pytest.param(lib_load_config("digits", "sampling.steps=5"), "overrides are a list", id="load_config-overrides-str"),
    pytest.param(lambda: __import__("deepcache_ref").build_model("digits"), "not a config of a known model family",
                 id="build_model-a-name"),
    pytest.param(lib_pipeline(None), "Pipeline takes a model from deepcache_ref.load_model", id="Pipeline-None"),
    pytest.param(lambda: lib_pipeline(_digits()[1], "cpu", "fp16")(), "fast must be a FastPath", id="Pipeline-fast-str"),
    pytest.param(lambda: lib_pipeline(_digits()[1], "foo")(), "device 'foo' is not a torch device", id="Pipeline-device"),
    pytest.param(lambda: pipeline_sample_section(None), "sampling must be a config's sampling section",
                 id="Pipeline-sample-section-None"),
]


def pipeline_sample_section(section):
    import deepcache_ref as P

    P.Pipeline(P.build_model(P.load_config("digits")), "cpu").sample_x0([0], section)


@pytest.mark.parametrize("call, match", MORE_LIBRARY_CASES)
def test_library_checks_the_types_of_its_entry_points(call, match):
    with pytest.raises(ValueError, match=match):
        call()
