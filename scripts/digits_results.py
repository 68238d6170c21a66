"""FID-versus-speed on the built-in digits model: DeepCache against fewer-step DDIM.

    python scripts/digits_results.py                # writes results/digits/{table.md,results.json,*.png}

Distance: the Fréchet distance between generated and real digits in pixel space (64-d vectors in
[0, 1]; nothing to download), called FD_pix. Every setting samples the same seeds; speedups are
measured side by side in this process, as `benchmark.py` measures them.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from deepcache_ref import Pipeline, build_model, load_config, load_model
from deepcache_ref.evaluation.benchmark import macs_per_branch, rows_for_variant
from deepcache_ref.evaluation.fid import fd_pix, feature_statistics, frechet_distance, pixel_vectors
from deepcache_ref.pipeline import make_grid
from deepcache_ref.runs.cli import ArgumentParser, int_list, positive_int, run
from deepcache_ref.runs.files import write_json, write_png, write_text
from deepcache_ref.runs.versions import device_name, versions
from deepcache_ref.samplers import CacheSchedule

REPO = Path(__file__).resolve().parent.parent


def real_digits():
    return pixel_vectors(REPO / "data" / "digits8x8.npz", 16.0)


def save_grid(path, images):
    write_png(path, make_grid(images))


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
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="default: the built-in model's bundled weights")
    p.add_argument("--num-samples", type=positive_int, default=1000)
    p.add_argument("--intervals", type=int_list, default=[2, 3, 5, 10])
    p.add_argument("--branches", type=int_list, default=[0, 1, 2, 3])
    p.add_argument("--ddim-steps", type=int_list, default=[50, 34, 25, 20, 10])
    p.add_argument("--repeats", type=positive_int, default=2)
    p.add_argument("--outdir", default=str(REPO / "results" / "digits"))
    args = p.parse_args(argv)
    out = Path(args.outdir)

    cfg = load_config("digits")
    pipe = Pipeline(load_model(cfg, args.ckpt), "cpu")
    s = cfg.sampling
    seeds = list(range(args.num_samples))
    branches = args.branches
    pipe.sample_x0(seeds, s, CacheSchedule())  # warm-up: the first run pays for fresh memory
    rows, images = rows_for_variant(pipe, s, seeds, macs_per_branch(pipe.model, branches), branches, args.intervals,
                                    args.ddim_steps, warmup=0, repeats=args.repeats, overhead=False)

    real = real_digits()
    for r, imgs in zip(rows, images):
        r["fd_pix"] = fd_pix(imgs, real)
    rng = np.random.default_rng(0)
    torch.manual_seed(1)
    untrained = Pipeline(build_model(cfg), "cpu")
    references = {
        "uniform noise": fd_pix((rng.random((args.num_samples, 8, 8, 1)) * 255).astype(np.uint8), real),
        "untrained model (100 DDIM steps)": fd_pix(untrained.sample(seeds, s), real),
        "real digits, two halves": frechet_distance(*feature_statistics(real[::2]), *feature_statistics(real[1::2])),
    }

    lines = [f"Digits model, {args.num_samples} samples per setting, {device_name('cpu')}; "
             f"`python scripts/digits_results.py`", "",
             "| method | steps | N | branch | FD_pix | MAE vs uncached (0-255) | speedup | ideal |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['steps']} | {r['N']} | {'-' if r['branch'] is None else r['branch']} | "
                     f"{r['fd_pix']:.4f} | {r['mae']:.2f} | {r['speedup']:.2f}x | {r['ideal']:.2f}x |")
    lines += ["", "| reference | FD_pix |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in references.items()]
    table = "\n".join(lines) + "\n"
    print(table)
    write_text(out / "table.md", table)
    save_grid(out / "grid_uncached.png", images[0][:128])
    worst = next(i for i, r in enumerate(rows) if r["N"] == 10 and r["branch"] == branches[0])
    save_grid(out / f"grid_N10_branch{branches[0]}.png", images[worst][:128])
    save_grid(out / "grid_real.png", (real[:128].reshape(-1, 8, 8, 1) * 255).astype(np.uint8))
    plot(rows, out / "tradeoff.png")
    write_json(out / "results.json", {"rows": rows, "references": references, "num_samples": args.num_samples,
                                      "device": device_name("cpu"), "versions": versions()})
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
