"""Diffusers `UNet2DModel` folders of the Ho et al. DDPMs (`google/ddpm-cifar10-32`, `-church-256`,
`-bedroom-256`, `-celebahq-256` and their `ddpm-ema-*` variants), read without diffusers.

The architecture comes from `config.json`, the noise schedule and ancestral variance from
`scheduler_config.json`, and the weights (`diffusion_pytorch_model.safetensors`, or `.bin` read
with `weights_only=True`) are renamed key for key onto `ddpm.UNet`. A field missing from an older
upload takes diffusers' default; a value this U-Net cannot represent is an error naming the field.
"""

import json
import re
from pathlib import Path

from ..errors import ConfigError
from .unet import UNet

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# UNet2DModel's defaults (diffusers' signature), for fields an upload omits, and what ddpm.UNet needs.
UNET_DEFAULTS = {
    "in_channels": 3, "out_channels": 3, "center_input_sample": False, "time_embedding_type": "positional",
    "freq_shift": 0, "flip_sin_to_cos": True, "down_block_types": ["DownBlock2D", "AttnDownBlock2D",
    "AttnDownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D",
    "UpBlock2D"], "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    "time_embedding_dim": None, "mid_block_type": "UNetMidBlock2D", "num_train_timesteps": None,
}
REQUIRED = {  # field: the only value ddpm.UNet represents
    "center_input_sample": False, "time_embedding_type": "positional", "freq_shift": 1, "flip_sin_to_cos": False,
    "mid_block_scale_factor": 1, "downsample_padding": 0, "downsample_type": "conv", "upsample_type": "conv",
    "act_fn": "silu", "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-6,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    "time_embedding_dim": None, "mid_block_type": "UNetMidBlock2D",
}
SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                      "variance_type": "fixed_small", "prediction_type": "epsilon", "trained_betas": None,
                      "rescale_betas_zero_snr": False}
VARIANCE = {"fixed_large": "fixedlarge", "fixed_small": "fixedsmall"}


def is_folder(path):
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def _json(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def weights_file(folder):
    """The folder's weights file: safetensors, else .bin (the safetensors name when there is neither)."""
    for name in WEIGHTS:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return Path(folder) / WEIGHTS[0]


def model_section(config, source):
    """Our `model:` section of a UNet2DModel config (a dict, as `config.json` or `module.config`
    holds it; omitted fields take diffusers' defaults); ConfigError naming a field this U-Net cannot
    represent. A folder's `config.json` and an in-memory module get the same checks."""
    path = source
    unet = {**UNET_DEFAULTS, **{k: v for k, v in dict(config).items() if not k.startswith("_") or k == "_class_name"}}
    if unet.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ConfigError(f"{path}: _class_name is {unet['_class_name']!r}; only UNet2DModel folders are read")
    for key, value in REQUIRED.items():
        if unet[key] != value:
            raise ConfigError(f"{path}: {key} is {unet[key]!r}; this U-Net (Ho et al.) needs {value!r}")
    down, up, chans = list(unet["down_block_types"]), list(unet["up_block_types"]), list(unet["block_out_channels"])
    if len(down) != len(chans) or len(up) != len(chans):
        raise ConfigError(f"{path}: down_block_types, up_block_types and block_out_channels differ in length")
    for key, types, allowed in (("down_block_types", down, ("DownBlock2D", "AttnDownBlock2D")),
                                ("up_block_types", up, ("UpBlock2D", "AttnUpBlock2D"))):
        bad = [t for t in types if t not in allowed]
        if bad:
            raise ConfigError(f"{path}: {key} has {bad[0]!r}; only DownBlock2D/AttnDownBlock2D and UpBlock2D/"
                              "AttnUpBlock2D are represented")
    attn = [t.startswith("Attn") for t in down]
    if [t.startswith("Attn") for t in reversed(up)] != attn:
        raise ConfigError(f"{path}: up_block_types do not mirror down_block_types (attention at other levels)")
    if not chans or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in chans):
        raise ConfigError(f"{path}: block_out_channels must be a non-empty list of positive integers, got {chans}")
    ch = chans[0]
    if any(c % ch for c in chans):
        raise ConfigError(f"{path}: block_out_channels {chans} are not multiples of the first")
    heads = unet["attention_head_dim"]
    if heads is not None and any(a and heads != c for a, c in zip(attn, chans)):
        raise ConfigError(f"{path}: attention_head_dim is {heads}: this U-Net has one attention head per block "
                          "(attention_head_dim null or equal to the block's channels)")
    if heads is not None and heads != chans[-1]:
        raise ConfigError(f"{path}: attention_head_dim is {heads}: the mid block needs one head ({chans[-1]})")
    size = unet.get("sample_size")
    if not isinstance(size, int):
        raise ConfigError(f"{path}: sample_size must be an integer, got {size!r}")

    return {"ch": ch, "out_ch": unet["out_channels"], "ch_mult": [c // ch for c in chans],
            "num_res_blocks": unet["layers_per_block"], "attn_resolutions": [size // 2**i for i, a in enumerate(attn) if a],
            "dropout": unet["dropout"], "resamp_with_conv": True, "in_channels": unet["in_channels"], "resolution": size}


def config_dict(folder):
    """A `DDPMConfig` as a plain dict from a diffusers folder; ConfigError naming the unsupported field."""
    folder = Path(folder)
    model = model_section(_json(folder / "config.json"), folder / "config.json")

    spath = folder / "scheduler_config.json"
    if not spath.is_file():
        raise ConfigError(f"{folder}: no scheduler_config.json (the noise schedule); download it into the folder")
    sched = {**SCHEDULER_DEFAULTS, **_json(spath)}
    for key, value in (("beta_schedule", "linear"), ("prediction_type", "epsilon"), ("trained_betas", None),
                       ("rescale_betas_zero_snr", False)):
        if sched[key] != value:
            raise ConfigError(f"{spath}: {key} is {sched[key]!r}; only {value!r} is supported")
    if sched["variance_type"] not in VARIANCE:
        raise ConfigError(f"{spath}: variance_type is {sched['variance_type']!r}; use fixed_large or fixed_small")
    return {
        "name": folder.name,
        "model": model,
        "diffusion": {"beta_schedule": "linear", "beta_start": sched["beta_start"], "beta_end": sched["beta_end"],
                      "num_timesteps": sched["num_train_timesteps"], "var_type": VARIANCE[sched["variance_type"]]},
        "checkpoint": {"file": str(weights_file(folder).resolve()), "source": f"the diffusers folder {folder}"},
    }


def is_diffusers_state(state):
    return any(k.startswith(("down_blocks.", "conv_norm_out.", "time_embedding.")) for k in state)


ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
             "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}  # current and legacy names
RESNET = {"norm1": "norm1", "conv1": "conv1", "time_emb_proj": "temb_proj", "norm2": "norm2", "conv2": "conv2",
          "conv_shortcut": "nin_shortcut"}
TOP = {"conv_in": "conv_in", "time_embedding.linear_1": "temb.dense.0", "time_embedding.linear_2": "temb.dense.1",
       "conv_norm_out": "norm_out", "conv_out": "conv_out"}


def _rename(key, levels):
    """Our name for one diffusers key, or None."""
    module, _, param = key.rpartition(".")
    for ours_of, table in ((r"(down_blocks|up_blocks)\.(\d+)\.resnets\.(\d+)\.(.+)", RESNET),
                           (r"(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)\.(.+)", ATTENTION)):
        m = re.fullmatch(ours_of, module)
        if m and m.group(4) in table:
            side, i, j, name = m.groups()
            level = int(i) if side == "down_blocks" else levels - 1 - int(i)
            kind = "block" if table is RESNET else "attn"
            return f"{'down' if side == 'down_blocks' else 'up'}.{level}.{kind}.{j}.{table[name]}.{param}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", module)
    if m:
        return f"down.{m.group(1)}.downsample.conv.{param}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", module)
    if m:
        return f"up.{levels - 1 - int(m.group(1))}.upsample.conv.{param}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d)\.(.+)", module)
    if m:
        part, j, name = m.groups()
        table = RESNET if part == "resnets" else ATTENTION
        if name in table:
            return f"mid.{('block_1', 'block_2')[int(j)] if part == 'resnets' else 'attn_1'}.{table[name]}.{param}"
    if module in TOP:
        return f"{TOP[module]}.{param}"
    return None


def to_ddpm_state(state):
    """A diffusers UNet2DModel state dict under ddpm.UNet's names (linear attention weights become the
    1x1 convolutions of the original). Keys that map to nothing keep their names (and are reported
    as unexpected by the loader)."""
    levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down_blocks."))
    out = {}
    for key, value in state.items():
        ours = _rename(key, levels)
        if ours is None:
            out[key] = value
            continue
        if re.search(r"\.(attn\.\d+|attn_1)\.(q|k|v|proj_out)\.weight$", ours) and value.ndim == 2:
            value = value[:, :, None, None]
        out[ours] = value
    return out


def from_module(module):
    """Our `ddpm.UNet` holding the weights of a diffusers `UNet2DModel` object, after the same field
    checks as a folder's `config.json` (ConfigError naming the field), so a module of another
    configuration is refused instead of converted into a different function. To cache a module of
    any configuration as it is, use `samplers.adapt_unet(module)` instead."""
    if type(module).__name__ != "UNet2DModel":
        raise ConfigError(f"{type(module).__name__}: only UNet2DModel objects convert to this U-Net")
    model = model_section(module.config, "UNet2DModel.config")
    unet = UNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})
    unet.load_state_dict(to_ddpm_state(module.state_dict()), strict=True)
    return unet.eval()
