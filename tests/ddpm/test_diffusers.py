"""Diffusers UNet2DModel folders: the tiny folder computes diffusers' own outputs, the Hub configs
build our architectures key for key, legacy names load, and what cannot be represented is refused."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import deepcache_ref
from conftest import FIXTURES
from deepcache_ref import CheckpointError, ConfigError, Pipeline, build_model, load_config
from deepcache_ref.ddpm.diffusers import config_dict
from deepcache_ref.samplers import ddim_sample, make_timesteps

TINY = FIXTURES / "diffusers/tiny_ddpm"
HUB = FIXTURES / "diffusers/hub_configs"


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def tiny():
    return deepcache_ref.load_model(TINY), torch.load(TINY / "golden.pt", weights_only=True)


def test_tiny_folder_matches_diffusers_eps_and_ddim_run(tiny):
    model, golden = tiny
    assert rel(model.unet(golden["x"], golden["t"]), golden["eps"]) < 1e-5
    assert model.var_type == "fixedlarge" and model.config.model.attn_resolutions == [8]
    timesteps = make_timesteps(10)
    assert timesteps[::-1] == golden["ddim_timesteps"]
    x0 = ddim_sample(model.unet, golden["ddim_x_T"], timesteps, model.alphas_cumprod)
    assert rel(x0, golden["ddim_x_0"]) < 1e-5


def test_tiny_folder_partial_after_full_is_exact_for_every_branch(tiny):
    model, golden = tiny
    x, t = golden["x"], golden["t"]
    full = model.unet(x, t)
    for k in range(model.unet.num_branches):
        eps, cached = model.unet.forward_full(x, t, branch=k)
        assert torch.equal(eps, full) and torch.equal(model.unet.forward_partial(x, t, cached, branch=k), full), k


@pytest.mark.parametrize("repo,ours", [("ddpm-cifar10-32", "cifar10"), ("ddpm-church-256", "lsun_church"),
                                       ("ddpm-bedroom-256", "lsun_bedroom"), ("ddpm-celebahq-256", "celebahq")])
def test_hub_configs_build_our_architectures_key_for_key(tmp_path, repo, ours):
    folder = tmp_path / repo
    shutil.copytree(HUB / repo, folder)
    theirs = build_model(load_config(folder), "meta").unet.state_dict()
    mine = build_model(load_config(ours), "meta").unet.state_dict()
    assert [(k, v.shape) for k, v in theirs.items()] == [(k, v.shape) for k, v in mine.items()]
    cfg = load_config(folder)
    assert cfg.diffusion.var_type == load_config(ours).diffusion.var_type


def test_a_sample_from_the_folder_runs_through_the_pipeline(tiny):
    cfg = load_config(TINY, ["sampling.steps=4", "sampling.cache_interval=2", "sampling.cache_branch=1"])
    images = Pipeline(deepcache_ref.load_model(cfg)).sample([0, 1], cfg.sampling)
    assert images.shape == (2, 16, 16, 3)


def _legacy(state):
    names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    out = {}
    for k, v in state.items():
        for new, old in names.items():
            k = k.replace(f".{new}.", f".{old}.")
        out[k] = v
    return out


def test_legacy_attention_names_in_a_bin_file_load(tmp_path, tiny):
    model, golden = tiny
    folder = tmp_path / "old_upload"
    folder.mkdir()
    for f in ("config.json", "scheduler_config.json"):
        shutil.copy(TINY / f, folder / f)
    legacy = _legacy(load_file(str(TINY / "diffusion_pytorch_model.safetensors")))
    assert any(".query." in k for k in legacy)
    torch.save(legacy, folder / "diffusion_pytorch_model.bin")
    old = deepcache_ref.load_model(folder)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), model.state_dict().values()))


def test_diffusers_weights_with_one_of_our_configs(tmp_path, tiny):
    model, golden = tiny
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\nmodel: {ch: 32, ch_mult: [1, 2], num_res_blocks: 2, attn_resolutions: [8], dropout: 0.0,"
                   " resolution: 16}\n")
    ours = deepcache_ref.load_model(cfg, TINY / "diffusion_pytorch_model.safetensors")
    assert torch.equal(ours.unet(golden["x"], golden["t"]), model.unet(golden["x"], golden["t"]))


@pytest.mark.parametrize("field,value", [("resnet_time_scale_shift", "scale_shift"), ("attention_head_dim", 8),
                                         ("flip_sin_to_cos", True), ("freq_shift", 0),
                                         ("down_block_types", ["DownBlock2D", "CrossAttnDownBlock2D"]),
                                         ("norm_eps", 1e-5)])
def test_unrepresentable_configs_are_refused_naming_the_field(tmp_path, field, value):
    folder = tmp_path / "f"
    shutil.copytree(TINY, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg[field] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=field):
        config_dict(folder)


def test_an_older_upload_without_fields_takes_diffusers_defaults(tmp_path):
    folder = tmp_path / "f"
    shutil.copytree(TINY, folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["flip_sin_to_cos"]  # diffusers' default is True: not this U-Net
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="flip_sin_to_cos is True"):
        config_dict(folder)


def test_mismatched_or_corrupt_weights_are_short_errors(tmp_path):
    folder = tmp_path / "f"
    shutil.copytree(TINY, folder)
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    del state["conv_out.bias"]
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing key.*conv_out.bias"):
        deepcache_ref.load_model(folder)
    data = (TINY / "diffusion_pytorch_model.safetensors").read_bytes()
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        deepcache_ref.load_model(folder)
