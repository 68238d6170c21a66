"""The openaimodel configuration space of `ldm.UNetModel` (CompVis's and guided-diffusion's
`UNetModel`): each family of options against an openaimodel-style forward, DeepCache exactness,
strict state-dict round trips, and the parameter names and shapes those code bases use."""

import pytest
import torch

from deepcache_ref.errors import UserError
from deepcache_ref.ldm.unet import AttentionBlock, UNetModel, adm_unet
from research_style import CompVisStyleUNet

TINY = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,), in_channels=3)
FAMILIES = {
    "cross-attention": dict(use_spatial_transformer=True, context_dim=16, num_heads=2),
    "class labels, AttentionBlock": dict(num_classes=10, num_heads=2),
    "scale-shift, resblock up/down, new head order, head width": dict(
        use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=True, num_head_channels=16),
    "learned sigma, pooled resampling": dict(out_channels=6, conv_resample=False, num_heads=1, num_heads_upsample=2),
}


def _build(options, seed=0):
    torch.manual_seed(seed)
    return UNetModel(**TINY, **options).eval()


def _inputs(options):
    kw = {}
    if options.get("use_spatial_transformer"):
        kw["context"] = torch.randn(2, 1, 16)
    if options.get("num_classes"):
        kw["y"] = torch.tensor([3, 7])
    return torch.randn(2, 3, 16, 16), torch.tensor([900, 12]), kw


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_matches_an_openaimodel_forward_and_caches_exactly(family):
    options = FAMILIES[family]
    unet = _build(options)
    x, t, kw = _inputs(options)
    own = CompVisStyleUNet(unet)(x, t, **kw)
    out = unet(x, t, **kw)
    assert torch.equal(out, own) and out.shape[1] == options.get("out_channels", 3)
    for k in range(unet.num_branches):
        eps, cached = unet.forward_full(x, t, branch=k, **kw)
        assert torch.equal(eps, own) and torch.equal(unet.forward_partial(x, t, cached, branch=k, **kw), own), k
    again = _build(options, seed=1)
    assert not torch.equal(again(x, t, **kw), out)
    again.load_state_dict(unet.state_dict(), strict=True)  # the same names and shapes: a strict round trip
    assert torch.equal(again(x, t, **kw), out)


def test_parameter_names_and_shapes_are_openaimodels():
    shapes = {k: tuple(v.shape) for k, v in _build(FAMILIES["scale-shift, resblock up/down, new head order, head width"])
              .state_dict().items()}
    assert shapes["input_blocks.1.0.emb_layers.1.weight"] == (64, 128)  # scale and shift: twice the channels
    assert "input_blocks.2.0.in_layers.2.weight" in shapes and "input_blocks.2.0.op.weight" not in shapes  # a down ResBlock
    assert shapes["middle_block.1.qkv.weight"] == (192, 64, 1) and shapes["middle_block.1.proj_out.weight"] == (64, 64, 1)
    assert shapes["output_blocks.1.2.in_layers.2.weight"] == (64, 64, 3, 3)  # an up ResBlock
    labels = {k: tuple(v.shape) for k, v in _build(FAMILIES["class labels, AttentionBlock"]).state_dict().items()}
    assert labels["label_emb.weight"] == (10, 128) and labels["input_blocks.3.1.norm.weight"] == (64,)
    sigma = {k: tuple(v.shape) for k, v in _build(FAMILIES["learned sigma, pooled resampling"]).state_dict().items()}
    assert sigma["out.2.weight"] == (6, 32, 3, 3) and not any(k.startswith("input_blocks.2.") for k in sigma)


def test_the_head_order_matters_with_several_heads():
    torch.manual_seed(0)
    legacy = AttentionBlock(64, num_head_channels=16)
    new = AttentionBlock(64, num_head_channels=16, use_new_attention_order=True)
    new.load_state_dict(legacy.state_dict(), strict=True)
    x = torch.randn(1, 64, 4, 4)
    assert not torch.allclose(legacy(x), new(x))


def test_adm_unet_takes_model_and_diffusion_defaults():
    unet = adm_unet(image_size=64, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="32",
                    class_cond=True, learn_sigma=True, num_head_channels=16, use_scale_shift_norm=True,
                    resblock_updown=True, use_new_attention_order=True, dropout=0.0, use_fp16=False,
                    diffusion_steps=1000, noise_schedule="cosine", timestep_respacing="", use_kl=False,
                    predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False)
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert shapes["label_emb.weight"] == (1000, 128) and shapes["out.2.weight"] == (6, 32, 3, 3)
    assert "input_blocks.3.1.qkv.weight" in shapes  # attention at resolution 32 of 64: downsampling factor 2
    assert len(adm_unet(256, 256, 2, attention_resolutions="32,16,8").input_blocks) == 1 + 6 * 2 + 5
    with pytest.raises(UserError, match="unknown argument"):
        adm_unet(64, 32, 1, channel_mult="1,2", learn_sigmas=True)
    with pytest.raises(UserError, match="use_fp16=True"):
        UNetModel(**TINY, num_heads=1, use_fp16=True)


COMPVIS = {  # unet_config.params of CompVis's configs/latent-diffusion/*.yaml -> published U-Net size (LDM paper)
    "lsun_churches-ldm-kl-8": (dict(image_size=32, in_channels=4, out_channels=4, model_channels=192,
                                    attention_resolutions=[1, 2, 4, 8], num_res_blocks=2, channel_mult=[1, 2, 2, 4, 4],
                                    num_heads=8, use_scale_shift_norm=True, resblock_updown=True), 294e6),
    "celebahq-ldm-vq-4": (dict(image_size=64, in_channels=3, out_channels=3, model_channels=224,
                               attention_resolutions=[8, 4, 2], num_res_blocks=2, channel_mult=[1, 2, 3, 4],
                               num_head_channels=32), 274e6),
    "cin-ldm-vq-f8": (dict(image_size=32, in_channels=4, out_channels=4, model_channels=256,
                           attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4],
                           num_head_channels=32, use_spatial_transformer=True, transformer_depth=1, context_dim=512),
                      395e6),
}
ADM = {  # guided-diffusion's model flags (its README) -> published model size (ADM paper)
    "ImageNet 64, conditional": (dict(image_size=64, num_channels=192, num_res_blocks=3, learn_sigma=True,
                                      class_cond=True, attention_resolutions="32,16,8", num_head_channels=64,
                                      use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=True),
                                 296e6),
    "ImageNet 128, conditional": (dict(image_size=128, num_channels=256, num_res_blocks=2, learn_sigma=True,
                                       class_cond=True, attention_resolutions="32,16,8", num_heads=4,
                                       use_scale_shift_norm=True, resblock_updown=True), 422e6),
    "ImageNet 256, conditional": (dict(image_size=256, num_channels=256, num_res_blocks=2, learn_sigma=True,
                                       class_cond=True, attention_resolutions="32,16,8", num_head_channels=64,
                                       use_scale_shift_norm=True, resblock_updown=True), 554e6),
    "ImageNet 512, conditional": (dict(image_size=512, num_channels=256, num_res_blocks=2, learn_sigma=True,
                                       class_cond=True, attention_resolutions="32,16,8", num_head_channels=64,
                                       use_scale_shift_norm=True, resblock_updown=True), 559e6),
}


@pytest.mark.parametrize("name", list(COMPVIS) + list(ADM))
def test_published_configs_build_with_the_published_sizes(name):
    with torch.device("meta"):
        if name in COMPVIS:
            params, size = COMPVIS[name]
            unet = UNetModel(**params)
        else:
            params, size = ADM[name]
            unet = adm_unet(**params)
    count = sum(p.numel() for p in unet.parameters())
    assert abs(count - size) < 0.005 * size, f"{name}: {count / 1e6:.1f}M parameters, published {size / 1e6:.0f}M"


def test_compvis_non_legacy_head_rule():
    base = dict(TINY, use_spatial_transformer=True, context_dim=16, num_head_channels=24)
    shapes = {legacy: tuple(UNetModel(**base, legacy=legacy).state_dict()["input_blocks.3.1.proj_in.weight"].shape)
              for legacy in (True, False)}
    assert shapes == {True: (64, 64, 1, 1), False: (48, 64, 1, 1)}  # 2 heads of 64 // 2, or of num_head_channels
    heads = {legacy: UNetModel(**TINY, num_heads=2, num_heads_upsample=4, legacy=legacy).output_blocks[1][1]
             .attention.n_heads for legacy in (True, False)}
    assert heads == {True: 4, False: 2}  # CompVis's non-legacy up path sizes heads by width, not by count
    with pytest.raises(UserError, match="use_spatial_transformer and context_dim go together"):
        UNetModel(**TINY, num_heads=1, context_dim=16)
