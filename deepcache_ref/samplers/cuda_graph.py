"""A whole sampling run recorded once as a CUDA graph and replayed for new inputs."""

import torch

from ..errors import UserError


class GraphedRun:
    """`fn(*inputs)` recorded once as one CUDA graph; calling the object replays it on new inputs.

    Meant for a whole deterministic run, e.g. `GraphedRun(lambda x: ddim_sample(unet, x, ...), x_T)`:
    one `replay` launches every kernel of every step, so the Python loop, the step updates and the
    kernel launches cost nothing per step. Capture fails loudly if `fn` synchronises with the host.
    `fn` must not draw random numbers, and everything except its tensor inputs (weights, schedule,
    cache settings, constants) is frozen at capture. Later inputs must match the first in shape,
    dtype, strides and device. `warmup` untimed runs on a side stream come first (library handles,
    allocator, `torch.compile`). Returns a fresh output tensor per call.
    """

    def __init__(self, fn, *inputs, warmup=1):
        if not inputs or any(x.device.type != "cuda" for x in inputs):
            raise UserError("CUDA graphs need CUDA tensors as inputs")
        device = inputs[0].device
        self.fn = fn  # keeps alive every tensor the graph reads but did not allocate (weights, constants)
        self.inputs = [x.clone() for x in inputs]  # the graph reads these addresses
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*self.inputs)

    def __call__(self, *inputs):
        if len(inputs) != len(self.inputs):
            raise UserError(f"expected {len(self.inputs)} inputs, got {len(inputs)}")
        for static, x in zip(self.inputs, inputs):
            if (x.shape, x.dtype, x.device, x.stride()) != (static.shape, static.dtype, static.device, static.stride()):
                raise UserError(f"input {tuple(x.shape)} {x.dtype} on {x.device} does not match the captured "
                                f"{tuple(static.shape)} {static.dtype} on {static.device} (same strides too)")
            static.copy_(x)
        self.graph.replay()
        return self.output.clone()
