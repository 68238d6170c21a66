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


def test_a_config_is_what_you_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config file some/dir/cifar10.yaml not found"):
        load_config("some/dir/cifar10.yaml")  # a path that does not exist is never the bundled cifar10
    (tmp_path / "cifar10").mkdir()
    with pytest.raises(ConfigError, match="not a diffusers UNet2DModel folder.*config.json and scheduler_config.json"):
        load_config("cifar10")  # a folder of that name here is what was named
    (tmp_path / "digits.yaml").write_text((CONFIG_DIR / "digits.yaml").read_text().replace("steps: 100", "steps: 7"))
    assert load_config("digits.yaml").sampling.steps == 7 and load_config("digits").sampling.steps == 100
    with pytest.raises(ConfigError, match="no config given"):
        load_config("")


def test_the_families_registry_reads_each_yaml_by_its_form(tmp_path):
    from deepcache_ref.families import FAMILIES, family_of

    assert family_of(load_config("cin256-v2")).name == "ldm" and family_of(load_config("digits")).name == "ddpm"
    odd = tmp_path / "odd.yaml"
    odd.write_text("model: 5\n")  # neither form: the DDPM schema names the bad key
    with pytest.raises(ConfigError, match="odd.yaml"):
        load_config(odd)
    assert [f.name for f in FAMILIES][-1] == "ddpm"  # the family that takes what no other claims comes last
