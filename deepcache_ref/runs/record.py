"""A run is a fingerprint of its settings.

`run_settings` resolves everything that determines a run's images: the config after overrides
(training-only sections, the checkpoint's file name and the batch size left out), the checkpoint's
identity (md5 and size), timesteps and full steps, classes, device type, precision and fast paths,
the file layout and the code version. The first run in a folder writes them to `settings.json`
(atomically: whichever process comes first); every later run into that folder must match them,
or it is refused, naming the first setting that differs. Seeds are not settings: the array tasks of
one job write disjoint seed ranges into one folder. Nor are the batch size and the number of
processes, which change an image by float rounding at most.
"""

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

from ..core.checkpoint import md5sum
from ..errors import UserError
from ..samplers import SAMPLERS, sampler
from .files import create_exclusive

SETTINGS = "settings.json"
NOT_SETTINGS = ("name", "checkpoint", "training", "data", "lightning")  # config sections that make no image


def run_settings(cfg, checkpoint, timesteps, full_steps, fast, device, classes=None, subdirs=False):
    """The settings that determine the images of a run, as plain JSON data (nested dicts)."""
    from .. import __version__

    config = OmegaConf.to_container(OmegaConf.structured(cfg))
    config = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
    config["sampling"].pop("batch_size")
    own = {o.key for o in sampler(cfg.sampling.sampler).options}
    for key in {o.key for spec in SAMPLERS.values() for o in spec.options} - own:  # other samplers' options
        config["sampling"].pop(key)
    return {
        "code_version": __version__,
        "config": config,
        "checkpoint": checkpoint_identity(checkpoint),
        "timesteps": list(timesteps),
        "full_steps": list(full_steps),
        "classes": None if classes is None else list(classes),
        "device_type": device.type,
        "precision": fast.precision,
        "compile": fast.compile_mode,
        "channels_last": fast.channels_last,
        "cuda_graph": fast.cuda_graph,
        "subdirs": subdirs,
    }


def checkpoint_identity(path):
    """What identifies a checkpoint's weights: its md5 and size (not its name or folder)."""
    if path is None:
        return None
    return {"md5": md5sum(path), "bytes": Path(path).stat().st_size}


def fingerprint(settings):
    """A short hash of the settings (part of the default folder name)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def default_outdir(root, cfg, settings):
    """`<root>/<config>/<sampler>-S<steps>-N<interval>-k<branch>-<fingerprint>`: differs whenever the
    settings do."""
    s = cfg.sampling
    return Path(root) / (cfg.name or "run") / (f"{s.sampler}-S{s.steps}-N{s.cache_interval}-k{s.cache_branch}-"
                                               f"{fingerprint(settings)}")


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def first_difference(recorded, current):
    """(key, recorded value, current value) of the first setting that differs, or None."""
    a, b = dict(_flat(recorded)), dict(_flat(current))
    for key in list(a) + [k for k in b if k not in a]:
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            return key, a.get(key, "<absent>"), b.get(key, "<absent>")
    return None


def _short(v, n=60):
    text = json.dumps(v)
    return text if len(text) <= n else text[:n - 3] + "..."


def read_settings(folder, name=SETTINGS):
    """The settings recorded in `folder` (in the record `name`), or None where none are."""
    path = Path(folder) / name
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is unreadable or not a settings record: move it away (or give another "
                        "output folder)") from None


def check_settings(outdir, settings):
    """UserError unless `outdir` is new or was made with exactly `settings`. Creates nothing."""
    outdir = Path(outdir)
    recorded = read_settings(outdir)
    if recorded is None:
        if outdir.is_dir() and (next(outdir.glob("[0-9]*.png"), None) or next(outdir.glob("[0-9]*/[0-9]*.png"), None)):
            raise UserError(f"{outdir} holds images but no {SETTINGS}: it was not made by this version, so its "
                            "settings are unknown; give another --outdir")
        return
    if recorded.get("code_version") != settings["code_version"]:
        raise UserError(f"{outdir} was made by deepcache_ref {recorded.get('code_version')}, whose settings record "
                        f"differs from this version's ({settings['code_version']}); its images may differ too: give "
                        "another --outdir (or finish that run with the version that started it)")
    diff = first_difference(recorded, settings)
    if diff:
        key, old, new = diff
        raise UserError(f"{outdir} was made with {key}={_short(old)}, this run has {key}={_short(new)}: give another "
                        "--outdir (or the same settings to continue that run)")


def record_settings(outdir, settings, info=None):
    """Write `settings.json` if absent (atomically; the first process wins), then check it."""
    text = json.dumps({"settings": settings, "created_by": info or {}}, indent=2, default=str) + "\n"
    create_exclusive(Path(outdir) / SETTINGS, text)
    check_settings(outdir, settings)
