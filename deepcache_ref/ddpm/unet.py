"""The DDPM U-Net of Ho et al. (2020), with DeepCache's full and partial passes.

Mirrors `models/diffusion.py` of ermongroup/ddim (= pesser/pytorch_diffusion): module names,
state-dict keys and arithmetic are the original ones, so the converted TensorFlow checkpoints load
with `strict=True`. Its passes (plain, full, partial) are those of `samplers.adapters.DDPMUNet`, the
adapter of ermongroup/ddim's `Model`; the skip list is `hs[0] = conv_in(x)`, then every down
ResnetBlock(+attn) and Downsample output, so the branch mapping holds for any `num_res_blocks`.
"""

import torch.nn as nn

from ..core.blocks import nonlinearity  # noqa: F401 (the adapter runs a module's own `nonlinearity`)
from ..core.blocks import MidBlock, Normalize, down_levels, up_levels
from ..core.unet import DeepCacheUNet
from ..samplers.adapters import DDPMUNet, ddpm_timestep_frequencies


class UNet(DeepCacheUNet):
    """eps-prediction U-Net; `unet(x [B,C,H,W], t [B] training timesteps) -> eps [B,out_ch,H,W]`.
    Its passes are `samplers.adapters.DDPMUNet`'s, as for ermongroup/ddim's own `Model`."""

    structure = DDPMUNet

    def __init__(
        self,
        *,
        ch=128,                     # base channel count
        out_ch=3,                   # output channels (eps)
        ch_mult=(1, 2, 2, 2),       # channel multiplier per resolution level
        num_res_blocks=2,           # ResnetBlocks per level on the down path (R; R+1 on the up path)
        attn_resolutions=(16,),     # resolutions that get self-attention after each ResnetBlock
        dropout=0.1,                # dropout inside ResnetBlocks (inactive in eval mode)
        resamp_with_conv=True,      # learned convolution in Downsample/Upsample
        in_channels=3,              # image channels
        resolution=32,              # image side length
    ):
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.ch = ch
        self.temb_ch = 4 * ch
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)])

        self.conv_in = nn.Conv2d(in_channels, ch, 3, stride=1, padding=1)
        self.down, block_in = down_levels(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, self.temb_ch,
                                          dropout, resamp_with_conv)
        self.mid = MidBlock(block_in, self.temb_ch, dropout)
        self.up, block_in = up_levels(ch, ch_mult, num_res_blocks, attn_resolutions, block_in, resolution, self.temb_ch,
                                      dropout, resamp_with_conv)  # up[0] is the full-resolution level

        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, stride=1, padding=1)

        # made once on the CPU like the original's, then moved with the model: no copy per call
        self.register_buffer("temb_freqs", ddpm_timestep_frequencies(ch), persistent=False)
