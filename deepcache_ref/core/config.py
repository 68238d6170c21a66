"""Config helpers shared by the model families: YAML files validated by dataclass schemas
(OmegaConf structured configs), found by path or by bare name, and the sections every family has.

An unknown or mistyped key is an error that names the key and the file.
"""

from dataclasses import dataclass, make_dataclass
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ..errors import ConfigError
from ..samplers.registry import all_options


@dataclass
class _SamplingBase:
    sampler: str = "ddim"           # a name in deepcache_ref.samplers.SAMPLERS: ddim | plms | ddpm | dpm++
    steps: int = 100                # sampler steps S
    skip_type: str = "uniform"      # timestep spacing: uniform | quad | linspace
    cache_interval: int = 1         # DeepCache N (1 = no caching)
    cache_branch: int = 2           # skip index whose consumer's input is cached
    cache_schedule: str = "uniform"  # uniform | nonuniform | power | explicit
    cache_full_steps: Optional[List[int]] = None  # explicit: the full steps (e.g. from scripts/plan.py)
    cache_center: Optional[int] = None  # nonuniform: centre step c of Eq. 7
    cache_power: Optional[float] = None  # nonuniform / power: exponent p
    batch_size: int = 64


# The `sampling:` section: the keys above plus every sampler's own options (`eta` of ddim,
# `solver_order` of dpm++, ...), taken from the sampler registry.
def _option_fields():
    fields = [(o.key, o.type, o.default) for o in all_options()]
    clash = [key for key, _, default in fields if key in _SamplingBase.__dataclass_fields__ or default is None]
    assert not clash, f"sampler options must have new keys and non-None defaults: {clash}"
    return fields


SamplingConfig = make_dataclass("SamplingConfig", _option_fields(), bases=(_SamplingBase,),
                                namespace={"__module__": __name__})


@dataclass
class CheckpointConfig:
    file: str = ""                  # path under the checkpoints root (deepcache_ref.core.checkpoint.checkpoint_root())
    bundled: bool = False           # the file ships inside the package (deepcache_ref/checkpoints/)
    md5: Optional[str] = None       # expected md5; null skips the check (own checkpoints)
    size: Optional[int] = None      # expected size in bytes; null skips the check
    source: str = ""                # where to download it


def load_structured(data, schema, overrides=(), source="config"):
    """Validate `data` (a dict or DictConfig) and `key=value` overrides against a dataclass schema."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), data, OmegaConf.from_dotlist(list(overrides)))
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"{source}: missing required key(s): {', '.join(missing)}")
        return OmegaConf.to_object(cfg)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = str(e.full_key)
        key = key if len(key) <= 60 else key[:57] + "..."
        raise ConfigError(f"{source}: unknown config key {key!r}: a config has the sections of its family "
                          "(model:, sampling:, ...)") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: invalid value for {e.full_key!r}: {str(e).splitlines()[0]}") from None


def read_yaml(path):
    try:
        data = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: not a readable YAML file ({str(e).strip().splitlines()[0] if str(e).strip() else e!r})") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: a config is a mapping of sections (model:, sampling:, ...), not a {type(data).__name__}")
    if len(data) == 0:
        raise ConfigError(f"{path} is empty: a config is a mapping of sections (model:, sampling:, ...)")
    return data
