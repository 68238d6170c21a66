"""FID-versus-speed on the built-in digits model: DeepCache against fewer-step DDIM.

    python scripts/digits_results.py                # writes results/digits/{table.md,results.json,*.png}

Distance: the Fréchet distance between generated and real digits in pixel space (64-d vectors in
[0, 1]; nothing to download), called FD_pix. Every setting samples the same seeds; speedups are
measured side by side in this process, as `benchmark.py` measures them.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import common
from benchmark import ints, macs_per_branch, rows_for_variant
from samplers import CacheSchedule


def real_digits():
    images = np.load(common.REPO / "data" / "digits8x8.npz")["images"]
    return images.reshape(len(images), -1).astype(np.float64) / 16.0


def fd_pix(images, real):
    """FD between uint8 images [B, 8, 8, 1] and real pixel vectors in [0, 1]."""
    fake = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return common.frechet_distance(*common.feature_statistics(fake), *common.feature_statistics(real))


def save_grid(path, images):
    common.write_png(path, common.make_grid(images))


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[plot]'): no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = {}
    for r in rows:
        key = "DDIM, fewer steps" if r["method"] == "DDIM" else f"DeepCache, branch {r['branch']}"
        lines.setdefault(key, []).append(r)
    base = next(r for r in rows if r["N"] == 1 and r["method"] == "DDIM")
    for key, rs in lines.items():
        rs = sorted([base] + [r for r in rs if r is not base], key=lambda r: r["speedup"])
        ax.plot([r["speedup"] for r in rs], [r["fd_pix"] for r in rs], "o-", label=key)
    ax.set_xlabel("measured speedup over 100-step DDIM")
    ax.set_ylabel("FD_pix to the real digits (lower is better)")
    ax.set_title("digits model: quality against speed")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="default: the shipped checkpoints/digits/ema.ckpt")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--intervals", default="2,3,5,10")
    p.add_argument("--branches", default="0,1,2,3")
    p.add_argument("--ddim-steps", default="50,34,25,20,10")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--outdir", default=str(common.REPO / "results" / "digits"))
    args = p.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)

    kind, cfg = common.load_any_config("digits")
    pipe = common.Pipeline(kind, cfg, "cpu", ckpt=args.ckpt)
    s = cfg.sampling
    seeds = list(range(args.num_samples))
    branches = ints(args.branches)
    bench = argparse.Namespace(branches=branches, intervals=ints(args.intervals), ddim_steps=ints(args.ddim_steps),
                               warmup=0, repeats=args.repeats, overhead=False)
    pipe.sample_x0(seeds, s, CacheSchedule())  # warm-up: the first run pays for fresh memory
    rows, images = rows_for_variant(pipe, bench, s, seeds, macs_per_branch(pipe, branches), common.Variant(None, "fp32"))

    real = real_digits()
    for r, imgs in zip(rows, images):
        r["fd_pix"] = fd_pix(imgs, real)
    rng = np.random.default_rng(0)
    torch.manual_seed(1)
    untrained = common.Pipeline(kind, cfg, "cpu", random_init=True, seed=1)
    references = {
        "uniform noise": fd_pix((rng.random((args.num_samples, 8, 8, 1)) * 255).astype(np.uint8), real),
        "untrained model (100 DDIM steps)": fd_pix(untrained.sample(seeds, s), real),
        "real digits, two halves": common.frechet_distance(*common.feature_statistics(real[::2]), *common.feature_statistics(real[1::2])),
    }

    lines = [f"Digits model, {args.num_samples} samples per setting, {common.device_name('cpu')}; "
             f"`python scripts/digits_results.py`", "",
             "| method | steps | N | branch | FD_pix | MAE vs uncached (0-255) | speedup | ideal |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['steps']} | {r['N']} | {'-' if r['branch'] is None else r['branch']} | "
                     f"{r['fd_pix']:.4f} | {r['mae']:.2f} | {r['speedup']:.2f}x | {r['ideal']:.2f}x |")
    lines += ["", "| reference | FD_pix |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in references.items()]
    table = "\n".join(lines) + "\n"
    print(table)
    (out / "table.md").write_text(table)
    save_grid(out / "grid_uncached.png", images[0][:128])
    worst = next(i for i, r in enumerate(rows) if r["N"] == 10 and r["branch"] == branches[0])
    save_grid(out / f"grid_N10_branch{branches[0]}.png", images[worst][:128])
    save_grid(out / "grid_real.png", (real[:128].reshape(-1, 8, 8, 1) * 255).astype(np.uint8))
    plot(rows, out / "tradeoff.png")
    common.write_json(out / "results.json", {"rows": rows, "references": references, "num_samples": args.num_samples,
                                             "device": common.device_name("cpu"), "versions": common.versions()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
