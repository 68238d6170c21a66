"""YAML configs validated by dataclass schemas (OmegaConf structured configs).

One YAML per checkpoint ships in `ddpm/configs/` (and `ldm/configs/`). A config is found by path or
by bare name (`lsun_church`, `lsun_church.yaml`); an unknown or mistyped key is an error that names
the key and the file.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config file that cannot be found, parsed or validated."""


@dataclass
class ModelConfig:
    ch: int = 128
    out_ch: int = 3
    ch_mult: List[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attn_resolutions: List[int] = field(default_factory=lambda: [16])
    dropout: float = 0.1
    resamp_with_conv: bool = True
    in_channels: int = 3
    resolution: int = 32


@dataclass
class DiffusionConfig:
    beta_schedule: str = "linear"   # betas = linspace(beta_start, beta_end, num_timesteps), float64
    beta_start: float = 0.0001
    beta_end: float = 0.02
    num_timesteps: int = 1000
    var_type: str = "fixedlarge"    # variance of the ancestral (ddpm) sampler: fixedlarge | fixedsmall


@dataclass
class SamplingConfig:
    sampler: str = "ddim"           # ddim | plms | ddpm | dpm++
    steps: int = 100                # sampler steps S
    skip_type: str = "uniform"      # timestep spacing: uniform | quad | linspace
    solver_order: int = 2           # dpm++: multistep order, 2 or 3
    eta: float = 0.0                # DDIM stochasticity (0 = deterministic)
    cache_interval: int = 1         # DeepCache N (1 = no caching)
    cache_branch: int = 2           # skip index whose consumer's input is cached
    cache_schedule: str = "uniform"  # uniform | nonuniform | power | explicit
    cache_full_steps: Optional[List[int]] = None  # explicit: the full steps (e.g. from scripts/plan.py)
    cache_center: Optional[int] = None  # nonuniform: centre step c of Eq. 7
    cache_power: Optional[float] = None  # nonuniform / power: exponent p
    batch_size: int = 64


@dataclass
class CheckpointConfig:
    file: str = ""                  # path under checkpoints/
    md5: Optional[str] = None       # expected md5; null skips the check (own checkpoints)
    size: Optional[int] = None      # expected size in bytes; null skips the check
    source: str = ""                # where to download it


@dataclass
class TrainingConfig:
    data: str = ""                  # npz with `images` (uint8 [N,H,W] or [N,H,W,C]) under the repository
    data_max: float = 255.0         # pixel value that maps to +1 (0 maps to -1)
    batch_size: int = 128
    num_steps: int = 5000
    lr: float = 2e-4                # Adam
    warmup: int = 0                 # linear learning-rate warm-up steps
    grad_clip: float = 1.0
    ema_rate: float = 0.9999
    random_flip: bool = False       # horizontal flips (not for digits)
    seed: int = 0
    save_every: int = 1000


@dataclass
class DDPMConfig:
    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def find_config(name_or_path, config_dir=CONFIG_DIR):
    """A config file by path, or by bare name in `config_dir` (with or without `.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    candidate = Path(config_dir) / f"{stem}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in Path(config_dir).glob("*.yaml")))
    raise ConfigError(f"config {str(name_or_path)!r} not found (neither a file nor a name among: {known})")


def load_structured(data, schema, overrides=(), source="config"):
    """Validate `data` (a dict or DictConfig) and `key=value` overrides against a dataclass schema."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), data, OmegaConf.from_dotlist(list(overrides)))
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"{source}: missing required key(s): {', '.join(missing)}")
        return OmegaConf.to_object(cfg)
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise ConfigError(f"{source}: unknown config key {e.full_key!r} ({str(e).splitlines()[0]})") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: invalid value for {e.full_key!r}: {str(e).splitlines()[0]}") from None


def read_yaml(path):
    try:
        data = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: not a readable YAML file ({str(e).strip().splitlines()[0] if str(e).strip() else e!r})") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: a config is a mapping of sections (model:, sampling:, ...), not a {type(data).__name__}")
    return data


def check_supported(cfg, source="config"):
    """Refuse values this package cannot run, naming the key."""
    d, m = cfg.diffusion, cfg.model
    if d.beta_schedule != "linear":
        raise ConfigError(f"{source}: diffusion.beta_schedule is {d.beta_schedule!r}; only 'linear' is supported")
    if d.var_type not in ("fixedlarge", "fixedsmall"):
        raise ConfigError(f"{source}: diffusion.var_type is {d.var_type!r}; use fixedlarge or fixedsmall")
    if d.num_timesteps < 1 or not 0 < d.beta_start <= d.beta_end < 1:
        raise ConfigError(f"{source}: diffusion needs num_timesteps >= 1 and 0 < beta_start <= beta_end < 1")
    if not m.ch_mult or min(m.ch_mult) < 1:
        raise ConfigError(f"{source}: model.ch_mult must be a non-empty list of integers >= 1, got {list(m.ch_mult)}")
    if m.resolution % 2 ** (len(m.ch_mult) - 1) or min(m.ch, m.in_channels, m.out_ch, m.num_res_blocks, m.resolution) < 1:
        raise ConfigError(f"{source}: model.resolution {m.resolution} must be divisible by 2^(len(ch_mult)-1) and "
                          "ch, in_channels, out_ch, num_res_blocks >= 1")


def load_config(name_or_path, overrides=()):
    """A validated `DDPMConfig` from a config path, a bare name or a diffusers `UNet2DModel` folder,
    plus `key=value` overrides."""
    from . import diffusers

    if diffusers.is_folder(name_or_path):
        path, data = Path(name_or_path), diffusers.config_dict(name_or_path)
    else:
        path = find_config(name_or_path)
        data = read_yaml(path)
    cfg = load_structured(data, DDPMConfig, overrides, source=str(path))
    check_supported(cfg, str(path))
    return cfg

