"""The fast paths of a sampling run: precision, torch.compile, channels_last, whole-run CUDA graphs."""

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import UserError
from .samplers import SAMPLERS, sampler

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that record CUDA graphs


@dataclass(frozen=True)
class FastPath:
    """One combination of fast paths; written `<eager | compile mode>:<fp32 | fp16 | bf16>[:cl][:graph]`
    (cl = channels_last, graph = each whole deterministic run recorded as one CUDA graph)."""

    compile_mode: Optional[str] = None  # torch.compile mode of the three passes; None = eager
    precision: str = "fp32"             # autocast dtype
    channels_last: bool = False         # NHWC weights and inputs
    cuda_graph: bool = False            # whole-run CUDA graph

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r} ({' | '.join(PRECISIONS)})")
        if self.compile_mode not in (None, *COMPILE_MODES):
            raise UserError(f"unknown compile mode {self.compile_mode!r} ({' | '.join(COMPILE_MODES)})")
        if self.cuda_graph and self.compile_mode in CUDA_GRAPH_MODES:
            raise UserError(f"compile mode {self.compile_mode!r} already records each pass as a CUDA graph: use "
                            "it without the whole-run graph, or combine the whole-run graph with 'default'")

    @classmethod
    def parse(cls, text):
        mode, precision, *flags = text.split(":") if ":" in text else (text, None)
        if precision not in PRECISIONS or set(flags) - {"cl", "graph"} or len(set(flags)) < len(flags) \
                or mode not in ("eager", *COMPILE_MODES):
            raise UserError(f"malformed variant {text!r}: expected <eager|{'|'.join(COMPILE_MODES)}>:"
                            f"<{'|'.join(PRECISIONS)}>[:cl][:graph]")
        return cls(None if mode == "eager" else mode, precision, "cl" in flags, "graph" in flags)

    def __str__(self):
        return ":".join([self.compile_mode or "eager", self.precision] + ["cl"] * self.channels_last
                        + ["graph"] * self.cuda_graph)

    def check(self, device, sampling=None):
        """UserError if this combination cannot run on `device` with `sampling`, before any work."""
        if self.cuda_graph and torch.device(device).type != "cuda":
            raise UserError(f"CUDA graphs need a CUDA device, not {device}")
        if self.cuda_graph and sampling is not None and not sampler(sampling.sampler).graphable(sampling):
            graphable = [name for name, spec in SAMPLERS.items() if spec.cuda_graph]
            raise UserError(f"a whole-run CUDA graph needs a run that draws no noise ({', '.join(graphable)}; ddim "
                            f"with eta 0), not {sampling.sampler}: a graph would replay the same noise for every batch")

    def autocast(self, device):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(torch.device(device).type, dtype=dtype) if dtype else nullcontext()

    def apply(self, unet):
        """channels_last and torch.compile on a U-Net's three passes, in place; returns `unet`."""
        if self.channels_last:
            unet.to(memory_format=torch.channels_last)
        if self.compile_mode:
            for name in ("forward", "forward_full", "forward_partial"):
                fn = torch.compile(getattr(unet, name), mode=self.compile_mode, dynamic=False, fullgraph=True)
                if self.compile_mode in CUDA_GRAPH_MODES:  # CUDA graphs reuse their output memory: copy out
                    fn = _cloning(fn)
                setattr(unet, name, fn)
        return unet


def _cloning(fn):
    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()
    return call


def resolve_device(name=None, local_rank=0):
    """A usable torch.device: `name` (default cuda:<local_rank> when CUDA is available, else cpu)."""
    if name is None:
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r}: CUDA is not available on this machine (use --device cpu)")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: there is no CUDA device {index} ({torch.cuda.device_count()} visible)")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise UserError(f"device {name!r} is not supported: use cpu, cuda or cuda:N")
    return device
