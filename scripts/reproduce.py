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
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

from deepcache_ref.errors import UserError
from deepcache_ref.evaluation.fid import is_statistics_file
from deepcache_ref.families import checkpoint_file, load_config
from deepcache_ref.runs.cli import ArgumentParser, positive_int, run
from deepcache_ref.runs.files import claim_outputs, text_record, write_text

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
TABLE_HEAD = "| config | N | FID (paper) | FID (ours) | speedup (paper) | speedup (ours) |"


def plan(table, args):
    """[(description, command)] for every setting of a table (every path quoted for the shell)."""
    q, py, out = shlex.quote, shlex.quote(sys.executable), Path(args.outdir)
    steps = []
    for config, rows in PAPER[table].items():
        for n in rows:
            folder = out / f"{config}-N{n}"
            ref = reference(args, config)
            adm = (f"{config} N={n}: ADM evaluator{', once the jobs are done' if args.launcher == 'slurm' else ''} "
                   "(external, TensorFlow)",
                   f"{ADM_EVALUATOR} {ADM_REFERENCE} {q(f'{folder}/samples_50000x256x256x3.npz')} > "
                   f"{q(f'{folder}/adm_eval.txt')}")
            if args.launcher == "slurm":
                env = f"CONFIG={config} CACHE_INTERVAL={n} OUTDIR={q(str(folder))} REFERENCE={q(ref)}"
                steps.append((f"{config} N={n}: SLURM array + merge/FID", f"{env} scripts/slurm/submit.sh"))
                steps += [adm] if table == "ldm" else []
                continue
            steps.append((f"{config} N={n}: 50k samples",
                          f"{py} -m torch.distributed.run --standalone --nproc_per_node {args.gpus} "
                          f"scripts/sample.py --config {config} --cache-interval {n} --seeds 0-49999 "
                          f"--batch-size {BATCH[config]} --outdir {q(str(folder))} --subdirs --npz"))
            if table == "ddpm":
                steps.append((f"{config} N={n}: FID", f"{py} scripts/fid.py {q(str(folder))} {q(ref)} "
                              f"--out {q(f'{folder}/fid.json')}"))
            else:
                steps.append(adm)
        intervals = ",".join(str(n) for n in rows if n > 1)
        steps.append((f"{config}: throughput", f"{py} scripts/benchmark.py --config {config} --intervals {intervals} "
                      f"--batch-size {BATCH[config]} --repeats 3 --out {q(f'{out}/{config}-benchmark')}"))
    return steps


def reference(args, config):
    return args.ref.get(config, f"checkpoints/fid_stats/{config}.npz")


def check_inputs(table, args):
    """What the steps read, and after hours of sampling, checked before the first one starts."""
    if table == "ddpm":
        for config in PAPER[table]:
            ref = REPO / reference(args, config)  # the steps run in the checkout (an absolute path stays as it is)
            if not is_statistics_file(ref):
                raise UserError(f"{ref}: not the pytorch-fid statistics (mu, sigma) of {config}, which its FID step "
                                f"reads after 50k samples; make them with `scripts/fid.py DATA --save-stats {ref}` or "
                                f"give --ref {config}=STATS.npz")
    else:
        for path in (ADM_EVALUATOR.split()[-1], ADM_REFERENCE):
            if not (REPO / path).is_file():
                raise UserError(f"{REPO / path} is missing: the ADM evaluation step needs it after 50k samples "
                                "(openai/guided-diffusion's evaluations/; see README), or use --dry-run")
    for config in PAPER[table]:
        checkpoint_file(load_config(config))  # exists, md5 as its config says (the error names download.py)


def read_json(path, key):
    try:
        return json.loads(Path(path).read_text())[key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a {key} record of this project ({e}); move it away or rerun its step") from None


def number(value, path, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{path}: {what} is {value!r}, not a number; move the file away or rerun its step")
    return value


def read_fid(folder):
    if (folder / "fid.json").exists():
        return number(read_json(folder / "fid.json", "fid"), folder / "fid.json", "fid")
    if (folder / "adm_eval.txt").exists():
        text = (folder / "adm_eval.txt").read_text(errors="replace")
        found = re.search(r"FID:\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)(?![0-9.])", text)
        return float(found.group(1)) if found else None
    return None


def read_speedups(path):
    """{N: measured speedup} of DeepCache's rows in a benchmark record."""
    rows = read_json(path, "rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: rows is not a list of benchmark rows; move the file away or rerun its step")
    try:
        return {number(r["N"], path, "N"): number(r["speedup"], path, "speedup") for r in rows
                if r.get("method") == "DeepCache"}
    except KeyError as e:
        raise UserError(f"{path}: a DeepCache row has no {e}; move the file away or rerun its step") from None


def collect(table, outdir):
    out = Path(outdir)
    lines = [TABLE_HEAD, "|---|---|---|---|---|---|"]
    for config, rows in PAPER[table].items():
        bench = out / f"{config}-benchmark.json"
        speed = {}
        if bench.exists():
            speed = read_speedups(bench)
        speed[1] = 1.0
        for n, (fid_paper, speed_paper) in rows.items():
            fid = read_fid(out / f"{config}-N{n}")
            fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
            lines.append(f"| {config} | {n} | {fmt(fid_paper, '{:.2f}')} | {fmt(fid, '{:.2f}')} | "
                         f"{fmt(speed_paper, '{:.2f}x')} | {fmt(speed.get(n), '{:.2f}x')} |")
    return write_text(out / f"table_{table}.md", "\n".join(lines) + "\n")


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", choices=list(PAPER))
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--collect", action="store_true", help="only write the table from existing results")
    p.add_argument("--launcher", choices=["torchrun", "slurm"], default="torchrun")
    p.add_argument("--gpus", type=positive_int, default=8, help="processes per node for torchrun")
    p.add_argument("--ref", action="append", default=[], metavar="CONFIG=STATS.npz",
                   help="pytorch-fid statistics of a data set (default checkpoints/fid_stats/<config>.npz)")
    p.add_argument("--outdir", default="outputs/paper")
    args = p.parse_args(argv)
    refs = {}
    for item in args.ref:
        config, _, path = item.partition("=")
        if config not in PAPER[args.table] or not path:
            raise UserError(f"--ref takes CONFIG=STATS.npz with CONFIG one of {', '.join(PAPER[args.table])}, "
                            f"got {item!r}")
        refs[config] = path
    args.ref = refs
    if not args.outdir.strip():
        raise UserError("--outdir is empty: name a folder (or leave --outdir out for the default)")
    if not args.dry_run:
        outdir = REPO / args.outdir  # relative to the checkout, where the steps run
        claim_outputs({"--outdir (table)": (outdir / f"table_{args.table}.md", text_record(TABLE_HEAD))},
                      {f"--ref {c}": REPO / r for c, r in refs.items()})
        if not args.collect:
            check_inputs(args.table, args)
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
        print(f"table: {collect(args.table, REPO / args.outdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
