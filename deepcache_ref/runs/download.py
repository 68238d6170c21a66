"""Fetching the files the configs name: checked downloads that resume and never leave a bad file.

A file is fetched to `<name>.part` beside its final path (resumed with an HTTP Range request where
the server allows it), checked (size, md5 or the sha256 prefix of pytorch-fid's file name, as the
catalogue says; the server's Content-Length always), and only then renamed to its final name. A
checksum mismatch deletes the partial file; an interrupted transfer keeps it for the next try.
Only `scripts/download.py` calls this: sampling and FID never download anything.
"""

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from tqdm import tqdm

from ..catalogue import CONFIGS, DIFFUSERS_MIRRORS, DIFFUSERS_REPOS, HUB, INCEPTION_NAME, INCEPTION_URL, NAMES
from ..core.checkpoint import checkpoint_root, md5sum
from ..errors import UserError
from ..families import load_config


@dataclass(frozen=True)
class Remote:
    """One file to fetch: (URL, path) candidates, the first the server has is used, and its checks."""

    sources: Tuple[Tuple[str, Path], ...]
    md5: Optional[str] = None
    size: Optional[int] = None
    sha256_prefix: Optional[str] = None

    @classmethod
    def one(cls, url, dest, **checks):
        return cls(((url, Path(dest)),), **checks)


def _repo_files(repo, folder, url=None):
    base = (url.rstrip("/") + "/{file}") if url else HUB.replace("{repo}", repo)
    files = [Remote.one(base.format(file=f), folder / f) for f in ("config.json", "scheduler_config.json")]
    weights = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")  # newer, then older uploads
    return files + [Remote(tuple((base.format(file=w), folder / w) for w in weights))]


def remotes(name, root=None, url=None):
    """The files of one NAME (a config, `inception`, or a diffusers repo), with `url` as their source."""
    root = Path(root) if root is not None else checkpoint_root()
    if name == "inception":
        return [Remote.one(url or INCEPTION_URL, root / INCEPTION_NAME, sha256_prefix=INCEPTION_NAME.split("-")[-1][:8])]
    if name in DIFFUSERS_REPOS:
        return _repo_files(name, root / name, url)
    if name not in CONFIGS:
        raise UserError(f"unknown download {name!r}; known: {', '.join(NAMES)}")
    c = load_config(name).checkpoint
    if name in DIFFUSERS_MIRRORS:
        return _repo_files(DIFFUSERS_MIRRORS[name], (root / c.file).parent, url)
    source = url or c.source
    if not source.startswith(("http://", "https://")):
        raise UserError(f"{name}: no direct download is known ({c.source}); fetch it by hand to "
                        f"{root / c.file}, or give --url")
    return [Remote.one(source, root / c.file, md5=c.md5, size=c.size)]


def check(path, remote):
    """None if `path` passes the remote's checks, else what is wrong."""
    size = Path(path).stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size:,} bytes, expected {remote.size:,}"
    if remote.md5 and md5sum(path) != remote.md5:
        return f"md5 {md5sum(path)}, expected {remote.md5}"
    if remote.sha256_prefix:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if not h.hexdigest().startswith(remote.sha256_prefix):
            return f"sha256 {h.hexdigest()[:16]}..., expected {remote.sha256_prefix}..."
    return None


def fetch(remote, progress=True, chunk=1 << 20):
    """Download one file (resuming a `.part` left by an interrupted try); returns its path."""
    for url, dest in remote.sources:
        if dest.exists():
            problem = check(dest, remote)
            if problem:
                raise UserError(f"{dest} exists but does not match ({problem}): delete it and rerun")
            return dest
    for i, (url, dest) in enumerate(remote.sources):
        created = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
        try:
            return _fetch(url, dest, remote, progress, chunk)
        except urllib.error.HTTPError as e:
            _remove_empty(created)
            if e.code == 404 and i + 1 < len(remote.sources):
                continue  # e.g. an older upload without safetensors: its .bin
            raise UserError(f"{url}: HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            _remove_empty(created)
            raise UserError(f"{url}: cannot connect ({e.reason}); check the network or give --url") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
            _remove_empty(created)
            raise UserError(f"{url}: the connection failed ({e or type(e).__name__}); rerun to resume") from None
        except ValueError:
            _remove_empty(created)
            raise


def _remove_empty(folders):
    """Remove the folders a failed download created, if nothing is left in them (deepest first)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _fetch(url, dest, remote, progress, chunk):
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:  # 416: the partial file is already whole
            raise
        response = None
    total = have
    if response is not None:
        with response:
            if have and response.status != 206:  # the server ignores ranges: start again
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            if total is not None and remote.size is not None and total != remote.size:
                raise UserError(f"{url} serves {total:,} bytes, expected {remote.size:,}: another file; nothing "
                                "was downloaded")
            if total is None and not (remote.md5 or remote.size or remote.sha256_prefix):
                raise UserError(f"{url} sends no length and no checksum is known for {dest.name}: a cut transfer "
                                "could not be told from a whole one, so nothing was downloaded")
            with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                              desc=dest.name, disable=not progress) as bar:
                try:
                    while block := response.read(chunk):
                        f.write(block)
                        bar.update(len(block))
                except (http.client.IncompleteRead, ConnectionError, TimeoutError):
                    pass  # the size check below reports it; the partial file stays for the next try
    got = part.stat().st_size
    if total is not None and got < total:
        raise UserError(f"{url}: the transfer stopped at {got:,} of {total:,} bytes; {part} is kept: rerun to resume")
    problem = check(part, remote) or (f"{got:,} bytes, expected {total:,}" if total is not None and got != total else None)
    if problem:
        part.unlink()
        raise UserError(f"{url}: the download does not match ({problem}); the partial file was deleted")
    os.replace(part, dest)
    return dest
