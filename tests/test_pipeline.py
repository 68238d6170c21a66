"""The library pipeline: family objects, one sampling path, fingerprints, lazy seeds, atomic files,
gloo bookkeeping."""

import os
import resource
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import deepcache_ref
from conftest import free_port, tiny_ldm
from deepcache_ref import FastPath, Pipeline, SeedRanges, build_model, check_sampling, ddpm, load_config
from deepcache_ref.runs.files import NoSpaceError, create_exclusive, image_ok, remove_stale_temps, temp_path, write_png
from deepcache_ref.runs.record import default_outdir, first_difference, run_settings
from deepcache_ref.samplers import CacheSchedule, DiffusionModel, PerImageRNG, ddim_sample, ddpm_sample, make_timesteps


def _t1_model(t1_run):
    cfg_path, ckpt = t1_run
    cfg = load_config(cfg_path)
    return deepcache_ref.load_model(cfg, ckpt), cfg


def test_both_families_load_as_the_same_shape_of_thing(t1_run):
    pixel, _ = _t1_model(t1_run)
    latent = tiny_ldm()
    for model in (pixel, latent):
        assert isinstance(model, DiffusionModel) and not model.training and len(model.alphas_cumprod) == 1000
        x, t, kw = model.unet_inputs(2)
        assert model.unet(x, t, **kw).shape == x.shape
    assert (pixel.timestep_offset, pixel.final_alpha_cumprod, pixel.num_classes) == (0, 1.0, 0)
    assert latent.timestep_offset == 1 and latent.num_classes == latent.uncond_class
    assert latent.final_alpha_cumprod == float(latent.alphas_cumprod[0])
    assert latent.timesteps(10) == list(range(1, 1000, 100))


def test_pipeline_equals_the_sampler_called_by_hand_bit_for_bit(t1_run):
    model, cfg = _t1_model(t1_run)
    s = replace(cfg.sampling, steps=10, cache_interval=3, cache_branch=1)
    seeds = [3, 7]
    ours = Pipeline(model).sample_x0(seeds, s)
    x_T = PerImageRNG(seeds).randn((2, 3, 16, 16))
    by_hand = ddim_sample(model.unet, x_T, make_timesteps(10), ddpm.alphas_cumprod(cfg.diffusion),
                          cache=CacheSchedule(3, 1))
    assert torch.equal(ours, by_hand)


def test_ldm_pipeline_guides_decodes_and_matches_by_hand():
    model = tiny_ldm()
    cfg = model.config
    s = replace(cfg.sampling, steps=5, scale=3.0, cache_interval=2)
    pipe = Pipeline(model)
    seeds, classes = [1, 2], [7, 9]
    x0 = pipe.sample_x0(seeds, s, classes=classes)
    denoiser, kw = model.denoiser([classes[s % 2] for s in seeds], 3.0)
    by_hand = ddim_sample(denoiser, PerImageRNG(seeds).randn((2, *model.sample_shape)), model.timesteps(5),
                          model.alphas_cumprod, cache=CacheSchedule(2, 0), **kw)
    assert torch.equal(x0, by_hand)
    images = pipe.to_images(x0)
    assert images.dtype == np.uint8 and images.shape == (2, 32, 32, 3)


def test_ancestral_sampler_uses_the_familys_variance(t1_run):
    model, cfg = _t1_model(t1_run)
    s = replace(cfg.sampling, sampler="ddpm", steps=5, cache_interval=1)
    ours = Pipeline(model).sample_x0([0], s)
    rng = PerImageRNG([0])
    x_T = rng.randn((1, 3, 16, 16))
    by_hand = ddpm_sample(model.unet, x_T, model.timesteps(5), model.alphas_cumprod, var_type="fixedlarge",
                          noise_fn=rng.randn_like)
    assert torch.equal(ours, by_hand)


def test_num_timesteps_of_the_config_makes_the_timesteps(tmp_path):
    cfg = load_config("digits", ["diffusion.num_timesteps=500"])
    model = build_model(cfg, "meta")
    assert len(model.alphas_cumprod) == 500 and model.timesteps(10) == list(range(0, 500, 50))
    with pytest.raises(ValueError, match="1..500"):
        check_sampling(model, replace(cfg.sampling, steps=600))


def test_cache_schedule_is_plain_data():
    c = CacheSchedule(5, 2, "nonuniform", center=40, power=1.4)
    assert replace(c, interval=3) == CacheSchedule(3, 2, "nonuniform", center=40, power=1.4)
    assert eval(repr(c), {"CacheSchedule": CacheSchedule}) == c and hash(c) == hash(replace(c))
    e = CacheSchedule(kind="explicit", explicit_steps=[0, 4, 9])
    assert e.explicit_steps == (0, 4, 9) and e.full_steps(10) == [0, 4, 9]
    with pytest.raises(ValueError, match="finite power"):
        replace(c, power=float("nan"))


def test_seed_ranges_are_lazy_and_exact():
    seeds = SeedRanges.parse("0-999999999")
    assert seeds.count == 10**9 and seeds.num_batches(64) == 15625000
    assert seeds.batch(15624999, 64) == list(range(999999936, 10**9))
    mixed = SeedRanges.parse("10-19,0,5,3-6")
    assert list(mixed) == [0, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19] and str(mixed) == "0,3-6,10-19"
    assert [mixed[i] for i in range(mixed.count)] == list(mixed)
    assert SeedRanges.parse(str(2**63 - 1)).first(1) == [2**63 - 1]
    with pytest.raises(ValueError, match="out of range"):
        SeedRanges.parse(str(2**63))


def test_settings_name_every_difference_and_folders_follow_them(t1_run):
    model, cfg = _t1_model(t1_run)
    _, ckpt = t1_run

    def settings(c=cfg, fast=FastPath(), device="cpu", classes=None, subdirs=False):
        timesteps, full = check_sampling(model, c.sampling)
        return run_settings(c, ckpt, timesteps, full, fast, torch.device(device), classes, subdirs)

    base = settings()
    assert first_difference(base, settings()) is None
    batch = load_config(t1_run[0], ["sampling.batch_size=7"])
    assert first_difference(base, settings(batch)) is None  # the batch size makes no image
    eta = load_config(t1_run[0], ["sampling.eta=0.5"])
    assert first_difference(base, settings(eta)) == ("config.sampling.eta", 0.0, 0.5)
    assert first_difference(base, settings(fast=FastPath(precision="bf16")))[0] == "precision"
    folders = {default_outdir("out", c, settings(c)) for c in (cfg, eta, batch)}
    assert len(folders) == 2


def test_atomic_files_leave_nothing_on_a_full_disk(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # files may not grow beyond 1000 bytes
    try:
        with pytest.raises(NoSpaceError, match="no space left to write .*000001.png"):
            write_png(tmp_path / "000001.png", image)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []
    write_png(tmp_path / "000001.png", image)
    assert image_ok(tmp_path / "000001.png", (64, 64, 3)) and not image_ok(tmp_path / "000001.png", (32, 32, 3))
    (tmp_path / "000002.png").write_bytes((tmp_path / "000001.png").read_bytes()[:300])
    assert not image_ok(tmp_path / "000002.png")


def test_create_exclusive_has_one_winner_and_stale_temps_of_dead_processes_go(tmp_path):
    assert create_exclusive(tmp_path / "settings.json", "first")
    assert not create_exclusive(tmp_path / "settings.json", "second")
    assert (tmp_path / "settings.json").read_text() == "first" and len(list(tmp_path.iterdir())) == 1
    mine = temp_path(tmp_path / "000001.png")
    mine.write_bytes(b"mine")
    dead = tmp_path / mine.name.replace(f"~{os.getpid()}.", "~999999999.")
    dead.write_bytes(b"dead")
    other_host = tmp_path / ".000002.png~another-host~1.tmp"
    other_host.write_bytes(b"theirs")
    remove_stale_temps(tmp_path)
    assert mine.exists() and other_host.exists() and not dead.exists()


def _rank(rank, port, device_name, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    from deepcache_ref.runs.distributed import Ranks

    ranks = Ranks.from_env().init()
    backend = torch.distributed.get_backend(ranks.group)
    results[rank] = (backend, ranks.max(rank + 1), ranks.sum(0.5), ranks.max_float(rank * 2.0))
    ranks.close()


@pytest.mark.slow
def test_bookkeeping_runs_on_gloo_with_cpu_tensors_whatever_the_sampling_device():
    """The collectives take CPU tensors on a gloo group, which accepts them, also for CUDA runs:
    NCCL (which refuses CPU tensors) is never used."""
    port = free_port()
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(port, "cuda:0", results), nprocs=2)
    assert dict(results) == {0: ("gloo", 2, 1.0, 2.0), 1: ("gloo", 2, 1.0, 2.0)}


def test_library_refuses_invalid_arguments_instead_of_returning_noise(t1_run):
    model, cfg = _t1_model(t1_run)
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="no timesteps"):
        ddim_sample(model.unet, x, [], model.alphas_cumprod)
    with pytest.raises(ValueError, match="eta must be"):
        ddim_sample(model.unet, x, [0, 10], model.alphas_cumprod, eta=float("nan"))
    with pytest.raises(ValueError, match="0..999"):
        ddim_sample(model.unet, x, [0, 1000], model.alphas_cumprod)
    with pytest.raises(ValueError, match="out of range"):
        PerImageRNG([2**63])
    with pytest.raises(ValueError, match="unconditional"):
        model.denoiser(labels=[1])
    with pytest.raises(ValueError, match="class labels must be in"):
        tiny_ldm().denoiser(labels=[5000])
    with pytest.raises(ValueError, match="batch size"):
        check_sampling(model, replace(cfg.sampling, batch_size=0))
