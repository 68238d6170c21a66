"""The model families, one registry, and the family-agnostic way to a config and a model.

`FAMILIES` lists one `ModelFamily` object per family (the protocol is `core/family.py`'s
docstring); nothing above this file names a family. A config is what you name: a file or folder
that exists is used as it is (a YAML file, or a diffusers folder); otherwise a bare name (`cifar10`,
`cifar10.yaml`: no `/`, no leading `.`) is a bundled config of some family, and anything else is a
path that does not exist, which is an error.
"""

import os
from pathlib import Path

from .catalogue import DIFFUSERS_REPOS, downloadable
from .core.checkpoint import BUNDLED, check_file, checkpoint_root
from .core.config import read_yaml
from .ddpm import FAMILY as DDPM
from .ddpm.diffusers import WEIGHTS, is_folder, weights_file
from .errors import CheckpointError, ConfigError, UserError
from .ldm import FAMILY as LDM

FAMILIES = (LDM, DDPM)  # in order: a config belongs to the first that recognises it; DDPM takes the rest


def family_of(cfg):
    """The family whose schema `cfg` is."""
    for family in FAMILIES:
        if type(cfg) is family.config_type:
            return family
    raise ConfigError(f"not a config of a known model family: {type(cfg).__name__} (use deepcache_ref.load_config)")


def _bundled(name):
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    for family in FAMILIES:
        path = family.config_dir / f"{stem}.yaml"
        if path.is_file():
            return family, path
    return None, None


def _looks_like_path(text):
    return "/" in text or "\\" in text or text.startswith(".") or text.endswith((".yml", ".json"))


def load_config(name_or_path, overrides=()):
    """A validated config by bare name, YAML path or diffusers folder, plus `key=value` overrides."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"a config is a bundled name or a path, got {type(name_or_path).__name__}")
    if isinstance(overrides, (str, bytes)) or not hasattr(overrides, "__iter__"):
        raise ConfigError(f"overrides are a list of key=value strings, got {overrides!r}")
    for item in overrides:
        if "=" not in str(item):
            raise ConfigError(f"expected key=value, got {item!r}")
    text = str(name_or_path)
    path = Path(name_or_path)
    if not text.strip():
        raise ConfigError("no config given: name a bundled config (e.g. digits) or a YAML file")
    if not _looks_like_path(text) and not path.exists():
        family, found = _bundled(text)
        if family is None:
            known = sorted(p.stem for f in FAMILIES for p in f.bundled_configs())
            raise ConfigError(f"config {text!r} not found (neither a file nor one of: {', '.join(known)})")
        return family.load_config(found, overrides)
    if path.is_dir():
        family = next((f for f in FAMILIES if f.recognises(path, None)), None)
        if family is None:
            raise ConfigError(f"{path} is a folder but not a diffusers UNet2DModel folder (it needs config.json and "
                              "scheduler_config.json)")
        return family.load_config(path, overrides)
    if not path.is_file():
        repo = next((r for r in DIFFUSERS_REPOS if text.rstrip("/").endswith(r)), None)
        if repo:
            raise ConfigError(f"diffusers folder {text} not found: run `python scripts/download.py {repo}` "
                              f"(it writes {checkpoint_root() / repo})")
        raise ConfigError(f"config file {text} not found (a bare name like `digits` is a bundled config)")
    data = read_yaml(path)
    family = next(f for f in FAMILIES if f.recognises(path, data))
    return family.load_config(path, overrides)


def build_model(cfg, device=None):
    """The config's model with random weights (`device="meta"` allocates nothing)."""
    return family_of(cfg).build_model(cfg, device)


def checkpoint_file(cfg, ckpt=None, ckpt_root=None):
    """The checkpoint to load, checked (exists, size, md5 as the config says) before it is read.
    A `ckpt` of one's own skips the config's size and md5; a bundled file is found in the package."""
    c = cfg.checkpoint
    if ckpt is not None:
        check_file(ckpt)
        return Path(ckpt)
    path = (BUNDLED if c.bundled else Path(ckpt_root or checkpoint_root())) / c.file
    if is_folder(path.parent) and path.name in WEIGHTS:
        path = weights_file(path.parent)  # a diffusers folder: .safetensors, else .bin
    try:
        check_file(path, c.md5, c.source, c.size)
    except CheckpointError as e:
        if not path.exists() and downloadable(cfg.name, c.source):
            raise CheckpointError(f"{e} Or run: python scripts/download.py {cfg.name}") from None
        raise
    return path


def load_model(config, ckpt=None, *, ckpt_root=None, overrides=(), device="cpu"):
    """The model of `config` (a bare name, a path or a loaded config) in eval mode, with its weights:
    `ckpt`, or the config's checkpoint under `ckpt_root` (default `core.checkpoint.checkpoint_root()`).
    `deepcache_ref.load_model("digits")` is the built-in model."""
    cfg = load_config(config, overrides) if isinstance(config, (str, Path)) else config
    if overrides and cfg is config:
        raise UserError("overrides apply to a config name or path; apply them before loading a config object")
    family = family_of(cfg)
    path = checkpoint_file(cfg, ckpt, ckpt_root)
    model = family.build_model(cfg)
    family.load_weights(model, path)
    return model.to(device).eval()
