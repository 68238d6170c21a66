"""LDM configs: an original CompVis latent-diffusion YAML of the cin256-v2 family, as it is.

The `model:` block (`target`, `params` with `unet_config`, `first_stage_config`,
`cond_stage_config` and the schedule) is validated against the dataclasses below; `target` strings
are compared with the classes this package implements, never imported. Two optional sections of
our own may follow: `sampling:` (defaults for scripts) and `checkpoint:` (file, md5, source). The
training-only sections `data:` and `lightning:` of some CompVis configs are accepted and ignored.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from ..core.config import CheckpointConfig, SamplingConfig, load_structured, read_yaml
from ..errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"

LATENT_DIFFUSION = "ldm.models.diffusion.ddpm.LatentDiffusion"
UNET = "ldm.modules.diffusionmodules.openaimodel.UNetModel"
VQ = "ldm.models.autoencoder.VQModelInterface"
CLASS_EMBEDDER = "ldm.modules.encoders.modules.ClassEmbedder"


@dataclass
class UNetParams:
    image_size: int = 64
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 192
    attention_resolutions: List[int] = field(default_factory=lambda: [8, 4, 2])
    num_res_blocks: int = 2
    channel_mult: List[int] = field(default_factory=lambda: [1, 2, 3, 5])
    num_heads: int = -1
    num_head_channels: int = -1
    use_spatial_transformer: bool = True
    transformer_depth: int = 1
    context_dim: Optional[int] = 512
    dropout: float = 0.0
    conv_resample: bool = True
    dims: int = 2
    use_checkpoint: bool = False      # gradient checkpointing: no effect on sampling
    use_fp16: bool = False
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    legacy: bool = True
    num_heads_upsample: int = -1
    num_classes: Optional[int] = None  # class labels into the time embedding (ADM-style; not with crossattn)
    use_new_attention_order: bool = False
    n_embed: Optional[int] = None     # codebook prediction: not supported


@dataclass
class UNetSection:
    target: str = UNET
    params: UNetParams = field(default_factory=UNetParams)


@dataclass
class DDConfig:
    double_z: bool = False
    z_channels: int = 3
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: List[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: List[int] = field(default_factory=list)
    dropout: float = 0.0


@dataclass
class FirstStageParams:
    embed_dim: int = 3
    n_embed: int = 8192
    ddconfig: DDConfig = field(default_factory=DDConfig)
    lossconfig: Any = None            # training loss: not built
    monitor: Optional[str] = None


@dataclass
class FirstStageSection:
    target: str = VQ
    params: FirstStageParams = field(default_factory=FirstStageParams)


@dataclass
class ClassEmbedderParams:
    n_classes: int = 1001
    embed_dim: int = 512
    key: str = "class_label"


@dataclass
class CondStageSection:
    target: str = CLASS_EMBEDDER
    params: ClassEmbedderParams = field(default_factory=ClassEmbedderParams)


@dataclass
class LatentDiffusionParams:
    linear_start: float = 0.0015
    linear_end: float = 0.0195
    timesteps: int = 1000
    beta_schedule: str = "linear"
    parameterization: str = "eps"
    conditioning_key: Optional[str] = "crossattn"
    scale_factor: float = 1.0
    scale_by_std: bool = False
    image_size: int = 64
    channels: int = 3
    num_timesteps_cond: int = 1
    log_every_t: int = 100
    first_stage_key: str = "image"
    cond_stage_key: str = "class_label"
    cond_stage_trainable: bool = False
    monitor: Optional[str] = None
    use_ema: bool = True
    loss_type: str = "l2"
    unet_config: UNetSection = field(default_factory=UNetSection)
    first_stage_config: FirstStageSection = field(default_factory=FirstStageSection)
    cond_stage_config: CondStageSection = field(default_factory=CondStageSection)


@dataclass
class ModelSection:
    base_learning_rate: float = 1e-4
    target: str = LATENT_DIFFUSION
    params: LatentDiffusionParams = field(default_factory=LatentDiffusionParams)


@dataclass
class LDMSamplingConfig(SamplingConfig):
    steps: int = 250
    scale: float = 1.0                # classifier-free guidance scale (1 = no guidance)
    cache_branch: int = 0


@dataclass
class LDMConfig:
    name: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    sampling: LDMSamplingConfig = field(default_factory=LDMSamplingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    data: Any = None                  # CompVis training sections, ignored
    lightning: Any = None


def _require(source, what, value, expected):
    if value != expected:
        raise ConfigError(f"{source}: {what} is {value!r}; only {expected!r} is supported")


def check_supported(cfg, source="config"):
    """Refuse settings of the original classes that this package does not implement."""
    p = cfg.model.params
    _require(source, "model.target", cfg.model.target, LATENT_DIFFUSION)
    _require(source, "unet_config.target", p.unet_config.target, UNET)
    _require(source, "first_stage_config.target", p.first_stage_config.target, VQ)
    _require(source, "cond_stage_config.target", p.cond_stage_config.target, CLASS_EMBEDDER)
    _require(source, "conditioning_key", p.conditioning_key, "crossattn")
    _require(source, "parameterization", p.parameterization, "eps")
    _require(source, "beta_schedule", p.beta_schedule, "linear")
    _require(source, "scale_by_std", p.scale_by_std, False)
    if p.timesteps < 1 or not 0 < p.linear_start <= p.linear_end < 1:
        raise ConfigError(f"{source}: model.params needs timesteps >= 1 and 0 < linear_start <= linear_end < 1 "
                          f"(got {p.timesteps}, {p.linear_start}, {p.linear_end})")
    u = p.unet_config.params
    if u.model_channels < 1 or not u.channel_mult or min(u.channel_mult) < 1 or u.num_res_blocks < 1:
        raise ConfigError(f"{source}: unet_config.params needs model_channels, channel_mult entries and "
                          "num_res_blocks >= 1")
    for key, expected in [("use_spatial_transformer", True), ("dims", 2), ("use_fp16", False), ("num_classes", None),
                          ("n_embed", None)]:  # the U-Net's other options (scale-shift, updown, ...) are all built
        _require(source, f"unet_config.params.{key}", getattr(u, key), expected)
    if not 0 <= u.dropout < 1:
        raise ConfigError(f"{source}: unet_config.params.dropout must be in [0, 1), got {u.dropout}")
    if (u.num_heads == -1) == (u.num_head_channels == -1):
        raise ConfigError(f"{source}: set exactly one of unet_config.params.num_heads and num_head_channels")


def load_config(path, overrides=()):
    """A validated `LDMConfig` from a CompVis YAML file, plus `key=value` overrides (finding a config
    by name is `deepcache_ref.load_config`'s job)."""
    cfg = load_structured(read_yaml(path), LDMConfig, overrides, source=str(path))
    check_supported(cfg, str(path))
    return cfg
