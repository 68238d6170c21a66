"""Fast paths: torch.compile captures full and partial passes as static graphs; reduced precision
and channels_last stay close to eager fp32; interval 1 stays bit-identical to no cache; a whole-run
CUDA graph replays the sampling loop (on a GPU) and impossible settings are refused."""


import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from conftest import tiny_ddpm, tiny_ldm
from deepcache_ref import FastPath
from deepcache_ref.ddpm import DDPMConfig
from deepcache_ref.ddpm.model import alphas_cumprod
from deepcache_ref.evaluation.fast_paths import check_fast_paths
from deepcache_ref.samplers import CacheSchedule, ClassifierFreeGuidance, GraphedRun, ddim_sample, make_timesteps

ALPHAS = alphas_cumprod(DDPMConfig().diffusion)


def _model(kind):
    """(U-Net whose passes get compiled, denoiser the sampler calls, x_T, sampler keyword arguments)."""
    gen = torch.Generator().manual_seed(0)
    if kind == "ddpm":
        unet, _ = tiny_ddpm("T2")
        return unet, unet, torch.randn(2, 3, 16, 16, generator=gen), {}
    lm = tiny_ldm()
    c, uc = (lm.get_learned_conditioning(torch.tensor(y)) for y in ([1, 2], [lm.uncond_class]))
    return lm.unet, ClassifierFreeGuidance(lm.unet, 2.0, uc), torch.randn(2, *lm.latent_shape, generator=gen), \
        {"model_kwargs": {"context": c}}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ddpm", "ldm"])
def test_compiled_passes_are_static_graphs_and_match_eager(kind):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    unet, denoiser, x_T, kw = _model(kind)
    seq, cache = make_timesteps(10), CacheSchedule(3, 2)
    eager = ddim_sample(denoiser, x_T, seq, ALPHAS, cache=cache, **kw)
    for name in ("forward", "forward_full", "forward_partial"):
        setattr(unet, name, torch.compile(getattr(unet, name), dynamic=False, fullgraph=True))  # no graph breaks
    compiled = ddim_sample(denoiser, x_T, seq, ALPHAS, cache=cache, **kw)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 3, f"expected one graph per pass (forward, full, partial), got {graphs}"
    assert not counters["graph_break"]
    torch._dynamo.config.error_on_recompile = True
    try:  # other inputs and timesteps: no recompilation
        ddim_sample(denoiser, x_T * 0.5, make_timesteps(10, offset=1), ALPHAS, cache=cache, **kw)
    finally:
        torch._dynamo.config.error_on_recompile = False
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_reduced_precision_and_channels_last_match_eager_fp32(tmp_path):
    cfg = tmp_path / "t2.yaml"
    cfg.write_text("name: t2\nmodel: {ch: 32, ch_mult: [1, 2, 2], num_res_blocks: 2, attn_resolutions: [8],"
                   " dropout: 0.0, resolution: 16}\nsampling: {cache_branch: 2}\n")
    res = check_fast_paths(str(cfg), [FastPath.parse(v) for v in ("eager:bf16", "eager:fp32:cl", "eager:bf16:cl")],
                                 branches=[0, 2], batch_size=2)
    assert res["interval_1_equals_no_cache_bitwise"]
    assert res["ok"], res


class HostWork(TorchDispatchMode):
    """Counts the ops whose results land off the `meta` device, where model and inputs live."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(o, torch.Tensor) and o.device.type != "meta" for o in tree_leaves(out)):
            self.ops.append(str(func))
        return out


@pytest.mark.parametrize("model", ["ddpm", "ldm"])
def test_sampling_loop_does_no_host_work_per_step(model):
    """No host tensors, copies to the device or synchronisations inside the loop: with everything on
    `meta`, the ops that touch the host are the set-up's alone, the same for 4 steps and for 12."""
    if model == "ddpm":
        unet, kwargs, shape = tiny_ddpm("T1")[0].to("meta"), {}, (3, 16, 16)
    else:
        lm = tiny_ldm().to("meta")
        c, uc = (lm.get_learned_conditioning(torch.tensor(y, device="meta")) for y in ([1, 2], [lm.uncond_class]))
        unet, kwargs, shape = ClassifierFreeGuidance(lm.unet, 2.0, uc), {"model_kwargs": {"context": c}}, lm.latent_shape
    x_T = torch.zeros(2, *shape, device="meta")
    host = {}
    for steps in (4, 12):
        with HostWork() as work:
            ddim_sample(unet, x_T, make_timesteps(steps), ALPHAS, cache=CacheSchedule(3, 1), **kwargs)
        host[steps] = work.ops
    assert host[4] == host[12], host


@pytest.mark.parametrize("device,mode,sampler,eta,message", [
    ("cpu", None, "ddim", 0.0, "CUDA graphs need a CUDA device"),
    ("cuda", "reduce-overhead", "ddim", 0.0, "already records each pass as a CUDA graph"),
    ("cuda", None, "ddpm", 0.0, "needs a run that draws no noise"),
    ("cuda", None, "ddim", 0.5, "needs a run that draws no noise"),
])
def test_impossible_cuda_graph_settings_are_refused_before_any_work(device, mode, sampler, eta, message):
    s = DDPMConfig().sampling
    s.sampler, s.eta = sampler, eta
    with pytest.raises(ValueError, match=message):
        FastPath(mode, "fp32", cuda_graph=True).check(device, s)
    with pytest.raises(ValueError, match="CUDA tensors"):
        GraphedRun(lambda x: x + 1, torch.zeros(2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_whole_run_cuda_graph_replays_the_loop_for_new_inputs():
    unet, _ = tiny_ddpm("T2")
    unet = unet.cuda()
    seq, cache = make_timesteps(10), CacheSchedule(3, 2)
    x1, x2 = torch.randn(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        run = GraphedRun(lambda x: ddim_sample(unet, x, seq, ALPHAS, cache=cache), x1)
        for x in (x1, x2):
            torch.testing.assert_close(run(x), ddim_sample(unet, x, seq, ALPHAS, cache=cache), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="does not match the captured"):
            run(x1[:1])


def test_variant_names_round_trip_and_typos_are_refused():
    for text in ("eager:fp32", "reduce-overhead:fp16", "default:bf16:cl", "default:fp16:cl:graph"):
        assert str(FastPath.parse(text)) == text
    for bad in ("eager", "eager:fp8", "eager:fp32:nhwc", "eager:fp32:cl:cl", "fast:fp16", "reduce-overhead:fp16:graph"):
        with pytest.raises(ValueError):
            FastPath.parse(bad)
