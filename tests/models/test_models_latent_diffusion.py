import pytest
import torch

from learnloop.models.latent_diffusion import GuidedDenoiser, LatentDenoiser, drop_captions, pad_context
from learnloop.models.unet import UNet


def _model():
    torch.manual_seed(0)
    unet = UNet((8, 8), 4, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                attention_heads=2, norm_groups=4, context_dim=6)
    for p in unet.parameters():              # the zero-initialised head would make every output 0
        torch.nn.init.normal_(p, std=0.2)
    return LatentDenoiser(unet, (4, 8, 8)).eval()


def _inputs(B=3, L=5):
    g = torch.Generator().manual_seed(1)
    z, t = torch.randn(B, 4, 8, 8, generator=g), torch.randint(0, 100, (B,), generator=g)
    ctx = torch.randn(B, L, 6, generator=g)
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[0, 3:] = True                       # a shorter prompt
    null = torch.randn(1, 2, 6, generator=g)
    return z, t, ctx, mask, null, torch.zeros(1, 2, dtype=torch.bool)


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_unconditional():
    m = _model()
    z, t, ctx, mask, null, null_mask = _inputs()
    with torch.no_grad():
        cond = m(z, t, ctx, mask)
        uncond = m(z, t, null.expand(3, -1, -1), null_mask.expand(3, -1))
        torch.testing.assert_close(GuidedDenoiser(m, ctx, mask, null, null_mask, 1.0)(z, t), cond)
        torch.testing.assert_close(GuidedDenoiser(m, ctx, mask, null, null_mask, 0.0)(z, t), uncond, atol=1e-5,
                                   rtol=1e-5)
        guided = GuidedDenoiser(m, ctx, mask, null, null_mask, 3.0)(z, t)     # one batch of 2B
        torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(cond, uncond)


def test_padding_the_context_does_not_change_the_prediction():
    m = _model()
    z, t, ctx, mask, *_ = _inputs()
    with torch.no_grad():
        padded = m(z, t, *pad_context(ctx, mask, 9))
        torch.testing.assert_close(padded, m(z, t, ctx, mask), atol=1e-5, rtol=1e-5)


def test_caption_dropout_rate_and_rows():
    B, L = 4000, 5
    ctx, mask = torch.ones(B, L, 6), torch.zeros(B, L, dtype=torch.bool)
    null, null_mask = torch.zeros(1, 2, 6), torch.zeros(1, 2, dtype=torch.bool)
    c, m = drop_captions(ctx, mask, null, null_mask, 0.1, torch.Generator().manual_seed(0))
    dropped = (c.abs().sum((1, 2)) == 0)
    assert 0.08 < dropped.float().mean() < 0.12
    assert m[dropped][:, 2:].all() and not m[dropped][:, :2].any() and not m[~dropped].any()
    assert drop_captions(ctx, mask, null, null_mask, 0.0)[0] is ctx
    assert bool((drop_captions(ctx, mask, null, null_mask, 1.0)[0] == 0).all())
    with pytest.raises(ValueError, match="p_uncond"):
        drop_captions(ctx, mask, null, null_mask, 1.5)


def test_latent_scale_is_a_checkpointed_buffer():
    m = _model()
    latents = 3.0 * torch.randn(5000, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    s = m.fit_scale(latents)
    assert abs(s - 1 / 3) < 0.01 and "latent_scale" in m.state_dict()
    with pytest.raises(ValueError, match="spread"):
        m.fit_scale(torch.ones(10, 4))


@pytest.mark.parametrize("scale", [-1.0, float("nan"), float("inf")])
def test_bad_guidance_scales(scale):
    m = _model()
    _, _, ctx, mask, null, null_mask = _inputs()
    with pytest.raises(ValueError, match="guidance"):
        GuidedDenoiser(m, ctx, mask, null, null_mask, scale)
