"""Reading checkpoint files safely (never unpickling code), with errors a user can act on, and
where checkpoints live.

`checkpoint_root()` is where downloaded weights go and are looked for (`checkpoint.file` of a
config is relative to it): `$DEEPCACHE_CHECKPOINTS` when set, else the `checkpoints/` folder of the
source checkout this package runs from, else `./checkpoints`; it is read at each use. `BUNDLED` holds the weights that ship inside
the package (the built-in digits model; configs say `checkpoint.bundled: true`).
"""

import contextlib
import functools
import hashlib
import logging
import os
import pickle
import re
from pathlib import Path

import torch

from ..errors import CheckpointError

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parent.parent / "checkpoints"


def checkpoint_root():
    """The folder that configs' checkpoint files are relative to (see the module docstring)."""
    if os.environ.get("DEEPCACHE_CHECKPOINTS"):
        return Path(os.environ["DEEPCACHE_CHECKPOINTS"]).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "checkpoints").is_dir():
        return checkout / "checkpoints"
    return Path.cwd() / "checkpoints"


def md5sum(path):
    """The md5 of a file (remembered while its size and modification time stay the same)."""
    st = Path(path).stat()
    return _md5(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _md5(path, size, mtime_ns, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _first_line(e):
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def check_file(path, md5=None, source="", size=None):
    """Existence, (optional) size and (optional) md5 of a checkpoint file, before unpickling it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        expect = ", ".join(x for x in [f"md5 {md5}" if md5 else "", f"{size:,} bytes" if size else ""] if x)
        expect = f" ({expect})" if expect else ""
        where = f" Download it from {source}{expect} and put it at that path." if source else ""
        raise CheckpointError(f"checkpoint not found: {path}.{where}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download failed; fetch it again")
    if size and path.stat().st_size != size:
        raise CheckpointError(
            f"{path} has {path.stat().st_size:,} bytes, expected {size:,}: the download is incomplete or "
            "it is another file; for your own checkpoint skip the check with `checkpoint.size=null`."
        )
    if md5:
        actual = md5sum(path)
        if actual != md5:
            raise CheckpointError(
                f"md5 mismatch for {path}: expected {md5}, got {actual}. The file is incomplete or a "
                "different checkpoint; for your own checkpoint skip the check with "
                "`checkpoint.md5=null` (or md5=None in Python)."
            )


def safe_load(path, safe_globals=()):
    """`torch.load(weights_only=True)` with errors that say why a file was refused.

    `safe_globals` lists harmless stand-in classes whose `__module__.__qualname__` names a global the
    file may contain (used for Lightning checkpoints); nothing from the file is imported or run.
    """
    allowed = getattr(torch.serialization, "safe_globals", None)  # a context manager from torch 2.5 on
    if allowed is None:
        torch.serialization.add_safe_globals(list(safe_globals))
        allowed = lambda _: contextlib.nullcontext()  # noqa: E731
    try:
        with allowed(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"refused to load {path}: it pickles the Python object `{found.group(1)}`, which is not "
                "tensor data. Unpickling it could execute arbitrary code, so the file was not loaded."
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # zip, EOF and unpickler errors of a truncated or foreign file
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: it is truncated, corrupt or another kind of "
            f"file ({_first_line(e)})"
        ) from None


def _preview(keys, n=5):
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_state_dict(model, state, path="checkpoint", known_models=None):
    """Raise a CheckpointError naming missing/unexpected keys and shape mismatches.

    `known_models` maps config names to models (on `meta` is enough) for a hint when the state
    dict belongs to another known architecture.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {got[k]} != {expected[k]}" for k in expected if k in got and got[k] != expected[k]]
    if not (missing or unexpected or shapes):
        expected_float = {k for k, v in model.state_dict().items() if v.is_floating_point()}
        kind = next((k for k, v in state.items() if k in expected_float and not v.is_floating_point()), None)
        if kind is not None:
            raise CheckpointError(f"{path}: {kind} holds {state[kind].dtype} values where the model has floating-point "
                                  "weights: not a checkpoint of this model")
        bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise CheckpointError(f"{path} is corrupt: {bad} holds NaN or infinite values")
        return
    lines = [f"{path} does not fit the model:"]
    if missing:
        lines.append(f"  {len(missing)} missing key(s): {_preview(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    if shapes:
        lines.append(f"  {len(shapes)} shape mismatch(es) (checkpoint != model): {_preview(shapes, 3)}")
    for name, other in (known_models or {}).items():
        if {k: tuple(v.shape) for k, v in other.state_dict().items()} == got:
            lines.append(f"  hint: these weights match the `{name}` config; use --config {name}")
            break
    raise CheckpointError("\n".join(lines))


def read_safetensors(path):
    """A safetensors file's tensors (the format holds data only: nothing can execute)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: truncated, corrupt or another kind of "
                              f"file ({_first_line(e)})") from None
