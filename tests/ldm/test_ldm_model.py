"""LDM-4-G: configs, safe Lightning checkpoint loading, parity of U-Net and decoder, key lists, MACs."""

import json
import sys
import types

import pytest
import torch

import deepcache_ref
from conftest import FIXTURES, Exploit, load_fixture, tiny_ldm
from deepcache_ref import CheckpointError, ConfigError, ldm
from deepcache_ref.core.macs import count_macs, unet_macs
from deepcache_ref.ldm.unet import UNetModel


def test_original_compvis_yaml_loads_as_is_and_ours_by_name():
    tiny = deepcache_ref.load_config(FIXTURES / "ldm/tiny_config.yaml")
    assert tiny.model.params.unet_config.params.model_channels == 32
    cfg = deepcache_ref.load_config("cin256-v2")
    s = cfg.sampling
    assert (s.steps, s.eta, s.scale, s.cache_branch, s.sampler) == (250, 0.0, 1.5, 0, "ddim")
    assert deepcache_ref.load_config("cin256-v2.yaml") == cfg


def test_config_errors(tmp_path):
    text = (FIXTURES / "ldm/tiny_config.yaml").read_text()
    bad = tmp_path / "typo.yaml"
    bad.write_text(text.replace("context_dim: 16", "context_dims: 16"))
    with pytest.raises(ConfigError, match="context_dims"):
        deepcache_ref.load_config(bad)
    bad.write_text(text.replace("openaimodel.UNetModel", "openaimodel.EncoderUNetModel"))
    with pytest.raises(ConfigError, match="EncoderUNetModel.*only 'ldm.modules.diffusionmodules.openaimodel.UNetModel'"):
        deepcache_ref.load_config(bad)


def test_lightning_checkpoint_loads_without_lightning(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)  # `import pytorch_lightning` now fails
    with pytest.raises(ImportError):
        import pytorch_lightning  # noqa: F401
    model = tiny_ldm()
    keys = json.loads((FIXTURES / "ldm/tiny_state_dict_keys.json").read_text())["state_dict"]
    assert [k for k, *_ in keys] == list(model.original_state_dict())


def _lightning_like(tmp_path, state_dict, callbacks):
    path = tmp_path / "model.ckpt"
    torch.save({"epoch": 1, "global_step": 2, "state_dict": state_dict, "callbacks": callbacks}, path)
    return path


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = _lightning_like(tmp_path, {"betas": torch.zeros(3)}, {"x": Exploit(marker)})
    model = ldm.build_model(deepcache_ref.load_config(FIXTURES / "ldm/tiny_config.yaml"))
    with pytest.raises(CheckpointError, match="(?s)refused.*system.*execute arbitrary code"):
        ldm.load_weights(model, path)
    assert not marker.exists()


def test_unknown_global_is_named(tmp_path, monkeypatch):
    for name in ("pytorch_lightning", "pytorch_lightning.trainer", "pytorch_lightning.trainer.states"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    Unknown = type("TrainerFn", (), {"__module__": "pytorch_lightning.trainer.states"})
    sys.modules["pytorch_lightning.trainer.states"].TrainerFn = Unknown
    path = _lightning_like(tmp_path, {"betas": torch.zeros(3)}, {"state": Unknown()})
    model = ldm.build_model(deepcache_ref.load_config(FIXTURES / "ldm/tiny_config.yaml"))
    with pytest.raises(CheckpointError, match="pytorch_lightning.trainer.states.TrainerFn"):
        ldm.load_weights(model, path)


def _tiny_state():
    return dict(tiny_ldm().original_state_dict())


def test_extra_keys_are_reported_and_missing_keys_are_an_error(tmp_path, caplog):
    state = _tiny_state()
    state["ddim_sigmas"] = torch.zeros(10)
    path = tmp_path / "extra.ckpt"
    torch.save({"state_dict": state}, path)
    model = ldm.build_model(deepcache_ref.load_config(FIXTURES / "ldm/tiny_config.yaml"))
    with caplog.at_level("WARNING", logger="deepcache_ref.ldm.model"):
        extra = ldm.load_weights(model, path)
    assert extra == ["ddim_sigmas"] and "ddim_sigmas" in caplog.text
    del state["ddim_sigmas"], state["cond_stage_model.embedding.weight"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="1 missing key.*cond_stage.embedding.weight"):
        ldm.load_weights(model, path)


def test_missing_checkpoint_names_file_source_and_size(tmp_path):
    with pytest.raises(CheckpointError, match=r"(?s)cin256-v2/model.ckpt.*ommer-lab.com.*1,827,378,153 bytes"):
        deepcache_ref.load_model("cin256-v2", ckpt_root=tmp_path)


def test_cin256v2_keys_and_macs():
    manifest = json.loads((FIXTURES / "ldm/cin256v2_manifest.json").read_text())
    model = ldm.build_model(deepcache_ref.load_config("cin256-v2"), device="meta")
    keys = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.original_state_dict().items()]
    assert keys == manifest["state_dict_keys"]
    x, t = torch.randn(1, 3, 64, 64, device="meta"), torch.full((1,), 500, device="meta")
    macs = unet_macs(model.unet, x, t, branches=[0], context=torch.randn(1, 1, 512, device="meta"))
    assert macs["full"] / 1e9 == pytest.approx(104.22, rel=0.01)
    assert macs["partial"][0] / 1e9 == pytest.approx(4.42, rel=0.01)
    assert count_macs(model.decode_first_stage, x) / 1e9 == pytest.approx(335.39, rel=0.01)


def test_unet_forward_and_every_block_match_original():
    model = tiny_ldm()
    fix = load_fixture("ldm/tiny_unet_forward.pt")
    context = model.get_learned_conditioning(fix["class_labels"])
    torch.testing.assert_close(context, fix["context"], rtol=0, atol=1e-5)
    seen = {}
    names = {"time_embed", "middle_block"} | {f"{p}.{i}" for p in ("input_blocks", "output_blocks") for i in range(4)}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: seen.__setitem__(k, o))
             for k, m in model.unet.named_modules() if k in names]
    out = model.unet(fix["x"], fix["t"], context=context)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out, fix["out"], rtol=0, atol=1e-5)
    for key, ref in fix["intermediates"].items():
        torch.testing.assert_close(seen[key], ref, rtol=0, atol=1e-5, msg=lambda m: f"{key}: {m}")


def test_decode_matches_original():
    model = tiny_ldm()
    fix = load_fixture("ldm/tiny_decode.pt")
    z_q, indices = model.first_stage.quantize(fix["z"])
    assert torch.equal(indices, fix["indices"])
    torch.testing.assert_close(model.decode_first_stage(fix["z"]), fix["image"], rtol=0, atol=1e-5)


def _assert_exact(unet, x, t, context):
    out = unet(x, t, context=context)
    for k in range(unet.num_branches):
        eps, cached = unet.forward_full(x, t, branch=k, context=context)
        assert torch.equal(eps, out), f"forward_full != forward at branch {k}"
        assert torch.equal(unet.forward_partial(x, t, cached, branch=k, context=context), out), f"branch {k}"


def test_partial_after_full_is_bitwise_exact_tiny():
    model = tiny_ldm()
    fix = load_fixture("ldm/tiny_unet_forward.pt")
    assert model.unet.num_branches == 4
    _assert_exact(model.unet, fix["x"], fix["t"], fix["context"])


@pytest.mark.slow
def test_partial_after_full_is_bitwise_exact_cin256v2_random_weights():
    u = deepcache_ref.load_config("cin256-v2").model.params.unet_config.params
    torch.manual_seed(0)
    unet = UNetModel(model_channels=u.model_channels, channel_mult=u.channel_mult, num_heads=u.num_heads,
                     attention_resolutions=u.attention_resolutions, context_dim=u.context_dim,
                     use_spatial_transformer=True).eval()
    assert unet.num_branches == 12
    _assert_exact(unet, torch.randn(1, 3, 64, 64), torch.tensor([500]), torch.randn(1, 1, 512))
