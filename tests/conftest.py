import hashlib
import os
from pathlib import Path

import pytest
import torch

import deepcache_ref

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(relpath):
    return torch.load(FIXTURES / relpath, map_location="cpu", weights_only=True)


# T2's 6.5 MB of weights are not shipped: the manifest's recipe (`torch.manual_seed(0)`, then the
# model) rebuilds them, and this checksum of the golden file proves it did.
T2_SHA256 = "398c8a65b3a5b303a9c4ef7ce920bb872619cc36303a762f928691616d56b275"


def state_sha256(state_dict):
    h = hashlib.sha256()
    for k, v in state_dict.items():
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def tiny_ddpm(name):
    """(UNet with the golden weights, forward fixture) for tiny model T1 or T2."""
    from deepcache_ref.ddpm import UNet

    fwd = load_fixture(f"ddpm/tiny/{name}_forward.pt")
    c = fwd["config"]["model"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet(
            ch=c["ch"], out_ch=c["out_ch"], ch_mult=c["ch_mult"], num_res_blocks=c["num_res_blocks"],
            attn_resolutions=c["attn_resolutions"], dropout=c["dropout"], resamp_with_conv=c["resamp_with_conv"],
            in_channels=c["in_channels"], resolution=fwd["config"]["data"]["image_size"],
        )
    if name == "T1":
        unet.load_state_dict(load_fixture("ddpm/tiny/T1_state_dict.pt"), strict=True)
    elif state_sha256(unet.state_dict()) != T2_SHA256:
        raise AssertionError("torch.manual_seed(0) + UNet no longer rebuilds T2's golden weights (has torch's "
                             "default initialisation changed?); copy T2_state_dict.pt from the reference fixtures")
    return unet.eval(), fwd


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def tiny_ldm():
    """The tiny LDM of the fixtures, loaded from its Lightning-style checkpoint."""
    return deepcache_ref.load_model(FIXTURES / "ldm/tiny_config.yaml", FIXTURES / "ldm/tiny_ldm.ckpt")


REPO = FIXTURES.parent.parent
SCRIPTS = REPO / "scripts"


@pytest.fixture
def t1_run(tmp_path):
    """A config + checkpoint for the tiny T1 U-Net, for script tests: (config path, ckpt path)."""
    ckpt = tmp_path / "t1.ckpt"
    ckpt.write_bytes((FIXTURES / "ddpm/tiny/T1_state_dict.pt").read_bytes())
    cfg = tmp_path / "t1.yaml"
    cfg.write_text(
        "name: t1\n"
        "model: {ch: 32, out_ch: 3, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [8], dropout: 0.0,"
        " resolution: 16}\n"
        "sampling: {steps: 10, batch_size: 2, cache_interval: 3, cache_branch: 1}\n"
        "checkpoint: {file: t1.ckpt}\n"
    )
    return cfg, ckpt


class Exploit:
    """Pickles as a call to os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
