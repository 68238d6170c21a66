"""Pick the sampler, steps and cache settings with the least error for a speed budget (or the
fastest within an error budget), measured on calibration seeds and checked on held-out seeds.

    python scripts/plan.py --config digits --speedup 4
    python scripts/plan.py --config digits --max-error 3 --out results/digits/plan

Writes <out>.md (the frontier, the best of each method at --targets, the recommended command),
<out>.json, <out>.png (with matplotlib) and, when the pick is a calibrated schedule,
<out>_schedule.json for `sample.py --cache-file`.
"""

import shlex
import sys
from pathlib import Path

from deepcache_ref import Pipeline, SeedRanges, build_model, check_sampling, load_config, load_model
from deepcache_ref.errors import UserError
from deepcache_ref.evaluation.calibrate import save_schedule
from deepcache_ref.evaluation.fid import fd_pix, pixel_vectors
from deepcache_ref.evaluation.plan import candidates, check_search_space, frontier, measure, pick
from deepcache_ref.fast import resolve_device
from deepcache_ref.runs.cli import ArgumentParser, int_list, positive_float, positive_int, run
from deepcache_ref.runs.files import (atomic_write, claim_outputs, json_record, output_prefix, text_record, write_json,
                                      write_text)
from deepcache_ref.runs.versions import device_name, versions

REPO = Path(__file__).resolve().parent.parent
MAX_SEEDS = 10_000         # calibration and held-out seeds: each is sampled by every candidate
MAX_FD_SAMPLES = 200_000   # samples of each FD_pix row


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(rows, title):
    lines = [title, "", "| method | sampler | steps | N | branch | full steps | error (calib) | error (held-out) | "
             "speedup | ideal |" + (" FD_pix |" if any("fd_pix" in r for r in rows) else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if any("fd_pix" in r for r in rows) else "")]
    for r in rows:
        full = r["full_steps"] if r["full_steps"] is not None else "-"
        lines.append(f"| {r['method']} | {r['sampler']} | {r['steps']} | {fmt(r['N'], 'd')} | {fmt(r['branch'], 'd')} | "
                     f"{full} | {r['error']:.2f} | {fmt(r['held_out'], '.2f')} | {r['speedup']:.2f}x | {r['ideal']:.2f}x |"
                     + (f" {fmt(r.get('fd_pix'), '.4f')} |" if any("fd_pix" in x for x in rows) else ""))
    return "\n".join(lines) + "\n"


def plot(cands, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(c.method for c in cands):
        cs = sorted((c for c in cands if c.method == method), key=lambda c: c.speedup)
        ax.plot([c.speedup for c in cs], [c.error for c in cs], "o-", label=method, ms=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured speedup over the config's sampler")
    ax.set_ylabel("RMS error vs 1000-step DDIM (0-255)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--ckpt")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--speedup", type=positive_float, help="least error at this measured speedup or more")
    goal.add_argument("--max-error", type=float, help="fastest setting within this error (RMS, 0-255 levels)")
    p.add_argument("--calib-seeds", default="0-15")
    p.add_argument("--held-out-seeds", default="100000-100015")
    p.add_argument("--ddim-steps", type=int_list, default=[10, 15, 20, 25, 35, 50, 100])
    p.add_argument("--plms-steps", type=int_list, default=[10, 15, 20, 25, 50])
    p.add_argument("--dpm-steps", type=int_list, default=[5, 8, 10, 12, 15, 20, 25])
    p.add_argument("--intervals", type=int_list, default=[2, 3, 5, 10])
    p.add_argument("--branches", type=int_list, default=[0, 1])
    p.add_argument("--dpm-cache-steps", type=int_list, default=[20], help="DPM-Solver++ steps to cache on")
    p.add_argument("--targets", type=lambda t: [positive_float(x) for x in t.split(",")], default=[2.0, 4.0, 8.0],
                   help="speedups for the per-method table")
    p.add_argument("--repeats", type=positive_int, default=2)
    p.add_argument("--reference-steps", type=positive_int, help="DDIM steps of the reference (default: every timestep)")
    p.add_argument("--fd-real", help="npz of real images (`images`, values 0..--fd-max): FD_pix of the chosen rows")
    p.add_argument("--fd-max", type=positive_float, default=255.0)
    p.add_argument("--fd-samples", type=lambda v: positive_int(v, most=MAX_FD_SAMPLES), default=1000)
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--out", help="output prefix (default: results/plan_<config>)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, e.g. sampling.steps=50 (the baseline)")
    args = p.parse_args(argv)
    if args.max_error is not None and not args.max_error >= 0:
        raise UserError(f"--max-error must be a number >= 0, got {args.max_error}")

    # everything checked before any work: settings, seeds, outputs, inputs, device
    cfg = load_config(args.config, args.overrides)
    base = cfg.sampling
    meta = build_model(cfg, "meta")
    check_sampling(meta, base)

    def check(flag, sampling):
        try:
            check_sampling(meta, sampling)
        except UserError as e:
            raise UserError(f"{flag}: {e}") from None

    check_search_space(check, base, args.ddim_steps, args.plms_steps, args.dpm_steps, args.intervals, args.branches,
                       args.dpm_cache_steps, args.reference_steps)
    calib, held = SeedRanges.parse(args.calib_seeds), SeedRanges.parse(args.held_out_seeds)
    for flag, seeds in (("--calib-seeds", calib), ("--held-out-seeds", held)):
        if seeds.count > MAX_SEEDS:
            raise UserError(f"{flag} gives {seeds.count:,} seeds; every candidate samples each of them: give at "
                            f"most {MAX_SEEDS:,}")
    calib, held = list(calib), list(held)
    if set(calib) & set(held):
        raise UserError("--calib-seeds and --held-out-seeds overlap: held-out seeds must be new")
    out = output_prefix(args.out) if args.out is not None else REPO / "results" / f"plan_{cfg.name}"
    report, record = Path(f"{out}.md"), Path(f"{out}.json")
    ours = json_record("baseline", "candidates", "recommended")
    claim_outputs({"--out (.md)": (report, lambda p: text_record("### Planner:")(p) and ours(record)),
                   "--out (.json)": (record, ours),
                   "--out (.png)": (Path(f"{out}.png"), lambda p: is_png(p) and ours(record)),
                   "--out (_schedule.json)": (Path(f"{out}_schedule.json"),
                                              json_record("cache_full_steps", "calibration"))},
                  {"--config": args.config if Path(args.config).is_file() else None, "--ckpt": args.ckpt,
                   "--fd-real": args.fd_real})
    real = pixel_vectors(args.fd_real, args.fd_max) if args.fd_real else None
    device = resolve_device(args.device)
    pipe = Pipeline(load_model(cfg, args.ckpt), device)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731

    cands = candidates(pipe, base, args.ddim_steps, args.plms_steps, args.dpm_steps, args.intervals, args.branches,
                       args.dpm_cache_steps, calib, log)
    baseline = measure(pipe, cands, base, calib, held, args.repeats, log, args.reference_steps)
    front = frontier(cands)
    chosen = pick(cands, args.speedup, args.max_error)
    per_target = []
    for x in args.targets:
        for method in dict.fromkeys(c.method for c in cands):
            best = pick([c for c in cands if c.method == method], speedup=x)
            if best is not None:
                per_target.append((x, best))
    if real is not None:
        fd_seeds = list(range(args.fd_samples))
        for c in dict.fromkeys([baseline, *front, *(c for _, c in per_target)] + ([chosen] if chosen else [])):
            c.extra["fd_pix"] = fd_pix(pipe.sample(fd_seeds, c.sampling, c.cache), real)

    header = (f"### Planner: {cfg.name}, {device_name(device)}; baseline = the config's sampler "
              f"({base.sampler}, {base.steps} steps); error = RMS vs DDIM with "
              f"{args.reference_steps or pipe.model.num_train_timesteps} steps on {len(calib)} calibration / {len(held)} held-out seeds\n\n`python scripts/plan.py "
              f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    text = [header, table([baseline.row()] + [c.row() for c in front], "#### Frontier (error against measured speedup)")]
    text.append(table([dict(c.row(), method=f"{c.method} (>= {x:g}x)") for x, c in per_target],
                      "#### Best of each method at each target speedup"))
    command = None
    if chosen is None:
        text.append("No candidate meets the goal.\n")
    else:
        sched = None
        if chosen.cache.kind == "explicit":
            sched = Path(f"{out}_schedule.json")
            save_schedule(sched, chosen.sampling, chosen.cache, chosen.extra)
        command = shlex.join(["python", "scripts/sample.py", *chosen.sample_args(args.config, args.overrides, sched)])
        text.append(f"#### Recommended\n\n{chosen.method}: error {chosen.error:.2f} (held-out {chosen.held_out:.2f}) "
                    f"at {chosen.speedup:.2f}x measured ({chosen.ideal:.2f}x ideal)\n\n```\n{command}\n```\n")
    write_json(record, {"baseline": baseline.row(), "candidates": [c.row() for c in cands],
                        "frontier": [c.row() for c in front], "recommended": chosen.row() if chosen else None,
                        "command": command, "device": device_name(device), "versions": versions()})
    write_text(report, "\n".join(text))
    plot(cands, f"{out}.png")
    print("\n".join(text))
    return 0 if chosen else 1


if __name__ == "__main__":
    sys.exit(run(main))
