"""Config + weights -> images for seeds, for any model family (DDPM, LDM-4-G), with the fast paths,
run fingerprints, lazy seed ranges, multi-process bookkeeping and FID. Used by `scripts/` and
importable without them:

    from pipeline import Pipeline, load_config, load_model
    cfg = load_config("digits")
    pipe = Pipeline(load_model(cfg))
    images = pipe.sample(range(16), cfg.sampling)         # uint8 [16, 8, 8, 1]
"""

from .fast import FastPath
from .models import CHECKPOINTS, build_model, checkpoint_file, load_config, load_model
from .pipeline import Pipeline, check_sampling, class_labels, to_uint8
from .record import first_difference, run_settings
from .seeds import SeedRanges

__version__ = "0.2.0"  # part of every run's fingerprint: bump it when the images change

__all__ = ["Pipeline", "FastPath", "SeedRanges", "load_config", "load_model", "build_model", "checkpoint_file",
           "check_sampling", "class_labels", "to_uint8", "run_settings", "first_difference", "CHECKPOINTS"]
