"""FID (pytorch-fid's Inception, pool3 by default) between sample images and a reference.

    python scripts/fid.py outputs/cifar10/run/ checkpoints/fid_stats_cifar10_train.npz
    python scripts/fid.py samples.npz --save-stats my_stats.npz

Each side is a folder of images, an npz of uint8 NHWC images (`arr_0`), or precomputed statistics
(`mu`, `sigma`); a `sample.py` folder contributes its samples only. The Inception weights are read
from a local file; nothing is downloaded.
"""

import sys
from functools import lru_cache
from pathlib import Path

from deepcache_ref.catalogue import INCEPTION_NAME
from deepcache_ref.core.checkpoint import checkpoint_root
from deepcache_ref.errors import UserError
from deepcache_ref.evaluation.fid import (frechet_distance, is_statistics, is_statistics_file, load_inception,
                                          statistics_of)
from deepcache_ref.fast import resolve_device
from deepcache_ref.runs.cli import ArgumentParser, positive_int, run
from deepcache_ref.runs.files import claim_outputs, json_record, write_json, write_npz
from deepcache_ref.runs.versions import versions


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", help="folder or npz of images, or npz statistics")
    p.add_argument("reference", nargs="?", help="folder or npz of images, or npz statistics")
    p.add_argument("--save-stats", help="write the statistics of `samples` (pytorch-fid npz: mu, sigma)")
    p.add_argument("--inception-weights", default=str(checkpoint_root() / INCEPTION_NAME), help=f"local {INCEPTION_NAME}")
    p.add_argument("--dims", type=int, default=2048, choices=[64, 192, 768, 2048])
    p.add_argument("--batch-size", type=positive_int, default=50)
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--out", help="also write the result as JSON")
    args = p.parse_args(argv)
    if not args.reference and not args.save_stats:
        p.error("give a reference, or --save-stats")
    if args.save_stats and not args.save_stats.endswith(".npz"):
        raise UserError(f"--save-stats {args.save_stats}: statistics are an npz file; give a name ending in .npz")
    for path in (args.samples, args.reference):
        if path and not Path(path).exists():
            raise UserError(f"{path} does not exist")
    claim_outputs({"--save-stats": (args.save_stats, is_statistics_file), "--out": (args.out, json_record("fid"))},
                  {"SAMPLES": args.samples, "REFERENCE": args.reference, "--inception-weights": args.inception_weights})
    device = resolve_device(args.device)
    model = lru_cache(lambda: load_inception(args.inception_weights, args.dims, device))
    sides = [args.samples] + ([args.reference] if args.reference else [])
    done = {}
    for side in sorted(sides, key=lambda p: not is_statistics(p)):  # statistics files (read and checked) first
        done[side] = statistics_of(side, model, args.dims, args.batch_size, device)
    mu1, s1, n1 = done[args.samples]
    if args.reference:
        mu2, s2, n2 = done[args.reference]
    if args.save_stats:
        write_npz(args.save_stats, mu=mu1, sigma=s1)
        what = f"{n1} images" if n1 is not None else args.samples
        print(f"saved the statistics of {what} to {args.save_stats}", file=sys.stderr)
    if args.reference:
        fid = frechet_distance(mu1, s1, mu2, s2)
        print(f"FID {fid:.4f}")
        if args.out:
            write_json(args.out, {"fid": fid, "samples": args.samples, "reference": args.reference,
                                  "num_samples": n1, "num_reference": n2, "dims": args.dims, "versions": versions()})
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
