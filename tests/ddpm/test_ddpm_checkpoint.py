"""Checkpoint loading: the original layouts load; every bad file gives an error a user can act on."""


import pytest
import torch

from conftest import FIXTURES, Exploit, tiny_ddpm
from deepcache_ref import CheckpointError, load_config, load_model
from deepcache_ref.core.checkpoint import check_state_dict, md5sum
from deepcache_ref.ddpm import build_unet, load_weights
from deepcache_ref.ddpm.model import known_unets


def _fresh(name):
    unet, _ = tiny_ddpm(name)
    for p in unet.parameters():
        p.zero_()
    return unet


def test_plain_state_dict_with_md5(tmp_path):
    src = tmp_path / "T2_state_dict.pt"
    torch.save(tiny_ddpm("T2")[0].state_dict(), src)
    unet = load_weights(_fresh("T2"), src, md5=md5sum(src))
    ref = torch.load(src, weights_only=True)
    assert all(torch.equal(v, ref[k]) for k, v in unet.state_dict().items())


def test_ddim_ckpt_list_uses_ema_and_strips_module_prefix(tmp_path, caplog):
    ref = torch.load(FIXTURES / "ddpm/tiny/T1_state_dict.pt", weights_only=True)
    raw = {f"module.{k}": torch.zeros_like(v) for k, v in ref.items()}
    path = tmp_path / "ckpt.pth"
    torch.save([raw, {"state": {}, "param_groups": []}, 3, 1200, dict(ref)], path)
    with caplog.at_level("INFO", logger="deepcache_ref.ddpm.checkpoint"):
        unet = load_weights(_fresh("T1"), path)
    assert all(torch.equal(v, ref[k]) for k, v in unet.state_dict().items())
    assert "EMA" in caplog.text
    torch.save([raw, {}, 3, 1200], path)  # no EMA state: the raw weights, prefix stripped
    unet = load_weights(_fresh("T1"), path)
    assert all(float(v.abs().sum()) == 0 for v in unet.state_dict().values())


def test_missing_file_names_file_source_and_md5(tmp_path):
    cfg = load_config("cifar10")
    with pytest.raises(CheckpointError) as e:
        load_model(cfg, ckpt_root=tmp_path)
    msg = str(e.value)
    assert "model-790000.ckpt" in msg and cfg.checkpoint.source in msg and cfg.checkpoint.md5 in msg


def test_md5_mismatch_says_how_to_skip(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(torch.load(FIXTURES / "ddpm/tiny/T1_state_dict.pt", weights_only=True), path)
    with pytest.raises(CheckpointError, match="md5 mismatch.*checkpoint.md5=null"):
        load_weights(_fresh("T1"), path, md5="0" * 32)


def test_truncated_file(tmp_path):
    data = (FIXTURES / "ddpm/tiny/T1_state_dict.pt").read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_weights(_fresh("T1"), path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_weights(_fresh("T1"), path)


def test_other_architecture_lists_keys_counts_and_hint(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_weights(_fresh("T2"), FIXTURES / "ddpm/tiny/T1_state_dict.pt", known_models={"T1": _fresh("T1")})
    msg = str(e.value)
    assert "missing key(s)" in msg and "shape mismatch" in msg and "match the `T1` config" in msg
    celeba = build_unet(load_config("celeba").model, "meta").state_dict()
    cifar10 = build_unet(load_config("cifar10").model, "meta")
    with pytest.raises(CheckpointError, match="match the `celeba` config"):
        check_state_dict(cifar10, celeba, known_models=known_unets())


def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"conv_in.weight": torch.zeros(1), "payload": Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="(?s)refused.*system.*execute arbitrary code"):
        load_weights(_fresh("T1"), path)
    assert not marker.exists()
