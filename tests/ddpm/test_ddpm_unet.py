"""The DDPM U-Net: parity with the original code, key lists, MACs, DeepCache exactness."""

import json

import pytest
import torch

from conftest import FIXTURES, tiny_ddpm
from deepcache_ref import load_config
from deepcache_ref.core.macs import unet_macs
from deepcache_ref.ddpm import build_unet
from deepcache_ref.samplers.adapters import ddpm_timestep_embedding as get_timestep_embedding

REAL = {"cifar10": "cifar10", "celeba": "celeba", "lsun_church": "church", "lsun_bedroom": "bedroom"}


@pytest.mark.parametrize("name", ["T1", "T2"])
def test_forward_and_every_intermediate_match_original(name):
    unet, fwd = tiny_ddpm(name)
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, key=key: seen.__setitem__(key, out))
        for key, m in unet.named_modules() if key in fwd["intermediates"]
    ]
    out = unet(fwd["x"], fwd["t"])
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out, fwd["out"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(get_timestep_embedding(fwd["t"], unet.ch, unet.temb_freqs), fwd["temb_sinusoidal"], rtol=1e-5, atol=1e-5)
    assert list(seen) == list(fwd["intermediates"]), "modules ran in a different order"
    for key, ref in fwd["intermediates"].items():
        torch.testing.assert_close(seen[key], ref, rtol=1e-5, atol=1e-5, msg=lambda m: f"{key}: {m}")
    assert torch.equal(unet(fwd["x"], fwd["t"].float()), out), "float and long timesteps differ"


def _assert_partial_after_full_exact(unet, x, t):
    out = unet(x, t)
    for k in range(unet.num_branches):
        eps, cached = unet.forward_full(x, t, branch=k)
        assert torch.equal(eps, out), f"forward_full differs from forward (branch {k})"
        assert torch.equal(unet.forward_partial(x, t, cached, branch=k), out), f"partial != full at branch {k}"


@pytest.mark.parametrize("name", ["T1", "T2"])
def test_partial_after_full_is_bitwise_exact_tiny(name):
    unet, fwd = tiny_ddpm(name)
    assert unet.num_branches == {"T1": 4, "T2": 9}[name]
    _assert_partial_after_full_exact(unet, fwd["x"], fwd["t"])
    _assert_partial_after_full_exact(unet, fwd["x"], torch.full((2,), 900.0))


@pytest.mark.slow
def test_partial_after_full_is_bitwise_exact_cifar10_random_weights():
    torch.manual_seed(0)
    unet = build_unet(load_config("cifar10").model).eval()
    _assert_partial_after_full_exact(unet, torch.randn(1, 3, 32, 32), torch.tensor([500]))


def test_partial_pass_actually_uses_the_cache():
    unet, fwd = tiny_ddpm("T2")
    _, cached = unet.forward_full(fwd["x"], fwd["t"], branch=2)
    assert not torch.equal(unet.forward_partial(fwd["x"], fwd["t"], cached * 0.5, branch=2), fwd["out"])


def test_invalid_branch_is_a_clear_error():
    unet, fwd = tiny_ddpm("T2")
    with pytest.raises(ValueError, match=r"branches 0\.\.8"):
        unet.forward_full(fwd["x"], fwd["t"], branch=9)


@pytest.mark.slow
@pytest.mark.parametrize("config", list(REAL))
def test_real_architectures_keys_shapes_and_macs(config):
    manifest = json.loads((FIXTURES / f"ddpm/manifests/ddim_{REAL[config]}_keys.json").read_text())
    cfg = load_config(config)
    unet = build_unet(cfg.model, device="meta")
    keys = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in unet.state_dict().items()]
    assert keys == manifest["state_dict"]
    r = cfg.model.resolution
    x, t = torch.randn(1, 3, r, r, device="meta"), torch.ones(1, device="meta")
    macs = unet_macs(unet, x, t)
    assert macs["full"] == pytest.approx(manifest["macs_full_forward_b1"], rel=0.01)
    for row in manifest["deepcache"]["branches"]:  # reference branch b = cache_branch b + 1
        assert macs["partial"][row["branch"] + 1] == pytest.approx(row["partial_macs"], rel=0.01)
    assert unet.num_branches == len(manifest["hs_skip_table"])
