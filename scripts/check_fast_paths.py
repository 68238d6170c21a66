"""Check that the fast paths (torch.compile, CUDA graphs, channels_last, fp16/bf16) match eager fp32.

    python scripts/check_fast_paths.py --config cifar10 --device cuda --variants eager:bf16,reduce-overhead:fp16

A variant is `<eager | torch.compile mode>:<precision>[:cl][:graph]` (cl = channels_last, graph =
whole-run CUDA graph). For each, the full pass and the partial pass of every requested branch are
compared with eager fp32 on the same random inputs (relative L2 error, printed and written as
JSON), and so are two short DeepCache DDIM runs of different seeds (with :graph the second one
replays the graph recorded for the first). Eager fp32 with interval 1 must equal no cache bit for bit.
"""

import json
import sys
from pathlib import Path

from deepcache_ref import FastPath
from deepcache_ref.errors import UserError
from deepcache_ref.evaluation.fast_paths import check_config, check_fast_paths
from deepcache_ref.fast import resolve_device
from deepcache_ref.runs.cli import ArgumentParser, int_list, positive_int, run
from deepcache_ref.runs.files import claim_outputs, json_record, write_json
from deepcache_ref.runs.versions import device_name


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--variants", default="default:fp32,eager:bf16",
                   help="comma list of <eager|compile mode>:<fp32|fp16|bf16>[:cl][:graph]")
    p.add_argument("--branches", type=int_list, help="comma list (default: the config's)")
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args(argv)
    if args.out is not None and not args.out.strip():
        raise UserError("--out is empty: name a JSON file (or leave --out out to print only)")
    claim_outputs({"--out": (args.out, json_record("interval_1_equals_no_cache_bitwise", "variants"))},
                  {"--config": args.config if Path(args.config).is_file() else None})
    check_config(args.config, args.branches, args.batch_size)
    device = resolve_device(args.device)
    variants = [FastPath.parse(v) for v in args.variants.split(",")]
    for v in variants:
        v.check(device)
    res = check_fast_paths(args.config, variants, device, args.branches, batch_size=args.batch_size)
    res["device"] = device_name(device)
    print(json.dumps(res, indent=2))
    if args.out:
        write_json(args.out, res)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(run(main))
