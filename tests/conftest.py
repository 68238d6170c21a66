import collections
import hashlib
import os
import socket
import sys
import types
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


# The tiny LDM's 8 MB Lightning-style checkpoint is not shipped either: the manifest's recipe
# (`torch.manual_seed(0)`, the model built in CompVis's order, its codebook's `uniform_` included,
# then `randomize_`) rebuilds the weights, this checksum proves it, and the file is written in the
# manifest's format (top-level keys, a `ModelCheckpoint` instance keyed by its class, pickled from a
# `pytorch_lightning` module that exists only while saving).
TINY_LDM_SHA256 = "6042729d09197e45d3a6eb48c23817abefe88c3468c50a24af9c9822788b86a4"
TINY_LDM_CKPT = FIXTURES / "ldm/tiny_ldm.ckpt"


def _tiny_ldm_state():
    import json
    import math
    import re

    from deepcache_ref.ldm.autoencoder import VectorQuantizer
    from deepcache_ref.ldm.model import build_model, to_original

    init = VectorQuantizer.__init__

    def compvis_init(self, n_embed, embed_dim):  # taming's quantizer draws its codebook at construction
        init(self, n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    VectorQuantizer.__init__ = compvis_init
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(deepcache_ref.load_config(FIXTURES / "ldm/tiny_config.yaml"))
    finally:
        VectorQuantizer.__init__ = init
    zero_init = re.compile(r"model\.diffusion_model\.(.*out_layers\.3\.|.*\.proj_out\.|out\.2\.)")  # zero_module
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # the manifest's `randomize_`
            original = to_original(name)
            if zero_init.match(original):
                p.zero_()
            if original == "first_stage_model.quantize.embedding.weight":
                p.copy_(torch.randn(p.shape, generator=gen))
            elif torch.all(p == 0):
                bound = 0.1 if p.ndim == 1 else 1 / math.sqrt(p[0].numel())
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif p.ndim == 1 and torch.all(p == 1):
                p.copy_(1 + (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)
    ours = {to_original(k): v for k, v in model.state_dict().items()}
    order = [row[0] for row in json.loads((FIXTURES / "ldm/tiny_state_dict_keys.json").read_text())["state_dict"]]
    return collections.OrderedDict((k, ours[k]) for k in order)


def _write_lightning_checkpoint(path, state):
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")
    modules = {name: types.ModuleType(name) for name in names}
    checkpoint_class = type("ModelCheckpoint", (), {"__module__": names[-1]})
    modules[names[-1]].ModelCheckpoint = checkpoint_class
    callback = checkpoint_class()
    run = "logs/2021-12-21T00-00-00_cin256-v2/checkpoints"
    callback.__dict__.update(monitor="val/loss", best_model_score=torch.tensor(0.1234),
                             best_model_path=f"{run}/last.ckpt", current_score=torch.tensor(0.1234), dirpath=run)
    sys.modules.update(modules)
    try:
        torch.save({"epoch": 4, "global_step": 123, "pytorch-lightning_version": "1.4.2", "state_dict": state,
                    "callbacks": {checkpoint_class: callback}}, path)
    finally:
        for name in names:
            del sys.modules[name]


def pytest_sessionstart(session):
    """Write the tiny LDM checkpoint where the tests (and the scripts they run) read it."""
    if TINY_LDM_CKPT.exists():
        return
    state = _tiny_ldm_state()
    if state_sha256(state) != TINY_LDM_SHA256:
        raise AssertionError("the manifest's recipe no longer rebuilds the tiny LDM's golden weights")
    tmp = TINY_LDM_CKPT.with_name(f".{TINY_LDM_CKPT.name}.{os.getpid()}.tmp")
    _write_lightning_checkpoint(tmp, state)
    os.replace(tmp, TINY_LDM_CKPT)


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


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (for a rendezvous of test processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exploit:
    """Pickles as a call to os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
