"""Generate images with DeepCache: one PNG per seed, resumable, multi-process.

    python scripts/sample.py --config lsun_church --cache-interval 2 --seeds 0-49999
    torchrun --nproc_per_node 8 scripts/sample.py --config cifar10 --cache-interval 5 --npz

Image s depends only on (checkpoint, settings, s). Existing images are skipped; files are written
atomically; SIGTERM / SIGUSR1 finish the current image and exit (status 3) so the same command
resumes the run.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from tqdm import tqdm

import common

STOP = []


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="config name (cifar10, lsun_church, cin256-v2, ...) or YAML path")
    p.add_argument("--cache-interval", type=int, help="DeepCache N (1 = no caching)")
    p.add_argument("--cache-branch", type=int, help="skip branch whose up-block input is cached")
    p.add_argument("--cache-schedule", choices=["uniform", "nonuniform", "power"])
    p.add_argument("--cache-center", type=int, help="nonuniform: centre step c")
    p.add_argument("--cache-power", type=float, help="nonuniform / power: exponent p")
    p.add_argument("--sampler", choices=list(common.SAMPLERS))
    p.add_argument("--steps", type=int)
    p.add_argument("--skip-type", choices=["uniform", "quad"])
    p.add_argument("--eta", type=float)
    p.add_argument("--scale", type=float, help="classifier-free guidance scale (LDM)")
    p.add_argument("--classes", help="LDM classes, e.g. 1,88,207; image s gets classes[s %% len]")
    p.add_argument("--seeds", default="0-63", help="e.g. 0-49999 or 0,5,10-19")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--outdir", help="default: outputs/<config>/<sampler>-S<steps>-N<interval>-k<branch>")
    p.add_argument("--subdirs", action="store_true", help="put images in subfolders of 1000")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--precision", choices=list(common.PRECISIONS), default="fp32")
    p.add_argument("--compile", choices=common.COMPILE_MODES, help="torch.compile the U-Net passes in this mode")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    p.add_argument("--cuda-graph", action="store_true",
                   help="record each batch's whole sampling run as one CUDA graph (ddim/plms, eta 0)")
    p.add_argument("--npz", action="store_true", help="also pack the images into an ADM-evaluator npz")
    p.add_argument("--grid", action="store_true", help="also write grid.png of the first 256 images")
    p.add_argument("--ckpt", help="your own checkpoint (skips the md5 check)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. sampling.eta=0.5")
    return p.parse_args(argv)


def overrides(args):
    flags = {"cache_interval": args.cache_interval, "cache_branch": args.cache_branch,
             "cache_schedule": args.cache_schedule, "cache_center": args.cache_center,
             "cache_power": args.cache_power, "sampler": args.sampler, "steps": args.steps,
             "skip_type": args.skip_type, "eta": args.eta, "scale": args.scale, "batch_size": args.batch_size}
    return [f"sampling.{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)


def prepare(args):
    """Validate everything before any model work; raises ConfigError / CheckpointError / ValueError."""
    for item in args.overrides:
        if "=" not in item:
            raise common.UsageError(f"expected key=value, got {item!r}")
    kind, cfg = common.load_any_config(args.config, overrides(args))
    seeds = common.parse_seeds(args.seeds)
    classes = common.parse_seeds(args.classes) if args.classes else None
    if classes and kind != "ldm":
        raise common.UsageError("--classes applies to class-conditional (LDM) configs only")
    timesteps, full_steps = common.Pipeline.check(kind, cfg, args.ckpt)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    common.check_fast_path(device, args.compile, args.cuda_graph, cfg.sampling)
    s = cfg.sampling
    outdir = Path(args.outdir or common.REPO / "outputs" / (cfg.name or Path(args.config).stem)
                  / f"{s.sampler}-S{s.steps}-N{s.cache_interval}-k{s.cache_branch}")
    return kind, cfg, seeds, classes, timesteps, full_steps, outdir


def pack_npz(outdir, seeds, subdirs, labels=None):
    images = np.stack([np.asarray(Image.open(common.image_path(outdir, s, subdirs)))
                       for s in seeds])
    if images.ndim == 3:
        images = images[..., None]
    arrays = {"arr_0": images}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    path = outdir / f"samples_{'x'.join(map(str, images.shape))}.npz"
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def write_grid(outdir, seeds, subdirs, max_images=256):
    """grid.png of the first images, for a person to look at."""
    images = [np.asarray(Image.open(common.image_path(outdir, s, subdirs))) for s in seeds[:max_images]]
    path = outdir / "grid.png"
    common.write_png(path, common.make_grid(np.stack([im[..., None] if im.ndim == 2 else im for im in images])))
    return path


def main(argv=None):
    args = parse_args(argv)
    try:
        kind, cfg, seeds, classes, timesteps, full_steps, outdir = prepare(args)
    except (common.ConfigError, common.UsageError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    rank, world, local_rank = common.dist_env()
    device = args.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    common.init_distributed(rank, world, device)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: STOP.append(signum))

    s = cfg.sampling
    batches = [seeds[i:i + s.batch_size] for i in range(0, len(seeds), s.batch_size)]
    mine = batches[rank::world]
    for batch in mine:  # leftovers of a killed run
        for seed in batch:
            common.temp_path(common.image_path(outdir, seed, args.subdirs)).unlink(missing_ok=True)
    todo = [b for b in mine if not all(common.image_path(outdir, x, args.subdirs).exists() for x in b)]
    if rank == 0:
        print(f"{cfg.name}: {s.sampler}, {len(timesteps)} steps, eta {s.eta}, cache N={s.cache_interval} "
              f"branch {s.cache_branch} ({s.cache_schedule}); {len(seeds)} seeds -> {outdir}", file=sys.stderr)
        print(f"timesteps (visited high to low): {timesteps[::-1]}", file=sys.stderr)
        print(f"full steps: {full_steps}", file=sys.stderr)

    pipe = None
    if todo:
        pipe = common.Pipeline(kind, cfg, device, ckpt=args.ckpt)
        pipe.optimize(args.compile, args.channels_last, args.cuda_graph)
    made, seconds = 0, 0.0
    for batch in tqdm(todo, disable=rank != 0, unit="batch"):
        start = time.perf_counter()
        images = pipe.sample(batch, s, classes=classes, precision=args.precision)
        seconds += time.perf_counter() - start
        for seed, image in zip(batch, images):
            path = common.image_path(outdir, seed, args.subdirs)
            if not path.exists():
                common.write_png(path, image)
                made += 1
            if STOP:
                break
        if STOP:
            break

    if STOP:
        print(f"rank {rank}: stopped by signal {STOP[0]} after {made} new images; rerun the same command "
              "to resume.", file=sys.stderr)
        return 3
    made, seconds = torch.tensor(made, dtype=torch.float64), torch.tensor(seconds, dtype=torch.float64)
    if world > 1:  # images of all ranks over the slowest rank's sampling time
        torch.distributed.all_reduce(made)
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
    record = {
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)), "kind": kind,
        "checkpoint": args.ckpt or str(common.CHECKPOINTS / cfg.checkpoint.file),
        "seeds": args.seeds, "classes": args.classes, "timesteps": timesteps, "full_steps": full_steps,
        "precision": args.precision, "compile": args.compile, "channels_last": args.channels_last,
        "cuda_graph": args.cuda_graph, "device": common.device_name(device), "world_size": world,
        "images_generated": int(made), "sampling_seconds": float(seconds),
        "images_per_second": float(made / seconds) if seconds > 0 else None,
        "versions": common.versions(),
    }
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        if args.npz:
            num_classes = cfg.model.params.cond_stage_config.params.n_classes - 1 if kind == "ldm" else 0
            labels = common.class_labels(seeds, classes, num_classes) if kind == "ldm" else None
            record["npz"] = str(pack_npz(outdir, seeds, args.subdirs, labels))
        if args.grid:
            record["grid"] = str(write_grid(outdir, seeds, args.subdirs))
        stamp = record["versions"]["time_utc"].replace(":", "")
        common.write_json(outdir / "logs" / f"run-{stamp}.json", record)
        rate = f"{record['images_per_second']:.2f} images/s" if record["images_per_second"] else "nothing to do"
        print(f"done: {len(seeds)} images in {outdir} ({rate} on {record['device']} x{world})"
              + (f"; grid: {record['grid']}" if args.grid else ""), file=sys.stderr)
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
