"""Values a caller passes to the library, checked and never coerced.

An integer is a Python, numpy or 0-d integer-tensor integer (never a bool, never a float such as
2.0 or 1.7, which would be truncated); a number is any real scalar, including numpy scalars and
one-element tensors, and must be finite. A tensor argument must match the model it goes to: a
floating dtype, the batch layout, the model's device. Each check raises `UserError` (a ValueError)
naming the argument.
"""

import math
import numbers

import torch

from ..errors import UserError


def _scalar(value, name):
    if isinstance(value, torch.Tensor) and value.device.type == "meta":
        raise UserError(f"{name} is a tensor on the meta device (shapes only): give its value")
    return value


def as_int(value, name):
    """`value` as a Python int; UserError for bools, floats and anything else."""
    value = _scalar(value, name)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be an integer, got {value!r}")
    return int(value)


def as_ints(values, name):
    """A list of Python ints from a list, tuple, range, numpy array or integer tensor."""
    values = _scalar(values, name)
    if isinstance(values, torch.Tensor):
        if values.is_floating_point() or values.dtype == torch.bool or values.ndim != 1:
            raise UserError(f"{name} must be integers, got a {values.dtype} tensor of shape {list(values.shape)}")
        return [int(v) for v in values.tolist()]
    try:
        items = list(values)
    except TypeError:
        raise UserError(f"{name} must be a sequence of integers, got {values!r}") from None
    return [as_int(v, f"{name}[{i}]") for i, v in enumerate(items)]


def as_number(value, name):
    """`value` as a finite Python float (ints, floats, numpy scalars, one-element tensors)."""
    value = _scalar(value, name)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        raise UserError(f"{name} must be a finite number, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    return value


def parameters_of(unet):
    """(device, dtype) of a U-Net's first parameter (through a contract wrapper's `.module`), or Nones."""
    for obj in _inner(unet):
        if isinstance(obj, torch.nn.Module):
            p = next(obj.parameters(), None)
            if p is not None:
                return p.device, p.dtype
    return None, None


def check_sample_input(unet, x_T, model_kwargs=None):
    """x_T [B, C, H, W] of a floating dtype on the U-Net's device (and of its dtype unless autocast is
    on) with its channels, and `model_kwargs` a dict whose tensors have B rows on that device; class
    labels (`y`, `class_labels`) an integer tensor [B] within the model's classes."""
    if not isinstance(x_T, torch.Tensor):
        raise UserError(f"x_T must be a torch.Tensor [B, C, H, W], got {type(x_T).__name__}")
    if x_T.ndim != 4 or x_T.shape[0] < 1:
        raise UserError(f"x_T must have shape [B, C, H, W] with B >= 1, got {list(x_T.shape)}")
    if not x_T.is_floating_point():
        raise UserError(f"x_T must be a floating tensor (Gaussian noise), got {x_T.dtype}")
    device, dtype = parameters_of(unet)
    if device is not None and x_T.device != device:
        raise UserError(f"x_T is on {x_T.device}, the U-Net's weights on {device}: move one to the other")
    if dtype is not None and x_T.dtype != dtype and not torch.is_autocast_enabled(x_T.device.type):
        raise UserError(f"x_T is {x_T.dtype}, the U-Net's weights {dtype}: convert x_T, or sample under "
                        "torch.autocast")
    channels = _in_channels(unet)
    if channels is not None and x_T.shape[1] != channels:
        raise UserError(f"x_T has {x_T.shape[1]} channels, the U-Net takes {channels}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise UserError(f"model_kwargs must be a dict of keyword arguments, got {type(model_kwargs).__name__}")
    for key, value in (model_kwargs or {}).items():
        if key in ("y", "class_labels") and value is not None:
            _check_labels(unet, key, value, x_T)
        if not isinstance(value, torch.Tensor):
            continue
        if value.device != x_T.device:
            raise UserError(f"model_kwargs[{key!r}] is on {value.device}, x_T on {x_T.device}: move it")
        if value.ndim == 0 or value.shape[0] != x_T.shape[0]:
            raise UserError(f"model_kwargs[{key!r}] has shape {list(value.shape)}: it needs one row per image of the "
                            f"batch ({x_T.shape[0]})")


def _inner(unet):
    """The objects a U-Net argument may wrap: itself, a contract wrapper's module, a guidance wrapper's U-Net."""
    inner = getattr(unet, "unet", None)
    return [o for o in (unet, getattr(unet, "module", None), inner, getattr(inner, "module", None)) if o is not None]


def _check_labels(unet, key, value, x_T):
    if not isinstance(value, torch.Tensor) or value.ndim != 1 or value.is_floating_point() \
            or value.dtype not in (torch.int64, torch.int32):
        what = f"a {value.dtype} tensor of shape {list(value.shape)}" if isinstance(value, torch.Tensor) \
            else type(value).__name__
        raise UserError(f"model_kwargs[{key!r}] holds class labels: it must be an int64 tensor [B], got {what}")
    if value.device.type == "meta" or value.device != x_T.device:
        return  # the device check names it
    classes = next((n for o in _inner(unet) for n in (getattr(o, "num_classes", None),
                                                      getattr(getattr(o, "config", None), "num_class_embeds", None))
                    if isinstance(n, int) and not isinstance(n, bool)), None)
    if classes is not None and len(value) and not (0 <= int(value.min()) and int(value.max()) < classes):
        raise UserError(f"model_kwargs[{key!r}]: class labels must be in 0..{classes - 1}, got {value.tolist()}")


def _in_channels(unet):
    for obj in _inner(unet):
        for source in (getattr(obj, "config", None), obj):  # diffusers keeps it in its config
            value = getattr(source, "in_channels", None) if source is not None else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None
