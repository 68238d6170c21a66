"""Configs and models of every family, found by name or path; no family is named above this file."""

from pathlib import Path

import ddpm
import ldm
from ddpm.checkpoint import CheckpointError, check_file
from ddpm.config import ConfigError, find_config, read_yaml
from ddpm.diffusers import WEIGHTS, is_folder, weights_file
from ddpm.model import CHECKPOINTS

FAMILIES = {ddpm.DDPMConfig: ddpm, ldm.LDMConfig: ldm}  # config schema -> package


def _family(cfg):
    try:
        return FAMILIES[type(cfg)]
    except KeyError:
        raise ValueError(f"not a config of a known model family: {type(cfg).__name__}") from None


def load_config(name_or_path, overrides=()):
    """A validated config (`DDPMConfig` or `LDMConfig`) by bare name or YAML path, plus `key=value`
    overrides. A YAML with `model.target` / `model.params` is a CompVis (LDM) config."""
    for item in overrides:
        if "=" not in str(item):
            raise ConfigError(f"expected key=value, got {item!r}")
    path = Path(name_or_path)
    if path.is_dir():  # a diffusers UNet2DModel folder
        return ddpm.load_config(path, overrides)
    if path.is_file():
        model = read_yaml(path).get("model", {}) or {}
        family = ldm if "target" in model or "params" in model else ddpm
        return family.load_config(path, overrides)
    for family in FAMILIES.values():
        try:
            found = find_config(name_or_path, family.config.CONFIG_DIR)
        except ConfigError:
            continue
        return family.load_config(found, overrides)
    known = sorted(p.stem for f in FAMILIES.values() for p in Path(f.config.CONFIG_DIR).glob("*.yaml"))
    repo = next((r for r in download_names() if str(name_or_path).rstrip("/").endswith(r)), None)
    if repo:
        raise ConfigError(f"diffusers folder {name_or_path} not found: run `python scripts/download.py {repo}` "
                          f"(it writes {CHECKPOINTS / repo})")
    raise ConfigError(f"config {str(name_or_path)!r} not found (neither a file nor one of: {', '.join(known)})")


def download_names():
    from .download import NAMES

    return NAMES


def downloadable(name):
    """Whether `scripts/download.py NAME` can fetch this name (some configs have no direct link)."""
    from .download import remotes

    try:
        return bool(remotes(name))
    except ValueError:
        return False


def build_model(cfg, device=None):
    """The config's model with random weights (`device="meta"` allocates nothing)."""
    return _family(cfg).build_model(cfg, device)


def checkpoint_file(cfg, ckpt=None, ckpt_root=CHECKPOINTS):
    """The checkpoint to load, checked (exists, size, md5 as the config says) before it is read.
    A `ckpt` of one's own skips the config's size and md5."""
    c = cfg.checkpoint
    if ckpt is not None:
        check_file(ckpt)
        return Path(ckpt)
    path = Path(ckpt_root) / c.file
    if is_folder(path.parent) and path.name in WEIGHTS:
        path = weights_file(path.parent)  # a diffusers folder: .safetensors, else .bin
    try:
        check_file(path, c.md5, c.source, c.size)
    except CheckpointError as e:
        if not path.exists() and downloadable(cfg.name):
            raise CheckpointError(f"{e} Or run: python scripts/download.py {cfg.name}") from None
        raise
    return path


def load_model(cfg, ckpt=None, ckpt_root=CHECKPOINTS, device="cpu"):
    """The config's model in eval mode with its weights (`ckpt`, or the config's file)."""
    path = checkpoint_file(cfg, ckpt, ckpt_root)
    return _family(cfg).load_model(cfg, path, device=device)
