"""Configs: found by name or path, validated against the schema, overridable."""

import pytest

from deepcache_ref import ConfigError, load_config
from deepcache_ref.ddpm.config import CONFIG_DIR


def test_found_by_bare_name_with_suffix_and_by_path():
    by_name = load_config("lsun_church")
    assert load_config("lsun_church.yaml") == by_name == load_config(str(CONFIG_DIR / "lsun_church.yaml"))
    assert by_name.model.resolution == 256 and by_name.diffusion.var_type == "fixedsmall"


def test_paper_table2_sampling_defaults():
    for name in ["cifar10", "celeba", "lsun_church", "lsun_bedroom"]:
        s = load_config(name).sampling
        assert (s.sampler, s.steps, s.eta, s.cache_branch) == ("ddim", 100, 0.0, 2)
    assert load_config("cifar10").sampling.skip_type == "quad"
    assert load_config("lsun_bedroom").sampling.skip_type == "uniform"


def test_unknown_key_in_file_is_named(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text((CONFIG_DIR / "cifar10.yaml").read_text().replace("num_res_blocks", "num_resblocks"))
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'model\.num_resblocks'"):
        load_config(path)


def test_overrides_and_their_errors():
    assert load_config("cifar10", ["sampling.cache_interval=5"]).sampling.cache_interval == 5
    with pytest.raises(ConfigError, match="sampling.cache_intervall"):
        load_config("cifar10", ["sampling.cache_intervall=5"])
    with pytest.raises(ConfigError, match="sampling.steps"):
        load_config("cifar10", ["sampling.steps=many"])


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="cifar10.*lsun_church"):
        load_config("lsun_churhc")
