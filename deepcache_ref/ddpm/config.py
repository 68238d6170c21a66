"""The DDPM config schema: one YAML per checkpoint in `deepcache_ref/ddpm/configs/`, or a diffusers
`UNet2DModel` folder read as a config (`diffusers.py`)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from ..core.config import CheckpointConfig, SamplingConfig, load_structured, read_yaml
from ..errors import ConfigError
from . import diffusers

CONFIG_DIR = Path(__file__).parent / "configs"


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


def check_supported(cfg, source="config"):
    """Refuse values this package cannot run, naming the key."""
    d, m = cfg.diffusion, cfg.model
    if d.beta_schedule != "linear":
        raise ConfigError(f"{source}: diffusion.beta_schedule is {d.beta_schedule!r}; only 'linear' is supported")
    if d.var_type not in ("fixedlarge", "fixedsmall"):
        raise ConfigError(f"{source}: diffusion.var_type is {d.var_type!r}; use fixedlarge or fixedsmall")
    if d.num_timesteps < 1 or not 0 < d.beta_start <= d.beta_end < 1:
        raise ConfigError(f"{source}: diffusion needs num_timesteps >= 1 and 0 < beta_start <= beta_end < 1")
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"{source}: model.dropout must be in [0, 1), got {m.dropout}")
    if not m.ch_mult or min(m.ch_mult) < 1:
        raise ConfigError(f"{source}: model.ch_mult must be a non-empty list of integers >= 1, got {list(m.ch_mult)}")
    if m.resolution % 2 ** (len(m.ch_mult) - 1) or min(m.ch, m.in_channels, m.out_ch, m.num_res_blocks, m.resolution) < 1:
        raise ConfigError(f"{source}: model.resolution {m.resolution} must be divisible by 2^(len(ch_mult)-1) and "
                          "ch, in_channels, out_ch, num_res_blocks >= 1")


def load_config(path, overrides=()):
    """A validated `DDPMConfig` from a YAML file or a diffusers `UNet2DModel` folder, plus `key=value`
    overrides (finding a config by name is `deepcache_ref.load_config`'s job)."""
    path = Path(path)
    data = diffusers.config_dict(path) if path.is_dir() else read_yaml(path)
    cfg = load_structured(data, DDPMConfig, overrides, source=str(path))
    check_supported(cfg, str(path))
    return cfg

