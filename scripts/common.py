"""What the scripts share: config dispatch, one sampling pipeline for DDPM and LDM, seeds,
distributed set-up, atomic image writing, run records, and the Fréchet distance."""

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .`

import ddpm  # noqa: E402
import ldm  # noqa: E402
from ddpm.checkpoint import check_file  # noqa: E402
from ddpm.config import ConfigError, find_config, read_yaml  # noqa: E402
from samplers import (CacheSchedule, ClassifierFreeGuidance, GraphedRun, PerImageRNG, ddim_sample,  # noqa: E402
                      ddpm_sample, make_timesteps, plms_sample)

CHECKPOINTS = REPO / "checkpoints"
SAMPLERS = {"ddim": ddim_sample, "plms": plms_sample, "ddpm": ddpm_sample}
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that record CUDA graphs


class UsageError(ValueError):
    """Bad command-line input: reported in one line, before any model work."""


# -- configs ----------------------------------------------------------------------------------

def config_kind(name_or_path):
    """'ddpm' or 'ldm', and the config file."""
    for kind, configs in (("ddpm", ddpm.config.CONFIG_DIR), ("ldm", ldm.config.CONFIG_DIR)):
        try:
            path = find_config(name_or_path, configs)
        except ConfigError:
            continue
        if Path(name_or_path).is_file():  # a path: an LDM config has model.target / model.params
            model = read_yaml(path).get("model", {}) or {}
            return ("ldm" if "target" in model or "params" in model else "ddpm"), path
        return kind, path
    known = sorted(p.stem for d in (ddpm.config.CONFIG_DIR, ldm.config.CONFIG_DIR) for p in Path(d).glob("*.yaml"))
    raise ConfigError(f"config {str(name_or_path)!r} not found (neither a file nor one of: {', '.join(known)})")


def load_any_config(name_or_path, overrides=()):
    kind, path = config_kind(name_or_path)
    return kind, (ldm if kind == "ldm" else ddpm).load_config(path, overrides)


def cache_schedule(s):
    """The `CacheSchedule` of a sampling config section."""
    return CacheSchedule(s.cache_interval, s.cache_branch, s.cache_schedule, center=s.cache_center, power=s.cache_power)


# -- the sampling pipeline --------------------------------------------------------------------

class Pipeline:
    """A model from a config, ready to turn seeds into uint8 images.

    DDPM: the U-Net samples pixels directly (CompVis offset 0, final alpha_bar 1).
    LDM: guided U-Net in latent space (timesteps + 1, final alpha_bar = alphas_cumprod[0]), then the
    VQ decoder. Classes for LDM come from the seed: class(s) = classes[s % len(classes)].
    """

    def __init__(self, kind, cfg, device="cpu", ckpt=None, random_init=False, seed=0):
        self.kind, self.cfg, self.device = kind, cfg, torch.device(device)
        if kind == "ddpm":
            if random_init:
                torch.manual_seed(seed)
                self.unet = ddpm.build_unet(cfg.model)
            else:
                self.unet, _ = ddpm.load_model(cfg, ckpt, ckpt_root=CHECKPOINTS)
            self.unet = self.unet.to(self.device).eval()
            self.alphas_cumprod = ddpm.alphas_cumprod(cfg.diffusion)
            self.final_alpha_cumprod, self.offset = 1.0, 0
            m = cfg.model
            self.shape = (m.in_channels, m.resolution, m.resolution)
            self.num_classes = 0
        else:
            if random_init:
                torch.manual_seed(seed)
                self.model = ldm.build_model(cfg)
            else:
                self.model = ldm.load_model(cfg, ckpt, ckpt_root=CHECKPOINTS)
            self.model = self.model.to(self.device).eval()
            self.unet = self.model.unet
            self.alphas_cumprod = self.model.alphas_cumprod.cpu()
            self.final_alpha_cumprod, self.offset = float(self.alphas_cumprod[0]), 1
            self.shape = self.model.latent_shape
            self.num_classes = self.model.uncond_class
            with torch.no_grad():  # the guidance's unconditional context, made once
                self.uncond = self.model.get_learned_conditioning(torch.tensor([self.num_classes], device=self.device))
        self.channels_last, self.cuda_graph, self.graphs = False, False, {}

    def optimize(self, compile_mode=None, channels_last=False, cuda_graph=False):
        """The fast paths, each optional (`check_fast_path` says which combinations work).

        compile_mode: `torch.compile` the three passes (static graphs: one per pass and branch), one of
        COMPILE_MODES (those in CUDA_GRAPH_MODES also record each pass as a CUDA graph). channels_last: NHWC
        weights and inputs. cuda_graph: record each whole deterministic sampling run (every pass and
        every step update) as one CUDA graph, replayed for later batches of the same settings.
        """
        check_fast_path(self.device, compile_mode, cuda_graph)
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self.channels_last, self.cuda_graph = channels_last, cuda_graph
        if compile_mode:
            for name in ("forward", "forward_full", "forward_partial"):
                setattr(self.unet, name, torch.compile(getattr(self.unet, name), mode=compile_mode, dynamic=False,
                                                       fullgraph=True))
            if compile_mode in CUDA_GRAPH_MODES:  # CUDA graphs reuse their output memory: copy outputs out
                for name in ("forward", "forward_full", "forward_partial"):
                    setattr(self.unet, name, _cloning(getattr(self.unet, name)))
        return self

    @staticmethod
    def check(kind, cfg, ckpt=None):
        """Everything that can be wrong before loading weights: checkpoint file, cache settings."""
        if ckpt is not None:
            check_file(ckpt)
        else:
            check_file(CHECKPOINTS / cfg.checkpoint.file, None, cfg.checkpoint.source, cfg.checkpoint.size)
        s = cfg.sampling
        if s.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {s.sampler!r} ({' | '.join(SAMPLERS)})")
        unet = (ddpm.build_unet(cfg.model, "meta") if kind == "ddpm" else ldm.build_model(cfg, "meta").unet)
        timesteps = make_timesteps(s.steps, s.skip_type, offset=0 if kind == "ddpm" else 1)
        cache = cache_schedule(s)
        cache.validate(len(timesteps), unet.num_branches)
        return timesteps, cache.full_steps(len(timesteps))

    def timesteps(self, s):
        return make_timesteps(s.steps, s.skip_type, offset=self.offset)

    def labels(self, seeds, classes=None):
        return class_labels(seeds, classes, self.num_classes)

    def autocast(self, precision):
        dtype = PRECISIONS[precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype else nullcontext()

    @torch.no_grad()
    def sample_x0(self, seeds, s, cache=None, classes=None, precision="fp32", progress=False, denoiser=None):
        """The sampler's output x_0 for `seeds` under sampling config `s` (latents for LDM).

        `denoiser` replaces the U-Net (e.g. a wrapper that times its calls); not with `cuda_graph`.
        """
        rng = PerImageRNG(seeds, self.device)
        x_T = rng.randn((len(seeds), *self.shape))
        if self.channels_last:
            x_T = x_T.contiguous(memory_format=torch.channels_last)
        cache = cache_schedule(s) if cache is None else cache
        inputs = [x_T]
        if self.kind == "ldm":
            inputs.append(self.model.get_learned_conditioning(torch.tensor(self.labels(seeds, classes), device=self.device)))
        run = partial(self._run, s, cache, precision, progress, denoiser, rng.randn_like)
        if not self.cuda_graph:
            return run(*inputs)
        check_fast_path(self.device, cuda_graph=True, sampling=s)
        if denoiser is not None or progress:
            raise UsageError("a CUDA-graph run has no per-step Python: no progress bar or denoiser wrapper")
        key = (repr(s), cache, precision, tuple(x_T.shape))
        if key not in self.graphs:
            self.graphs[key] = GraphedRun(run, *inputs)
        return self.graphs[key](*inputs)

    def _run(self, s, cache, precision, progress, denoiser, noise_fn, x_T, context=None):
        unet, kwargs = denoiser or self.unet, {}
        if self.kind == "ldm":
            unet = ClassifierFreeGuidance(unet, s.scale, self.uncond)
            kwargs = {"model_kwargs": {"context": context}, "final_alpha_cumprod": self.final_alpha_cumprod}
        if s.sampler == "ddpm":
            kwargs["var_type"] = self.cfg.diffusion.var_type if self.kind == "ddpm" else "fixedsmall"
        else:
            kwargs["eta"] = s.eta
        if s.sampler == "ddpm" or s.eta > 0:
            kwargs["noise_fn"] = noise_fn
        with self.autocast(precision):
            return SAMPLERS[s.sampler](unet, x_T, self.timesteps(s), self.alphas_cumprod, cache=cache,
                                       progress=progress, **kwargs)

    @torch.no_grad()
    def to_images(self, x0, precision="fp32"):
        """uint8 images [B, H, W, C] from the sampler's output (decoded first for LDM)."""
        if self.kind == "ldm":
            with self.autocast(precision):
                x0 = self.model.decode_first_stage(x0)
        return to_uint8(x0.float())

    def sample(self, seeds, s, cache=None, classes=None, precision="fp32", progress=False):
        """uint8 images [B, H, W, C] for `seeds`."""
        return self.to_images(self.sample_x0(seeds, s, cache, classes, precision, progress), precision)


def parse_variant(text):
    """'<eager | compile mode>:<fp32 | fp16 | bf16>[:cl][:graph]' -> Variant; cl = channels_last,
    graph = whole-run CUDA graph. E.g. eager:fp32, reduce-overhead:fp16, default:fp16:cl:graph."""
    mode, precision, *flags = text.split(":") if ":" in text else (text, None)
    if precision not in PRECISIONS or set(flags) - {"cl", "graph"} or len(set(flags)) < len(flags):
        raise UsageError(f"malformed variant {text!r}: expected <eager|{'|'.join(COMPILE_MODES)}>:"
                         f"<{'|'.join(PRECISIONS)}>[:cl][:graph]")
    variant = Variant(None if mode == "eager" else mode, precision, "cl" in flags, "graph" in flags)
    check_fast_path("cuda", variant.compile_mode, variant.cuda_graph)  # the device is checked once known
    return variant


class Variant(NamedTuple):
    compile_mode: Optional[str]
    precision: str
    channels_last: bool = False
    cuda_graph: bool = False

    def __str__(self):
        return ":".join([self.compile_mode or "eager", self.precision] + ["cl"] * self.channels_last
                        + ["graph"] * self.cuda_graph)


def check_fast_path(device, compile_mode=None, cuda_graph=False, sampling=None):
    """UsageError for a fast-path combination that cannot work, before any model work."""
    if compile_mode not in (None, *COMPILE_MODES):
        raise UsageError(f"unknown compile mode {compile_mode!r} ({' | '.join(COMPILE_MODES)})")
    if not cuda_graph:
        return
    if torch.device(device).type != "cuda":
        raise UsageError(f"CUDA graphs need a CUDA device, not {device}")
    if compile_mode in CUDA_GRAPH_MODES:
        raise UsageError(f"compile mode {compile_mode!r} already records each pass as a CUDA graph: use it "
                         "without the whole-run graph, or combine the whole-run graph with 'default'")
    if sampling is not None and (sampling.sampler == "ddpm" or sampling.eta > 0):
        raise UsageError("a whole-run CUDA graph needs a deterministic sampler (ddim or plms with eta 0): "
                         "a graph would replay the same noise for every batch")


def _cloning(fn):
    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()
    return call


def class_labels(seeds, classes, num_classes):
    """Class of image s: classes[s % len(classes)], all classes by default (balanced over 50k seeds)."""
    classes = list(classes) if classes else list(range(num_classes))
    return [classes[s % len(classes)] for s in seeds]


def to_uint8(x):
    """[-1, 1] images [B, C, H, W] -> uint8 [B, H, W, C] (clamp((x+1)/2) * 255 + 0.5)."""
    x = ((x + 1) / 2).clamp(0, 1) * 255 + 0.5
    return x.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# -- seeds, distribution, files ---------------------------------------------------------------

def parse_seeds(text):
    """'0-49999' or '0,5,10-19' -> sorted unique list of ints."""
    seeds = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UsageError(f"malformed seed range {text!r}: use e.g. 0-49999 or 0,5,10-19")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UsageError(f"malformed seed range {part!r}: the end is below the start")
        seeds.extend(range(lo, hi + 1))
    return sorted(set(seeds))


def dist_env():
    """(rank, world size, local rank) from torchrun or a plain srun; (0, 1, 0) otherwise."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def init_distributed(rank, world, device):
    """A process group for barriers and reductions (gloo on CPU, NCCL on GPU), when world > 1."""
    if world == 1:
        return
    env = os.environ
    if "MASTER_ADDR" not in env:  # plain srun: the first node of the job
        nodes = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                               capture_output=True, text=True, check=True).stdout.split()
        env["MASTER_ADDR"] = nodes[0]
    env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", 0)) % 1000))
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, rank=rank, world_size=world)


def image_path(outdir, seed, subdirs=False):
    return Path(outdir) / (f"{seed // 1000 * 1000:06d}" if subdirs else "") / f"{seed:06d}.png"


def temp_path(path):
    return path.with_name(f".{path.name}.tmp")


def write_png(path, image):
    """Write atomically: a temporary name in the same folder, then rename."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(tmp, format="PNG")
    os.replace(tmp, path)


def make_grid(images, min_width=512):
    """uint8 images [B, H, W, C] side by side with 1-pixel gaps, enlarged (nearest) to >= min_width."""
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = -(-len(images) // cols)
    _, h, w, c = images.shape
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = im
    scale = max(1, -(-min_width // grid.shape[1]))
    return grid.repeat(scale, 0).repeat(scale, 1)


def write_text(path, text):
    """Write atomically (a temporary name, then rename), making the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def versions():
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "git_commit": commit or None, "host": platform.node(),
            "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def device_name(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# -- evaluation -------------------------------------------------------------------------------

def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), in float64 via symmetric eigensolves."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def feature_statistics(features):
    """(mean, covariance) of features [N, D], float64."""
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)
