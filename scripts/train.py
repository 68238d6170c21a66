"""Train a DDPM U-Net with the original recipe (Ho et al. 2020; ermongroup/ddim `runners/diffusion.py`).

    python scripts/train.py --config digits                # trains, resumes if a checkpoint exists
    python scripts/train.py --config digits --steps 20 --workdir /tmp/run

eps-prediction MSE (summed over pixels, as the original), antithetic timestep pairs, Adam with
linear warm-up, gradient clipping and an EMA of the weights. The workdir holds `ckpt.pth` in
ermongroup/ddim's layout `[model_state ("module."), optimizer_state, epoch, step, ema_state]` plus
a sixth entry with the data order and random states (for an exact resume), `ema.ckpt`, the EMA
weights as a plain state dict (what the package ships for `digits`), and `train_settings.json`.
A run is deterministic for a given seed, resumption included, and its files are byte-reproducible.

A folder is one training: its settings (model, diffusion, training; the length and save interval
aside) are recorded with its first checkpoint, and a later run continues only with equal settings,
or is refused naming the first difference; a folder with `ema.ckpt` but no `ckpt.pth`, or
`ckpt.pth` but no record, is refused; a rerun of a finished training rewrites nothing; a kill at
any write is repaired by the rerun (a stale `ema.ckpt` from `ckpt.pth`); the training data is
checked (finite, within 0..data_max) and a loss that is no longer finite stops the run (exit 2)
before it is saved; SIGTERM / SIGUSR1 save at the next step and exit with status 3.
"""

import copy
import io
import json
import math
import signal
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

import deepcache_ref
from deepcache_ref import ddpm
from deepcache_ref.core.checkpoint import check_file, safe_load
from deepcache_ref.errors import CheckpointError, UserError
from deepcache_ref.families import family_of
from deepcache_ref.runs.cli import EXIT_STOPPED, ArgumentParser, positive_int, run
from deepcache_ref.runs.files import check_outdir, remove_stale_temps, write_bytes, write_json
from deepcache_ref.runs.record import first_difference, read_settings
from deepcache_ref.runs.versions import device_name, versions

REPO = Path(__file__).resolve().parent.parent


def load_images(cfg):
    """Training images in [-1, 1], [N, C, H, W] float32, checked against the model's shape."""
    t, m = cfg.training, cfg.model
    path = Path(t.data) if Path(t.data).is_absolute() else REPO / t.data
    if not t.data or not path.is_file():
        raise UserError(f"training.data: no data file {path} (an npz with `images`, uint8 [N, H, W] or [N, H, W, C])")
    try:
        with np.load(path) as f:
            images = f["images"]
    except (OSError, ValueError, KeyError, AttributeError, TypeError, zipfile.BadZipFile) as e:
        raise UserError(f"training.data: {path} is not an npz with an `images` array ({e})") from None
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise UserError(f"training.data: {path} holds {images.dtype} images; expected real numbers (uint8)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != (m.resolution, m.resolution, m.in_channels) or len(images) < 2:
        raise UserError(f"training.data: {path} holds images {list(images.shape)}; the model needs "
                        f"[N >= 2, {m.resolution}, {m.resolution}, {m.in_channels}]")
    if not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= t.data_max):
        raise UserError(f"training.data: {path} holds values outside 0..training.data_max={t.data_max:g} (or NaN)")
    x = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2)
    return x / t.data_max * 2 - 1


def check_training(t, total):
    for key, ok in [("batch_size", t.batch_size >= 1), ("lr", math.isfinite(t.lr) and t.lr > 0),
                    ("warmup", t.warmup >= 0), ("grad_clip", math.isfinite(t.grad_clip) and t.grad_clip > 0),
                    ("ema_rate", 0 <= t.ema_rate < 1), ("save_every", t.save_every >= 1),
                    ("data_max", math.isfinite(t.data_max) and t.data_max > 0), ("num_steps", total >= 1),
                    ("seed", 0 <= t.seed < 2 ** 63)]:
        if not ok:
            raise UserError(f"training.{key}={getattr(t, key, total)} is out of range")


SETTINGS = "train_settings.json"
NOT_SETTINGS = ("num_steps", "save_every")  # how long and how often: the same training either way
STOP = []


def training_settings(cfg):
    """What determines the weights of a training run (its length and save interval aside)."""
    config = OmegaConf.to_container(OmegaConf.structured(cfg))
    training = {k: v for k, v in config["training"].items() if k not in NOT_SETTINGS}
    return {"model": config["model"], "diffusion": config["diffusion"], "training": training}


def repair_ema(workdir, ema_state):
    """ema.ckpt as ckpt.pth says it is (a kill between the two writes leaves a stale one)."""
    buffer = io.BytesIO()
    torch.save(ema_state, buffer)
    path = Path(workdir) / "ema.ckpt"
    if not path.exists() or path.read_bytes() != buffer.getvalue():
        write_bytes(path, buffer.getvalue())
        print(f"{path} did not match {Path(workdir) / 'ckpt.pth'}: rewritten from it", file=sys.stderr)


def train_record(cfg, step, epoch, losses, seconds):
    return {"config": cfg.name, "steps": step, "epochs": epoch,
            "final_loss_mean_last_100": float(np.mean(losses[-100:])) if losses else None,
            "seconds_this_invocation": seconds, "device": device_name("cpu"), "versions": versions()}


def save(path, obj):
    """torch.save, atomically and byte-reproducibly: serialised in memory, so the archive inside
    carries no file name (the same weights give the same bytes and md5 wherever they are saved)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="a DDPM config name or YAML path")
    p.add_argument("--workdir", help="default: outputs/train/<config>")
    p.add_argument("--steps", type=positive_int, help="total training steps (default: the config's)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    if args.workdir is not None and not args.workdir.strip():
        raise UserError("--workdir is empty: name a folder (or leave --workdir out for the default)")
    cfg = deepcache_ref.load_config(args.config, args.overrides)
    if family_of(cfg) is not ddpm.FAMILY:
        raise UserError(f"train.py trains DDPM configs; {args.config} is an {family_of(cfg).name} config")
    t = cfg.training
    total = args.steps or t.num_steps
    check_training(t, total)
    workdir = Path(args.workdir or REPO / "outputs" / "train" / cfg.name)
    check_outdir(workdir)
    data = load_images(cfg)
    ckpt = workdir / "ckpt.pth"
    settings = training_settings(cfg)
    recorded = read_settings(workdir, SETTINGS)
    if not ckpt.exists() and (workdir / "ema.ckpt").exists():  # (a settings record alone: killed before a save)
        raise UserError(f"{workdir} holds ema.ckpt but no ckpt.pth: it is not a training folder this script can "
                        "continue; move it away or give another --workdir")
    if not ckpt.exists():
        recorded = None  # a record without a checkpoint (stopped before its first save): nothing to continue
    if recorded is not None:
        diff = first_difference(recorded, settings)
        if diff:
            raise UserError(f"{workdir} was trained with {diff[0]}={diff[1]!r}, this run has {diff[0]}={diff[2]!r}: "
                            "give another --workdir (or the same settings to continue that training)")
    state = None
    if ckpt.exists():  # read and checked before anything is written
        check_file(ckpt)
        state = safe_load(ckpt)
        if not (isinstance(state, list) and len(state) == 6 and isinstance(state[5], dict)):
            raise CheckpointError(f"{ckpt} is not a checkpoint of this script (expected its 6-entry list): move it "
                                  "away or give another --workdir")
        if recorded is None:
            raise UserError(f"{workdir} holds ckpt.pth but no {SETTINGS}: the settings it was trained with are "
                            "unknown, so it cannot be continued safely; move it away or give another --workdir")

    torch.manual_seed(t.seed)
    model = ddpm.build_unet(cfg.model).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(0.9, 0.999), eps=1e-8)
    rng = torch.Generator().manual_seed(t.seed)
    order, pos = torch.randperm(len(data), generator=rng), 0
    step, epoch = 0, 0
    if state is not None:
        try:
            model.load_state_dict({k.removeprefix("module."): v for k, v in state[0].items()})
            ema.load_state_dict(state[4])
            opt.load_state_dict(state[1])
            epoch, step = state[2], state[3]
            rng.set_state(state[5]["data"])
            torch.set_rng_state(state[5]["torch"])
            order, pos = state[5]["order"], int(state[5]["pos"])
        except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as e:
            raise CheckpointError(f"{ckpt} does not fit the `{cfg.name}` config or was not written by train.py "
                                  f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}): "
                                  "move it away or give another --workdir") from None
        remove_stale_temps(workdir)
        repair_ema(workdir, state[4])
        if step >= total:
            if not (workdir / "train.json").exists():  # killed before the record was written
                write_json(workdir / "train.json", train_record(cfg, step, epoch, state[5].get("losses", []), None))
            print(f"{ckpt} is already at step {step} of {total}: nothing to do", file=sys.stderr)
            return 0
        print(f"resumed from {ckpt} at step {step}", file=sys.stderr)

    remove_stale_temps(workdir)  # of a killed run
    for sig in (signal.SIGTERM, signal.SIGUSR1):  # save at the next step and stop, resumable
        signal.signal(sig, lambda signum, frame: STOP.append(signum))
    alphas_cumprod = ddpm.alphas_cumprod(cfg.diffusion)
    T = cfg.diffusion.num_timesteps
    losses = list(state[5].get("losses", [])) if state is not None else []
    bar = tqdm(total=total, initial=step, unit="step")
    start = time.perf_counter()
    while step < total:
        if pos + t.batch_size > len(data):  # a new epoch: reshuffle
            order, pos, epoch = torch.randperm(len(data), generator=rng), 0, epoch + 1
        x0 = data[order[pos:pos + t.batch_size]]
        pos += t.batch_size
        if t.random_flip:
            flip = torch.rand(len(x0), generator=rng) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        n = len(x0)
        ts = torch.randint(0, T, (n // 2 + 1,), generator=rng)
        ts = torch.cat([ts, T - ts - 1])[:n]  # antithetic pairs, as ermongroup/ddim
        eps = torch.randn(x0.shape, generator=rng)
        a = alphas_cumprod[ts].view(-1, 1, 1, 1)
        x_t = x0 * a.sqrt() + eps * (1 - a).sqrt()
        loss = (eps - model(x_t, ts)).square().sum(dim=(1, 2, 3)).mean()
        for group in opt.param_groups:
            group["lr"] = t.lr * min(1.0, (step + 1) / t.warmup) if t.warmup else t.lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        with torch.no_grad():
            for e, m in zip(ema.parameters(), model.parameters()):
                e.lerp_(m, 1 - t.ema_rate)
        step += 1
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            bar.close()
            raise UserError(f"the loss is {losses[-1]} at step {step}: training diverged (lower training.lr, or check "
                            "training.data); nothing was saved after the last checkpoint")
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-100:]):.3f}")
        if step % t.save_every == 0 or step == total or STOP:
            if recorded is None:  # the folder's record, written with its first checkpoint
                recorded = write_json(workdir / SETTINGS, {"settings": settings})
            save(ckpt, [{f"module.{k}": v for k, v in model.state_dict().items()}, opt.state_dict(), epoch, step,
                        ema.state_dict(), {"data": rng.get_state(), "torch": torch.get_rng_state(), "order": order,
                                           "pos": pos, "losses": losses[-100:]}])
            save(workdir / "ema.ckpt", ema.state_dict())  # after ckpt.pth: a rerun repairs a stale one from it
        if STOP:
            bar.close()
            print(f"stopped by a signal at step {step}; rerun the same command to resume", file=sys.stderr)
            return EXIT_STOPPED
    bar.close()
    record = train_record(cfg, step, epoch, losses, time.perf_counter() - start)
    write_json(workdir / "train.json", record)
    print(json.dumps(record), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
