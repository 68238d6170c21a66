"""Fast paths: torch.compile captures full and partial passes as static graphs; reduced precision
and channels_last stay close to eager fp32; interval 1 stays bit-identical to no cache."""

import sys

import pytest
import torch

from conftest import SCRIPTS, tiny_ddpm
from ddpm import DDPMConfig
from ddpm.model import alphas_cumprod
from samplers import CacheSchedule, ddim_sample, make_timesteps

sys.path.insert(0, str(SCRIPTS))
import check_fast_paths  # noqa: E402

ALPHAS = alphas_cumprod(DDPMConfig().diffusion)


@pytest.mark.slow
def test_compiled_passes_are_static_graphs_and_match_eager():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    unet, _ = tiny_ddpm("T2")
    x_T, seq = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), make_timesteps(10)
    cache = CacheSchedule(3, 2)
    eager = ddim_sample(unet, x_T, seq, ALPHAS, cache=cache)
    for name in ("forward", "forward_full", "forward_partial"):
        setattr(unet, name, torch.compile(getattr(unet, name), dynamic=False, fullgraph=True))  # no graph breaks
    compiled = ddim_sample(unet, x_T, seq, ALPHAS, cache=cache)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 3, f"expected one graph per pass (forward, full, partial), got {graphs}"
    assert not counters["graph_break"]
    torch._dynamo.config.error_on_recompile = True
    try:  # other inputs and timesteps: no recompilation
        ddim_sample(unet, x_T * 0.5, make_timesteps(10, offset=1), ALPHAS, cache=cache)
    finally:
        torch._dynamo.config.error_on_recompile = False
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-3)


def test_reduced_precision_and_channels_last_match_eager_fp32(tmp_path):
    cfg = tmp_path / "t2.yaml"
    cfg.write_text("name: t2\nmodel: {ch: 32, ch_mult: [1, 2, 2], num_res_blocks: 2, attn_resolutions: [8],"
                   " dropout: 0.0, resolution: 16}\nsampling: {cache_branch: 2}\n")
    res = check_fast_paths.check(str(cfg), [(None, False, "bf16"), (None, True, "fp32"), (None, True, "bf16")],
                                 branches=[0, 2], batch_size=2)
    assert res["interval_1_equals_no_cache_bitwise"]
    assert res["ok"], res
