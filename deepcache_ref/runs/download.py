"""Fetching the files the configs name: downloads verified end to end, resumable, never a bad file.

A file is fetched to `<name>.part` beside its final path, with `<name>.part.json` remembering where
the bytes came from (URL, announced length, ETag / Last-Modified). A rerun resumes it with an HTTP
Range request only when that record matches; a `.part` of another source or version is discarded.
Every answer is checked before its bytes are kept: a 206's `Content-Range` must continue the file
exactly, a 416 starts over, the length must be the announced and the catalogued one. Then the whole
file is checked (size, md5 or the sha256 prefix of pytorch-fid's file name, as the catalogue says;
a file without a published checksum for what it must be: JSON that parses, a safetensors header
whose tensors fill the file, a pickle the `weights_only` loader accepts) and only then renamed to its
final name. One process at a time downloads a file (a lock on its `.part`). Only
`scripts/download.py` calls this: sampling and FID never download anything.
"""

import errno
import fcntl
import hashlib
import http.client
import json
import os
import re
import struct
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from tqdm import tqdm

from ..catalogue import CONFIGS, DIFFUSERS_MIRRORS, DIFFUSERS_REPOS, HUB, INCEPTION_NAME, INCEPTION_URL, NAMES
from ..core.checkpoint import checkpoint_root, md5sum, safe_load
from ..errors import UserError
from ..families import load_config
from .files import write_json

TIMEOUT = 60.0  # seconds without a byte before a connection counts as failed


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

    @property
    def checksum(self):
        return bool(self.md5 or self.sha256_prefix)


def check_url(url):
    """UserError unless `url` is an http(s) address urllib can request (ASCII, a host, a numeric port)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not a number)
        url.encode("ascii")
        (parts.hostname or "").encode("idna")
    except (ValueError, UnicodeError) as e:
        raise UserError(f"--url {url!r} is not a valid address ({e}); percent-encode other characters") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--url {url!r} is not an http:// or https:// address")


def _repo_files(repo, folder, url=None):
    base = (url.rstrip("/") + "/{file}") if url else HUB.replace("{repo}", repo)
    files = [Remote.one(base.format(file=f), folder / f) for f in ("config.json", "scheduler_config.json")]
    weights = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")  # newer, then older uploads
    return files + [Remote(tuple((base.format(file=w), folder / w) for w in weights))]


def remotes(name, root=None, url=None):
    """The files of one NAME (a config, `inception`, or a diffusers repo), with `url` as their source."""
    root = Path(root) if root is not None else checkpoint_root()
    if url is not None:
        check_url(url)
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


# ---- what a whole file must be ------------------------------------------------------------------

SAFETENSORS_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                     "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _safetensors_problem(path):
    """None if `path` has a valid safetensors header whose tensors exactly fill the file."""
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "shorter than a safetensors header"
        n = struct.unpack("<Q", head)[0]
        if n > min(size - 8, 100 << 20):
            return f"its header claims {n:,} bytes, the file has {size:,}"
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError):
            return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            count = 1
            for d in info["shape"]:
                count *= int(d)
            itemsize = SAFETENSORS_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            return f"tensor {key!r} has a malformed header entry"
        ints = isinstance(begin, int) and isinstance(end, int)
        if not (ints and 0 <= begin <= end) or end - begin != count * itemsize:
            return f"tensor {key!r}: offsets {begin}..{end} do not hold {count} x {info['dtype']}"
        spans.append((begin, end))
    if not spans:
        return "it holds no tensors"
    spans.sort()
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])) or (spans and spans[0][0] != 0):
        return "its tensors overlap or leave gaps"
    data = spans[-1][1]
    if 8 + n + data != size:
        return f"its tensors need {8 + n + data:,} bytes, the file has {size:,}"
    return None


def content_problem(path, name=None):
    """None if `path` is what a file named `name` must be (JSON, safetensors, a weights-only pickle)."""
    suffix = Path(name or path).suffix
    if suffix == ".json":
        try:
            data = json.loads(Path(path).read_bytes())
        except (ValueError, RecursionError) as e:
            return f"not JSON ({str(e).splitlines()[0] if str(e) else 'nested too deeply'})"
        return None if isinstance(data, dict) else "not a JSON object"
    if suffix == ".safetensors":
        return _safetensors_problem(path)
    if suffix in (".bin", ".pt", ".pth", ".ckpt"):
        try:
            state = safe_load(path)
        except ValueError as e:
            return str(e).replace(str(path), "the file", 1)
        return None if isinstance(state, dict) else f"it holds a {type(state).__name__}, not a dict of weights"
    return f"no checksum is known and a {suffix or 'suffix-less'} file cannot be checked otherwise"


def check(path, remote, name=None):
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
    if not remote.checksum:
        return content_problem(path, name)
    return None


# ---- fetching -------------------------------------------------------------------------------------

def fetch(remote, progress=True, chunk=1 << 20, timeout=TIMEOUT):
    """Download one file (resuming a `.part` of the same source); returns its path."""
    for url, dest in remote.sources:
        if dest.is_dir():
            raise UserError(f"{dest} is a folder where the download must go: move it away")
        if dest.exists():
            problem = check(dest, remote)
            if problem:
                raise UserError(f"{dest} exists but does not match ({problem}): delete it and rerun")
            return dest
    for i, (url, dest) in enumerate(remote.sources):
        created = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
        try:
            return _Transfer(url, dest, remote, timeout).run(progress, chunk)
        except urllib.error.HTTPError as e:
            _remove_empty(created)
            if e.code == 404 and i + 1 < len(remote.sources):
                continue  # e.g. an older upload without safetensors: its .bin
            reason = str(e.reason).strip().splitlines()[0] if str(e.reason).strip() else ""
            raise UserError(f"{url}: HTTP {e.code} {reason}".rstrip()) from None
        except urllib.error.URLError as e:
            _remove_empty(created)
            raise UserError(f"{url}: cannot connect ({e.reason}); check the network or give --url") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
            _remove_empty(created)
            raise UserError(f"{url}: the connection failed ({e or type(e).__name__}, --timeout {timeout:g} s); "
                            "rerun to resume") from None
        except BaseException:
            _remove_empty(created)
            raise


def _remove_empty(folders):
    """Remove the folders a failed download created, if nothing is left in them (deepest first)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _validators(headers):
    return {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}


class _Transfer:
    """One download of `url` to `dest`, through `<dest>.part` and its source record `<dest>.part.json`."""

    def __init__(self, url, dest, remote, timeout):
        self.url, self.dest, self.remote, self.timeout = url, dest, remote, timeout
        self.part = dest.with_name(dest.name + ".part")
        self.record = dest.with_name(dest.name + ".part.json")
        self.restart = False  # set when the `.part` is found to be no prefix of the file

    def run(self, progress, chunk):
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(f"{self.part} is a symbolic link: remove it (a download never writes through one)")
            raise
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another process is downloading {self.dest}: wait for it to finish") from None
            try:  # locked: still the `.part` at its path (not one another process has just made final)?
                current = os.stat(self.part, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                raise UserError(f"another process has just downloaded {self.dest}: rerun to check it")
            with os.fdopen(os.dup(fd), "r+b") as f:
                try:
                    total = self._download(f, progress, chunk)
                except BaseException:
                    if self.restart or f.seek(0, os.SEEK_END) == 0:  # nothing worth resuming
                        self._discard()
                    raise
            self._finish(total)
        finally:
            os.close(fd)
        return self.dest

    def _discard(self):
        self.part.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)

    def _known(self, have):
        """The source record of the `.part`, if it is of this URL (else the `.part` is another file's)."""
        try:
            known = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        if not have or not isinstance(known, dict) or known.get("url") != self.url \
                or not isinstance(known.get("length"), int) or have > known["length"]:
            return None
        return known

    def _open(self, headers):
        return urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=self.timeout)

    def _download(self, f, progress, chunk):
        have = f.seek(0, os.SEEK_END)
        known = self._known(have)
        if known is None:  # no record, another source, or nothing yet: start from zero
            f.truncate(0)
            have = 0
        headers = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            validator = known.get("etag") or known.get("last_modified")
            if validator:
                headers["If-Range"] = validator  # a changed file comes back whole (200)
        try:
            response = self._open(headers)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not have:
                raise
            f.truncate(0)  # 416: the range does not fit this file (any more): start over
            have = 0
            response = self._open({})
        with response:
            total, start = self._accept(response, have, known)
            f.truncate(start)
            f.seek(start)
            with tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=self.dest.name,
                      disable=not progress) as bar:
                try:
                    while block := response.read(chunk):
                        f.write(block)
                        bar.update(len(block))
                except (http.client.IncompleteRead, ConnectionError, TimeoutError):
                    pass  # the length check reports it; the partial file stays for the next try
            f.flush()
            os.fsync(f.fileno())
        return total

    def _accept(self, response, have, known):
        """(total length, offset the body starts at) of an answer, after checking it continues the `.part`."""
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None and length.isdigit() else None
        if response.status == 206:
            found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.headers.get("Content-Range") or "")
            if not found:
                self.restart = True
                raise UserError(f"{self.url} answered 206 with Content-Range "
                                f"{response.headers.get('Content-Range')!r}: not a byte range; it was not used "
                                "(rerun to download from the start)")
            first, last, total = map(int, found.groups())
            expected_total = known["length"] if known else None
            fresh = _validators(response.headers)
            changed = known and any(known.get(k) and fresh[k] and known[k] != fresh[k] for k in fresh)
            if first != have or last != total - 1 or (length is not None and length != last - first + 1) \
                    or (expected_total is not None and total != expected_total) or changed:
                self.restart = True
                raise UserError(f"{self.url} answered bytes {first}-{last}/{total} (Content-Length {length}) to a "
                                f"request for bytes {have}- of {expected_total} bytes: not the continuation of "
                                f"{self.part.name}; it was not used (rerun to download from the start)")
        else:
            if response.status != 200:
                raise UserError(f"{self.url}: HTTP {response.status}, expected 200 or 206")
            first, total = 0, length  # a server that ignores ranges: start again
        if total is None and not self.remote.checksum:
            raise UserError(f"{self.url} sends no length and no checksum is known for {self.dest.name}: a cut "
                            "transfer could not be told from a whole one, so nothing was downloaded")
        if total is not None and self.remote.size is not None and total != self.remote.size:
            raise UserError(f"{self.url} serves {total:,} bytes, expected {self.remote.size:,}: another file; "
                            "nothing was downloaded")
        write_json(self.record, {"url": self.url, "length": total, **_validators(response.headers)})
        return total, first

    def _finish(self, total):
        got = self.part.stat().st_size
        if total is not None and got < total:
            raise UserError(f"{self.url}: the transfer stopped at {got:,} of {total:,} bytes; {self.part} is kept: "
                            "rerun to resume")
        problem = check(self.part, self.remote, self.dest.name)
        if not problem and total is not None and got != total:
            problem = f"{got:,} bytes, expected {total:,}"
        if problem:
            self._discard()
            raise UserError(f"{self.url}: the download does not match ({problem}); the partial file was deleted")
        os.replace(self.part, self.dest)
        self.record.unlink(missing_ok=True)
