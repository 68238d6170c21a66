"""Reproduce the DeepCache paper's tables: sample 50k images per setting, FID, throughput, table.

    python scripts/reproduce.py ddpm --dry-run            # print every command, run nothing
    python scripts/reproduce.py ddpm --gpus 8             # run them (torchrun), then write the table
    python scripts/reproduce.py ldm --launcher slurm      # submit SLURM jobs instead
    python scripts/reproduce.py ddpm --collect            # only (re)write the table from the results

Tables: `ddpm` = paper Table 2 (CIFAR-10, LSUN bedroom, church; N = 2, 3, 5, 10; cache_branch 2);
`ldm` = Table 1 (LDM-4-G ImageNet 256; N = 2, 3, 5, 10, 20; cache_branch 0, guidance 1.5).
DDPM FIDs use pytorch-fid against the dataset statistics given with --ref (name=path.npz);
LDM FIDs use the ADM evaluator (TensorFlow, openai/guided-diffusion), which is run as an external
command on the packed npz.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from deepcache_ref.errors import UserError
from deepcache_ref.runs.cli import ArgumentParser, run

REPO = Path(__file__).resolve().parent.parent

# FID and speedup from the paper (REFERENCE.md section 8); N=1 is the uncached baseline.
PAPER = {
    "ddpm": {
        "cifar10": {1: (4.16, 1.0), 2: (4.35, 1.40), 3: (4.70, 1.61), 5: (5.73, 1.85), 10: (9.74, 2.07)},
        "lsun_bedroom": {1: (6.70, 1.0), 2: (6.69, 1.29), 3: (7.20, 1.43), 5: (9.49, 1.48), 10: (None, None)},
        "lsun_church": {1: (10.87, 1.0), 2: (11.31, 1.29), 3: (11.75, 1.43), 5: (13.68, 1.48), 10: (None, None)},
    },
    "ldm": {
        "cin256-v2": {1: (3.37, 1.0), 2: (3.39, 1.88), 3: (3.44, 2.65), 5: (3.59, 4.12), 10: (4.41, 6.96),
                      20: (8.23, 10.54)},
    },
}
BATCH = {"cifar10": 256, "lsun_bedroom": 32, "lsun_church": 32, "cin256-v2": 16}
ADM_EVALUATOR = "python guided-diffusion/evaluations/evaluator.py"
ADM_REFERENCE = "VIRTUAL_imagenet256_labeled.npz"


def plan(table, args):
    """[(description, command)] for every setting of a table."""
    py, out = shlex.quote(sys.executable), Path(args.outdir)
    steps = []
    for config, rows in PAPER[table].items():
        for n in rows:
            folder = out / f"{config}-N{n}"
            ref = args.ref.get(config, f"checkpoints/fid_stats/{config}.npz")
            adm = (f"{config} N={n}: ADM evaluator{', once the jobs are done' if args.launcher == 'slurm' else ''} "
                   "(external, TensorFlow)",
                   f"{ADM_EVALUATOR} {ADM_REFERENCE} {folder}/samples_50000x256x256x3.npz > {folder}/adm_eval.txt")
            if args.launcher == "slurm":
                env = f"CONFIG={config} CACHE_INTERVAL={n} OUTDIR={folder} REFERENCE={ref}"
                steps.append((f"{config} N={n}: SLURM array + merge/FID", f"{env} scripts/slurm/submit.sh"))
                steps += [adm] if table == "ldm" else []
                continue
            steps.append((f"{config} N={n}: 50k samples",
                          f"{py} -m torch.distributed.run --standalone --nproc_per_node {args.gpus} "
                          f"scripts/sample.py --config {config} --cache-interval {n} --seeds 0-49999 "
                          f"--batch-size {BATCH[config]} --outdir {folder} --subdirs --npz"))
            if table == "ddpm":
                steps.append((f"{config} N={n}: FID", f"{py} scripts/fid.py {folder} {ref} --out {folder}/fid.json"))
            else:
                steps.append(adm)
        intervals = ",".join(str(n) for n in rows if n > 1)
        steps.append((f"{config}: throughput", f"{py} scripts/benchmark.py --config {config} --intervals {intervals} "
                      f"--batch-size {BATCH[config]} --repeats 3 --out {out}/{config}-benchmark"))
    return steps


def read_json(path, key):
    try:
        return json.loads(Path(path).read_text())[key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a {key} record of this project ({e}); move it away or rerun its step") from None


def read_fid(folder):
    if (folder / "fid.json").exists():
        return read_json(folder / "fid.json", "fid")
    if (folder / "adm_eval.txt").exists():
        found = re.search(r"FID:\s*([0-9.]+)", (folder / "adm_eval.txt").read_text())
        return float(found.group(1)) if found else None
    return None


def collect(table, outdir):
    out = Path(outdir)
    lines = ["| config | N | FID (paper) | FID (ours) | speedup (paper) | speedup (ours) |", "|---|---|---|---|---|---|"]
    for config, rows in PAPER[table].items():
        bench = out / f"{config}-benchmark.json"
        speed = {}
        if bench.exists():
            speed = {r["N"]: r["speedup"] for r in read_json(bench, "rows") if r["method"] == "DeepCache"}
        speed[1] = 1.0
        for n, (fid_paper, speed_paper) in rows.items():
            fid = read_fid(out / f"{config}-N{n}")
            fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
            lines.append(f"| {config} | {n} | {fmt(fid_paper, '{:.2f}')} | {fmt(fid, '{:.2f}')} | "
                         f"{fmt(speed_paper, '{:.2f}x')} | {fmt(speed.get(n), '{:.2f}x')} |")
    path = out / f"table_{table}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", choices=list(PAPER))
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--collect", action="store_true", help="only write the table from existing results")
    p.add_argument("--launcher", choices=["torchrun", "slurm"], default="torchrun")
    p.add_argument("--gpus", type=int, default=8, help="processes per node for torchrun")
    p.add_argument("--ref", action="append", default=[], metavar="CONFIG=STATS.npz",
                   help="pytorch-fid statistics of a data set (default checkpoints/fid_stats/<config>.npz)")
    p.add_argument("--outdir", default="outputs/paper")
    args = p.parse_args(argv)
    if any("=" not in item for item in args.ref):
        raise UserError(f"--ref takes CONFIG=STATS.npz, got {next(i for i in args.ref if '=' not in i)!r}")
    args.ref = dict(item.split("=", 1) for item in args.ref)
    if not args.collect:
        for what, cmd in plan(args.table, args):
            print(f"# {what}\n{cmd}")
            if not args.dry_run:
                done = subprocess.run(cmd, shell=True, cwd=REPO)
                if done.returncode:
                    print(f"error: this step failed with exit status {done.returncode}; fix it and rerun (finished "
                          "runs resume)", file=sys.stderr)
                    return done.returncode
    if not args.dry_run:
        print(f"table: {collect(args.table, args.outdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
