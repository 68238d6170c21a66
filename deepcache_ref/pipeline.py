"""One sampling pipeline for every model family: seeds -> initial noise -> sampler -> decoded images."""

from functools import partial

import numpy as np
import torch

from .errors import UserError
from .families import family_of
from .fast import FastPath
from .core.values import as_ints, as_number
from .samplers import SAMPLERS, CacheSchedule, DiffusionModel, GraphedRun, PerImageRNG, sampler
from .samplers.registry import all_options


def cache_schedule(s):
    """The `CacheSchedule` of a sampling config section."""
    if s.cache_schedule == "explicit" and s.cache_full_steps is None:
        raise UserError("cache_schedule explicit needs sampling.cache_full_steps (e.g. --cache-file from plan.py)")
    if s.cache_schedule != "explicit" and s.cache_full_steps is not None:
        raise UserError("sampling.cache_full_steps applies to cache_schedule explicit only")
    return CacheSchedule(s.cache_interval, s.cache_branch, s.cache_schedule, center=s.cache_center,
                         power=s.cache_power, explicit_steps=s.cache_full_steps)


def _finite(name, value):
    if value is not None:
        as_number(value, name)


def check_sampling(model, s, classes=None):
    """Every value of sampling section `s` checked against `model` (one on `meta` is enough) before
    any work; returns (timesteps, full steps). Raises UserError naming the setting."""
    spec = sampler(s.sampler)
    if not family_of(model.config).supports(s.sampler):
        raise UserError(f"sampler {s.sampler} does not apply to {model.config.name or 'this model'}")
    own = {o.key: o for o in spec.options}
    for option in all_options():  # its own options checked; another sampler's left at their defaults
        value = getattr(s, option.key)
        if option.key in own:
            own[option.key].validate(value)
        elif value != option.default:
            owners = [name for name, other in SAMPLERS.items() if option.key in {o.key for o in other.options}]
            raise UserError(f"sampling.{option.key} applies to the {' / '.join(owners)} sampler only; {s.sampler} "
                            f"needs sampling.{option.key}={option.default} (got {value})")
    if not isinstance(s.batch_size, int) or s.batch_size < 1:
        raise UserError(f"the batch size must be an integer >= 1, got {s.batch_size!r}")
    _finite("sampling.cache_power", s.cache_power)
    _finite("sampling.cache_center", s.cache_center)
    _finite("sampling.scale (guidance)", getattr(s, "scale", None))
    timesteps = model.timesteps(s.steps, s.skip_type)
    if timesteps[-1] >= model.num_train_timesteps:
        raise UserError(f"sampling.steps={s.steps} with skip_type {s.skip_type} visits timestep {timesteps[-1]}, "
                        f"beyond the model's 0..{model.num_train_timesteps - 1} (its timesteps are offset by "
                        f"{model.timestep_offset}): choose steps that divide {model.num_train_timesteps}, or another "
                        "skip_type")
    if spec.distinct_timesteps and len(set(timesteps)) < len(timesteps):
        raise UserError(f"{s.sampler} needs distinct timesteps; sampling.steps={s.steps} with skip_type "
                        f"{s.skip_type} repeats some: use skip_type uniform or linspace, or fewer steps")
    cache = cache_schedule(s)
    cache.validate(len(timesteps), model.unet.num_branches)
    if not 0 <= s.cache_branch < model.unet.num_branches:  # also without caching: it is part of the settings
        raise UserError(f"cache branch {s.cache_branch} is out of range: the U-Net has branches "
                        f"0..{model.unet.num_branches - 1}")
    if classes is not None:
        if not model.num_classes:
            raise UserError("--classes applies to class-conditional models only; this one is unconditional")
        bad = [c for c in classes if not 0 <= c < model.num_classes]
        if bad or not classes:
            raise UserError(f"classes must be in 0..{model.num_classes - 1}, got {bad or 'none'}")
    return timesteps, cache.full_steps(len(timesteps))


def class_labels(seeds, classes, num_classes):
    """Class of image s: classes[s % len(classes)], all classes by default (balanced over 50k seeds);
    None for an unconditional model."""
    if not num_classes:
        return None
    classes = list(classes) if classes else list(range(num_classes))
    return [classes[s % len(classes)] for s in seeds]


def to_uint8(x):
    """[-1, 1] images [B, C, H, W] -> uint8 numpy [B, H, W, C] (clamp((x+1)/2) * 255 + 0.5)."""
    x = ((x.float() + 1) / 2).clamp(0, 1) * 255 + 0.5
    return x.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


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


class Pipeline:
    """A model on a device with its fast paths, turning seeds into images.

    Image s depends only on (weights, sampling settings, fast path, device type, s): its initial
    noise (and any sampler noise) comes from its own generator seeded with s.
    """

    def __init__(self, model, device="cpu", fast=FastPath()):
        if not isinstance(model, DiffusionModel):
            raise UserError(f"Pipeline takes a model from deepcache_ref.load_model / build_model, got "
                            f"{type(model).__name__}")
        if not isinstance(fast, FastPath):
            raise UserError(f"fast must be a FastPath (e.g. FastPath.parse('eager:fp16')), got {fast!r}")
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise UserError(f"device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
        self.device, self.fast = device, fast
        fast.check(self.device)
        self.model = model.to(self.device).eval()
        fast.apply(self.model.unet)
        self.alphas_cumprod = self.model.alphas_cumprod.cpu()  # read on the host: nothing to copy inside a graph
        self.graphs = {}

    @torch.no_grad()
    def sample_x0(self, seeds, sampling, cache=None, classes=None, progress=False, wrap=None):
        """The sampler's output x_0 [B, *sample_shape] for `seeds` under sampling section `sampling`
        (latents for LDM). `cache` overrides the section's schedule; `wrap(denoiser)` replaces the
        denoiser the sampler calls (e.g. to time it; not with a whole-run CUDA graph)."""
        s = sampling
        if not all(hasattr(s, key) for key in ("sampler", "steps", "skip_type", "cache_interval")):
            raise UserError(f"sampling must be a config's sampling section (load_config(...).sampling), got "
                            f"{type(s).__name__}")
        classes = as_ints(classes, "classes") if classes is not None else None
        check_sampling(self.model, s, classes)  # every value, before any work
        rng = PerImageRNG(seeds, self.device)
        x_T = rng.randn((len(seeds), *self.model.sample_shape))
        if self.fast.channels_last:
            x_T = x_T.contiguous(memory_format=torch.channels_last)
        cache = cache_schedule(s) if cache is None else cache
        labels = class_labels(seeds, classes, self.model.num_classes)
        denoiser, kwargs = self.model.denoiser(labels, s.scale if family_of(self.model.config).guidance else 1.0)
        model_kwargs = kwargs.pop("model_kwargs", {})
        if wrap is not None:
            denoiser = wrap(denoiser)
        names = sorted(model_kwargs)
        run = partial(self._run, s, cache, denoiser, kwargs, names, rng.randn_like, progress)
        inputs = [x_T, *(model_kwargs[n] for n in names)]
        if not self.fast.cuda_graph:
            return run(*inputs)
        self.fast.check(self.device, s)
        if wrap is not None or progress:
            raise UserError("a CUDA-graph run has no per-step Python: no progress bar or denoiser wrapper")
        key = (repr(s), cache, tuple(x_T.shape), tuple(names))
        if key not in self.graphs:
            self.graphs[key] = GraphedRun(run, *inputs)
        return self.graphs[key](*inputs)

    def _run(self, s, cache, denoiser, kwargs, names, noise_fn, progress, x_T, *model_kwargs):
        spec = sampler(s.sampler)
        extra = spec.kwargs(s, self.model)
        if spec.draws_noise(s):
            extra["noise_fn"] = noise_fn
        with self.fast.autocast(self.device):
            return spec.fn(denoiser, x_T, self.model.timesteps(s.steps, s.skip_type), self.alphas_cumprod, cache=cache,
                           progress=progress, model_kwargs=dict(zip(names, model_kwargs)), **kwargs, **extra)

    @torch.no_grad()
    def to_images(self, x0, seeds=None, sampling=None):
        """uint8 images [B, H, W, C] from the sampler's output (decoded first where the family decodes).
        UserError, before anything is converted, if a value is not finite (naming the likely cause)."""
        with self.fast.autocast(self.device):
            decoded = self.model.decode(x0)
        bad = ~torch.isfinite(decoded.flatten(1)).all(dim=1)
        if bool(bad.any()):
            which = [s for s, b in zip(seeds, bad.tolist()) if b] if seeds is not None else bad.nonzero().flatten().tolist()
            causes = []
            if getattr(sampling, "scale", 1.0) != 1.0:
                causes.append(f"the guidance scale (sampling.scale={sampling.scale})")
            if self.fast.precision != "fp32":
                causes.append(f"{self.fast.precision} precision overflowing")
            causes.append("the checkpoint or the sampling settings")
            raise UserError(f"the samples of seed(s) {which[:5]} hold NaN or infinite values (likely cause: "
                            f"{', or '.join(causes)}); no image of this batch was written")
        return to_uint8(decoded)

    def sample(self, seeds, sampling, cache=None, classes=None, progress=False):
        """uint8 images [B, H, W, C] for `seeds`."""
        return self.to_images(self.sample_x0(seeds, sampling, cache, classes, progress), seeds, sampling)
