"""Files of a run: image paths, atomic writes under unique temporary names, and output-folder checks.

Every file is written under a temporary name unique to this host and process, then renamed, so a
killed run leaves no partial file under a final name and two processes writing one folder never
touch each other's temporary files. A full disk is an error that leaves nothing behind.
"""

import errno
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError

HOST = socket.gethostname().replace("~", "-")
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class NoSpaceError(OSError):
    """The disk (or quota, or file-size limit) is full; what was being written was removed."""

    def __str__(self):
        return (f"no space left to write {self.filename} ({self.strerror}): free some space, then rerun the same "
                "command to resume")


def image_path(outdir, seed, subdirs=False):
    """`{seed:06d}.png`, in folders of 1000 with `subdirs`."""
    return Path(outdir) / (f"{seed // 1000 * 1000:06d}" if subdirs else "") / f"{seed:06d}.png"


def temp_path(path):
    """A temporary name beside `path`, unique to this host and process (a dot file: never a sample)."""
    path = Path(path)
    return path.with_name(f".{path.name}~{HOST}~{os.getpid()}.tmp")


def atomic_write(path, write):
    """`write(tmp)` to a temporary name, then rename it to `path`. On error nothing is left."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        if e.errno in FULL:
            raise NoSpaceError(e.errno, os.strerror(e.errno), str(path)) from None
        raise OSError(e.errno, f"cannot write it ({e.strerror or e})", str(path)) from None
    except BaseException:
        _unlink(tmp)
        raise
    return path


def _unlink(path):
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:  # e.g. a directory of that name, or a parent that is a file
        pass


def write_png(path, image):
    """uint8 [H, W, C] (C = 1 or 3) as PNG, atomically."""
    image = image.squeeze(-1) if image.shape[-1] == 1 else image
    return atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def write_text(path, text):
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, data):
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_bytes(path, data):
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def check_outputs(outputs, inputs=()):
    """UserError unless every output is a file of its own: none is (by path or by inode) one of the
    `inputs` or another output. `outputs` and `inputs` map a name (a flag) to a path or None.
    Creates nothing."""

    def same(a, b):
        a, b = Path(a), Path(b)
        if a.resolve() == b.resolve():
            return True
        try:
            return a.exists() and b.exists() and os.path.samefile(a, b)
        except OSError:
            return False

    outputs = [(k, v) for k, v in dict(outputs).items() if v]
    inputs = [(k, v) for k, v in dict(inputs).items() if v]
    for i, (name, path) in enumerate(outputs):
        for other, source in inputs + outputs[:i]:
            if same(path, source):
                raise UserError(f"{name} {path} is also {other}: it would be overwritten; give another {name}")


def write_npz(path, **arrays):
    def save(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return atomic_write(path, save)


def create_exclusive(path, text):
    """Create `path` with `text` atomically unless it exists: True if this call created it. Two
    processes racing here see exactly one winner, and nobody ever reads a half-written file."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.link(tmp, path)  # fails if `path` exists: an atomic create-if-absent
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno in FULL:
            raise NoSpaceError(e.errno, os.strerror(e.errno), str(path)) from None
        raise OSError(e.errno, f"cannot create it ({e.strerror or e})", str(path)) from None
    finally:
        _unlink(tmp)


def image_ok(path, shape=None):
    """Whether `path` is a readable image (of [H, W, C] `shape`, if given)."""
    try:
        with Image.open(path) as im:
            im.load()
            size, bands = im.size, len(im.getbands())
    except (OSError, ValueError, SyntaxError):
        return False
    return shape is None or (size[1], size[0], bands) == tuple(shape)


def remove_stale_temps(outdir):
    """Delete temporary files left in `outdir` (and its subfolders of 1000) by dead processes of this
    host; those of live processes, or of other hosts, are left alone."""
    outdir = Path(outdir)
    if not outdir.is_dir():
        return
    folders = [outdir] + [p for p in outdir.iterdir() if p.is_dir() and p.name.isdigit()]
    for folder in folders:
        for entry in os.scandir(folder):
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp")) or name.count("~") != 2:
                continue
            _, host, pid = name[:-len(".tmp")].split("~")
            if host == HOST and pid.isdigit() and not _alive(int(pid)):
                Path(entry.path).unlink(missing_ok=True)


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_outdir(outdir, needed_bytes=0, flag="--outdir"):
    """UserError unless `outdir` is (or can be created as) a writable folder with `needed_bytes` free.
    Creates nothing."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"output folder {outdir} is a file: give another {flag}")
    existing = outdir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create output folder {outdir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK) or os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise UserError(f"output folder {outdir}: {existing} is not writable; give another {flag}")
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise UserError(f"output folder {outdir}: only {free:,} bytes free, an image needs about "
                        f"{needed_bytes:,}; free some space or give another {flag}")


def json_record(*keys):
    """For `claim_outputs`: whether a file is a JSON object with these keys (a record a script wrote)."""
    def ours(path):
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and all(k in data for k in keys)
    return ours


def text_record(first):
    """For `claim_outputs`: whether a text file starts with `first` (a report a script wrote)."""
    def ours(path):
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().startswith(first)
        except (OSError, ValueError):
            return False
    return ours


def output_prefix(text, flag="--out"):
    """The prefix of a script's output files (`<prefix>.json`, ...): a file name, not a folder."""
    if not text.strip():
        raise UserError(f"{flag} is empty: name an output prefix such as results/run (or leave {flag} out)")
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.name in ("", ".", "..") or path.is_dir():
        raise UserError(f"{flag} {text} is a folder: give a prefix of file names inside it, e.g. "
                        f"{Path(text) / 'run'}")
    return path


def claim_outputs(outputs, inputs=()):
    """Before any work, UserError unless every output may be written: `outputs` maps a flag to
    (path, ours), `ours(path)` telling whether an existing file is one this script writes (then it is
    replaced; anything else is refused). No output is one of the `inputs` (flag -> path) or another
    output, and each lies in a folder that can be created and written. Creates nothing."""
    check_outputs({flag: path for flag, (path, _) in outputs.items()}, inputs)
    for flag, (path, ours) in outputs.items():
        if not path:
            continue
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{flag} {path} is a folder: give a file name")
        check_outdir(path.parent, flag=flag.split(" ")[0])
        if (path.exists() or path.is_symlink()) and not ours(path):
            raise UserError(f"{flag} {path} exists and is not a file this script writes: move it away or give "
                            f"another {flag.split(' ')[0]}")
