"""Download the files the configs name, checked, to the paths the configs expect.

    python scripts/download.py cifar10 cin256-v2 inception
    python scripts/download.py google/ddpm-ema-church-256          # a diffusers folder
    python scripts/download.py lsun_church --url https://my.mirror/model-4432000.ckpt

NAMEs: the configs cifar10, lsun_church, lsun_bedroom, celebahq, cin256-v2 (celeba has no direct
link), `inception` (pytorch-fid's weights) and the diffusers repos google/ddpm-{cifar10-32,
church-256, bedroom-256, celebahq-256} and google/ddpm-ema-*. A transfer that stops is resumed by
running the same command (a partial file of another source is discarded); a file that fails its
check is deleted. Files without a published checksum (the diffusers repos) are checked for what
they must be: JSON, a consistent safetensors file, a weights-only pickle.
"""

import sys

from deepcache_ref.core.checkpoint import checkpoint_root
from deepcache_ref.errors import UserError
from deepcache_ref.runs.cli import ArgumentParser, positive_float, run
from deepcache_ref.runs.download import NAMES, TIMEOUT, fetch, remotes
from deepcache_ref.runs.files import check_outdir


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+", metavar="NAME", help=", ".join(NAMES))
    p.add_argument("--root", default=str(checkpoint_root()),
                   help="where the files go (default: $DEEPCACHE_CHECKPOINTS, else the checkout's checkpoints/)")
    p.add_argument("--url", help="another source for one NAME (a mirror, a local server; a folder URL for a repo)")
    p.add_argument("--timeout", type=lambda v: positive_float(v, most=86400), default=TIMEOUT,
                   help="seconds without a byte before a connection counts as failed (default %(default)g)")
    args = p.parse_args(argv)
    if not args.root.strip():
        raise UserError("--root is empty: name a folder (or leave --root out for the default)")
    if args.url and len(args.names) != 1:
        raise UserError("--url replaces the source of one NAME: give exactly one")
    check_outdir(args.root, flag="--root")
    todo = [r for name in args.names for r in remotes(name, args.root, args.url)]  # every name checked first
    for remote in todo:
        path = fetch(remote, progress=sys.stderr.isatty(), timeout=args.timeout)
        print(f"ok: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
