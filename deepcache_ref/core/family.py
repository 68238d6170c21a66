"""What a model family is: the protocol every entry of `deepcache_ref.families.FAMILIES` follows.

A family (the Ho et al. DDPMs, LDM-4-G, ...) is one subpackage plus one `ModelFamily` object, and
nothing above `families.py` ever names a family. Its object answers:

* `name`, `config_type` (the config schema, a dataclass with `name`, `sampling` and `checkpoint`
  sections) and `config_dir` (its bundled YAMLs, found by bare name);
* `recognises(path, data)`: whether a config file (`data`, its parsed YAML) or a folder (`data` is
  None) is one of this family's;
* `load_config(path, overrides)`: the validated config of a file or folder it recognises;
* `build_model(cfg, device=None)`: a `samplers.DiffusionModel` with random weights (`device="meta"`
  allocates nothing), whose `.unet` follows the U-Net contract;
* `load_weights(model, path)`: the checkpoint at `path` (existence, size and md5 already checked)
  read safely into `model`, strictly;
* `samplers`: the sampler names it supports (None: all of them); `guidance`: whether its sampling
  section has a classifier-free guidance `scale` that the pipeline applies.
"""


class ModelFamily:
    name = ""
    config_type = None
    config_dir = None
    samplers = None  # None: every registered sampler; else a tuple of names
    guidance = False

    def recognises(self, path, data):
        raise NotImplementedError

    def load_config(self, path, overrides=()):
        raise NotImplementedError

    def build_model(self, cfg, device=None):
        raise NotImplementedError

    def load_weights(self, model, path):
        raise NotImplementedError

    def supports(self, sampler_name):
        return self.samplers is None or sampler_name in self.samplers

    def bundled_configs(self):
        return sorted(self.config_dir.glob("*.yaml"))

    def __repr__(self):
        return f"<model family {self.name}>"
