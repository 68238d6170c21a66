"""DeepCache (Ma, Fang, Wang, CVPR 2024) for the original DDPM and LDM-4-G checkpoints.

    import deepcache_ref
    cfg = deepcache_ref.load_config("digits")                 # a bundled name, a YAML path or a diffusers folder
    pipe = deepcache_ref.Pipeline(deepcache_ref.load_model(cfg))
    images = pipe.sample(range(16), cfg.sampling)             # uint8 [16, 8, 8, 1]

Library: `ddpm/`, `ldm/` (the model families, registered in `families.py`), `samplers/` (the sampler
registry, the cache executor and schedules), `pipeline.py`, `fast.py`, `seeds.py`. Run machinery:
`runs/`. Evaluation: `evaluation/`. Errors a user can cause: `errors.py`.
"""

from .errors import CheckpointError, ConfigError, UserError
from .families import FAMILIES, build_model, checkpoint_file, load_config, load_model
from .fast import FastPath
from .pipeline import Pipeline, check_sampling, class_labels, to_uint8
from .samplers import SAMPLERS, CacheExecutor, CacheSchedule
from .seeds import SeedRanges

# Part of every run's fingerprint: bump it when the images or the settings record change.
# 0.3.0: the record keeps only the run's own sampler's options.
__version__ = "0.3.0"

__all__ = ["Pipeline", "load_config", "load_model", "build_model", "checkpoint_file", "check_sampling", "class_labels",
           "to_uint8", "FastPath", "SeedRanges", "CacheSchedule", "CacheExecutor", "SAMPLERS", "FAMILIES",
           "UserError", "ConfigError", "CheckpointError"]
