"""Generate images with DeepCache: one PNG per seed, resumable, multi-process.

    python scripts/sample.py --config lsun_church --cache-interval 2 --seeds 0-49999
    torchrun --nproc_per_node 8 scripts/sample.py --config cifar10 --cache-interval 5 --npz

Image s depends only on (checkpoint, settings, s). A folder holds the images of one set of settings
(`settings.json`): a run into it continues only with the same settings. Existing images are
skipped, files are written atomically, SIGTERM / SIGUSR1 stop every rank after its current image
(exit status 3) and the same command resumes the run. Bad input: one line, exit status 2.
"""

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from deepcache_ref import (FastPath, Pipeline, SeedRanges, build_model, check_sampling, checkpoint_file, class_labels,
                           load_config, load_model)
from deepcache_ref.errors import UserError
from deepcache_ref.evaluation.calibrate import load_schedule
from deepcache_ref.fast import COMPILE_MODES, PRECISIONS, resolve_device
from deepcache_ref.pipeline import make_grid
from deepcache_ref.runs.cli import EXIT_ERROR, EXIT_STOPPED, ArgumentParser, positive_int, run
from deepcache_ref.runs.distributed import Ranks
from deepcache_ref.runs.files import (check_outdir, image_ok, image_path, remove_stale_temps, write_json, write_npz,
                                      write_png)
from deepcache_ref.runs.record import check_settings, default_outdir, fingerprint, record_settings, run_settings
from deepcache_ref.runs.versions import device_name, versions
from deepcache_ref.samplers import SAMPLERS
from deepcache_ref.samplers.registry import all_options

REPO = Path(__file__).resolve().parent.parent
NPZ_LIMIT = 64 << 30  # bytes of images that --npz may hold in memory
STOP = []


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="config name (cifar10, lsun_church, cin256-v2, ...) or YAML path")
    p.add_argument("--cache-interval", type=int, help="DeepCache N (1 = no caching)")
    p.add_argument("--cache-branch", type=int, help="skip branch whose up-block input is cached")
    p.add_argument("--cache-schedule", choices=["uniform", "nonuniform", "power"])
    p.add_argument("--cache-center", type=int, help="nonuniform: centre step c")
    p.add_argument("--cache-power", type=float, help="nonuniform / power: exponent p")
    p.add_argument("--cache-file", help="explicit full steps from scripts/plan.py (a calibrated schedule)")
    p.add_argument("--sampler", choices=list(SAMPLERS))
    p.add_argument("--steps", type=int)
    p.add_argument("--skip-type", choices=["uniform", "quad", "linspace"])
    for o in all_options():  # each sampler's own options (registry.py)
        p.add_argument(f"--{o.key.replace('_', '-')}", type=o.type, choices=o.choices, help=o.help)
    p.add_argument("--scale", type=float, help="classifier-free guidance scale (LDM)")
    p.add_argument("--classes", help="LDM classes, e.g. 1,88,207; image s gets classes[s %% len]")
    p.add_argument("--seeds", default="0-63", help="e.g. 0-49999 or 0,5,10-19")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--outdir", help="default: outputs/<config>/<sampler>-S<steps>-N<interval>-k<branch>-<fingerprint>")
    p.add_argument("--subdirs", action="store_true", help="put images in subfolders of 1000")
    p.add_argument("--device", help="default: cuda (this rank's GPU) if available, else cpu")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    p.add_argument("--compile", choices=COMPILE_MODES, help="torch.compile the U-Net passes in this mode")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    p.add_argument("--cuda-graph", action="store_true",
                   help="record each batch's whole sampling run as one CUDA graph (a run that draws no noise)")
    p.add_argument("--npz", action="store_true", help="also pack the images into an ADM-evaluator npz")
    p.add_argument("--grid", action="store_true", help="also write grid.png of the first 256 images")
    p.add_argument("--ckpt", help="your own checkpoint (skips the config's md5 and size checks)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. sampling.eta=0.5")
    return p.parse_args(argv)


def overrides(args):
    flags = {"cache_interval": args.cache_interval, "cache_branch": args.cache_branch,
             "cache_schedule": args.cache_schedule, "cache_center": args.cache_center,
             "cache_power": args.cache_power, "sampler": args.sampler, "steps": args.steps,
             "skip_type": args.skip_type, "scale": args.scale, "batch_size": args.batch_size,
             **{o.key: getattr(args, o.key) for o in all_options()}}
    return [f"sampling.{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)


def prepare(args, ranks):
    """Everything checked before any model work or any file is written."""
    if args.outdir is not None and not args.outdir.strip():
        raise UserError("--outdir is empty: name a folder (or leave --outdir out for the default)")
    cfg = load_config(args.config, overrides(args))
    if args.cache_file:
        schedule = load_schedule(args.cache_file, cfg.sampling)
        flags = {"--cache-interval": args.cache_interval, "--cache-schedule": args.cache_schedule,
                 "--cache-center": args.cache_center, "--cache-power": args.cache_power}
        given = [flag for flag, value in flags.items() if value is not None]
        cfg = load_config(args.config, overrides(args) + schedule)
        if args.cache_branch is not None and args.cache_branch != cfg.sampling.cache_branch:
            given.append(f"--cache-branch {args.cache_branch} (the file's is {cfg.sampling.cache_branch})")
        if given:
            raise UserError(f"--cache-file {args.cache_file} sets the cache schedule; {', '.join(given)} would "
                            "disagree with it: give one or the other")
    s = cfg.sampling
    seeds = SeedRanges.parse(args.seeds)
    meta = build_model(cfg, "meta")
    classes = None
    if args.classes is not None:
        classes = parse_classes(args.classes, meta.num_classes)
    timesteps, full_steps = check_sampling(meta, s, classes)
    fast = FastPath(args.compile, args.precision, args.channels_last, args.cuda_graph)
    device = resolve_device(args.device, ranks.local_rank)
    fast.check(device, s)
    ckpt = checkpoint_file(cfg, args.ckpt)
    settings = run_settings(cfg, ckpt, timesteps, full_steps, fast, device, classes, args.subdirs)
    outdir = Path(args.outdir) if args.outdir else default_outdir(REPO / "outputs", cfg, settings)
    shape = tuple(meta.decode(torch.zeros(1, *meta.sample_shape, device="meta")).shape[1:])
    image_shape = (shape[1], shape[2], shape[0])  # H, W, C
    if args.npz and seeds.count * int(np.prod(image_shape)) > NPZ_LIMIT:
        raise UserError(f"--npz holds all {seeds.count:,} images in memory ({NPZ_LIMIT >> 30} GiB at most): "
                        "sample without --npz, or pack a smaller seed range")
    check_outdir(outdir, needed_bytes=2 * int(np.prod(image_shape)) + 4096)
    check_settings(outdir, settings)
    return cfg, seeds, classes, timesteps, full_steps, fast, device, ckpt, settings, outdir, image_shape


def parse_classes(text, num_classes):
    """'1,88,207' or '0-9,500' -> the classes in the order given, repeats kept (image s gets classes[s % len])."""
    if not num_classes:
        raise UserError("--classes applies to class-conditional models only; this one is unconditional")
    classes = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or hi and not hi.isdigit() or hi and int(hi) < int(lo):
            raise UserError(f"--classes: malformed {part.strip()!r}; use e.g. 1,88,207 or 0-9")
        if int(hi or lo) >= num_classes:
            raise UserError(f"--classes: class {int(hi or lo)} is out of range (0..{num_classes - 1})")
        classes.extend(range(int(lo), int(hi or lo) + 1))
    return classes


def pack_npz(outdir, seeds, subdirs, labels=None):
    paths = [image_path(outdir, s, subdirs) for s in seeds]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UserError(f"--npz needs every image: {len(missing)} are missing (e.g. {missing[0]}); rerun when all "
                        "tasks are done")
    images = np.stack([np.asarray(Image.open(p)) for p in paths])
    if images.ndim == 3:
        images = images[..., None]
    arrays = {"arr_0": images}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    return write_npz(outdir / f"samples_{'x'.join(map(str, images.shape))}.npz", **arrays)


def write_grid(outdir, seeds, subdirs, max_images=256):
    """grid.png of the first images, for a person to look at (None while some are not made yet)."""
    paths = [image_path(outdir, s, subdirs) for s in seeds.first(max_images)]
    missing = sum(not p.exists() for p in paths)
    if missing:
        print(f"grid: not written, {missing} of the first {len(paths)} images are not made yet (other tasks)",
              file=sys.stderr)
        return None
    images = [np.asarray(Image.open(p)) for p in paths]
    return write_png(outdir / "grid.png", make_grid(np.stack([im[..., None] if im.ndim == 2 else im for im in images])))


def main(argv=None):
    for sig in (signal.SIGTERM, signal.SIGUSR1):  # from the start: a stop is always exit 3, never a kill
        signal.signal(sig, lambda signum, frame: STOP.append(signum))
    args = parse_args(argv)
    ranks = Ranks.from_env()
    cfg, seeds, classes, timesteps, full_steps, fast, device, ckpt, settings, outdir, image_shape = prepare(args, ranks)
    pipe = Pipeline(load_model(cfg, ckpt), device, fast)  # the checkpoint read and checked before any write
    ranks.init()
    if not ranks.same(f"{fingerprint(settings)} {seeds} {cfg.sampling.batch_size} {Path(outdir).resolve()}"):
        raise UserError(f"rank {ranks.rank}: the ranks were started with different settings, seeds, batch sizes "
                        "or output folders; start every rank with the same command")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    s = cfg.sampling  # a signal that came before now stops every rank in the first round below
    if ranks.rank == 0:
        options = "".join(f", {k} {v}" for k, v in SAMPLERS[s.sampler].option_values(s).items())
        print(f"{cfg.name}: {s.sampler}, {len(timesteps)} steps{options}, cache N={s.cache_interval} "
              f"branch {s.cache_branch} ({s.cache_schedule}); {seeds.count:,} seeds -> {outdir}", file=sys.stderr)
        print(f"timesteps (visited high to low): {timesteps[::-1]}", file=sys.stderr)
        print(f"full steps: {full_steps}", file=sys.stderr)
    remove_stale_temps(outdir)

    n = seeds.num_batches(s.batch_size)
    rounds = -(-n // ranks.world)  # every rank takes part in every round's check, work or not
    made, seconds, error = 0, 0.0, None
    try:  # the first process to get here creates the folder's settings record; the others check it
        record_settings(outdir, settings, {"host": os.uname().nodename, **versions()})
    except Exception as e:
        error = e
    for r in tqdm(range(rounds), disable=ranks.rank != 0, unit="batch"):
        j = r * ranks.world + ranks.rank
        try:
            batch = seeds.batch(j, s.batch_size) if j < n and not STOP and error is None else []
            paths = [image_path(outdir, x, args.subdirs) for x in batch]
            todo = [not image_ok(p, image_shape) for p in paths]
            if any(todo):
                start = time.perf_counter()
                images = pipe.sample(batch, s, classes=classes)
                seconds += time.perf_counter() - start
                for path, image, needed in zip(paths, images, todo):  # a signal waits for the batch's files
                    if needed:
                        write_png(path, image)
                        made += 1
        except Exception as e:  # every rank learns of it below, and all stop together
            error = e
        status = ranks.max(2 if error else 1 if STOP else 0)
        if status:
            break
    else:
        status = 0

    if status == 2:
        if error is None:
            print(f"rank {ranks.rank}: stopped because another rank failed", file=sys.stderr)
            return EXIT_ERROR
        if isinstance(error, torch.cuda.OutOfMemoryError):
            raise UserError(f"out of memory at batch size {s.batch_size}: use a smaller --batch-size") from None
        raise error
    if status == 1:
        print(f"rank {ranks.rank}: stopped by a signal after {made} new images; rerun the same command to resume.",
              file=sys.stderr)
        return EXIT_STOPPED
    made, seconds = ranks.sum(made), ranks.max_float(seconds)  # all ranks' images over the slowest one's time
    ranks.barrier()
    if ranks.rank == 0:
        record = {"settings": settings, "config_name": cfg.name, "checkpoint": str(ckpt), "outdir": str(outdir),
                  "seeds": str(seeds), "world_size": ranks.world, "device": device_name(device),
                  "images_generated": int(made), "sampling_seconds": seconds,
                  "images_per_second": made / seconds if seconds > 0 else None, "versions": versions()}
        if args.npz:
            labels = class_labels(list(seeds), classes, build_model(cfg, "meta").num_classes)
            record["npz"] = str(pack_npz(outdir, list(seeds), args.subdirs, labels))
        if args.grid:
            record["grid"] = write_grid(outdir, seeds, args.subdirs)
        stamp = record["versions"]["time_utc"].replace(":", "")
        write_json(outdir / "logs" / f"run-{stamp}-{os.uname().nodename}-{os.getpid()}.json", record)
        rate = f"{record['images_per_second']:.2f} images/s" if record["images_per_second"] else "nothing to do"
        print(f"done: {seeds.count:,} images in {outdir} ({rate} on {record['device']} x{ranks.world})"
              + (f"; grid: {record['grid']}" if args.grid and record["grid"] else ""), file=sys.stderr)
    ranks.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
