"""The shared U-Net template (`core/unet.py`): its embedding hook receives the conditioning, so a
class-embedded U-Net (ADM-style `label_emb`) keeps DeepCache's exactness."""

import pytest
import torch
import torch.nn as nn

from deepcache_ref.ddpm import UNet


class ClassEmbeddedUNet(UNet):
    """The DDPM U-Net plus a label embedding added to the time embedding, as ADM does."""

    def __init__(self, num_classes, **kw):
        super().__init__(**kw)
        self.label_emb = nn.Embedding(num_classes, self.temb_ch)

    def _embed(self, t, y):
        return super()._embed(t) + self.label_emb(y)

    def _down(self, x, temb, num_skips, y):
        return super()._down(x, temb, num_skips)

    def _mid(self, h, temb, y):
        return super()._mid(h, temb)

    def _up_block(self, j, h, temb, y):
        return super()._up_block(j, h, temb)

    def forward(self, x, t, y):
        return self._forward(x, t, y=y)[0]


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return ClassEmbeddedUNet(10, ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                             dropout=0.0, resolution=16).eval()


def test_partial_after_full_is_bit_exact_for_every_branch_with_labels(unet):
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([500, 20]), torch.tensor([3, 7])
    full = unet(x, t, y=y)
    assert not torch.equal(full, unet(x, t, y=torch.tensor([4, 7])))  # the labels reach the output
    for k in range(unet.num_branches):
        eps, cached = unet.forward_full(x, t, branch=k, y=y)
        assert torch.equal(eps, full)
        assert torch.equal(unet.forward_partial(x, t, cached, branch=k, y=y), full), k
