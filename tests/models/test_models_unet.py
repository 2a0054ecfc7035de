"""The noise-prediction U-Net: shapes and the size constraint, the sinusoidal embedding against Ho et al.'s
formula, the zero-initialised residual paths, attention blocks against torch.nn.MultiheadAttention, the
cross-attention path with its key padding mask, per-sample independence."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learnloop.errors import UserError
from learnloop.models.unet import SpatialAttention, UNet, max_levels, timestep_embedding

SMALL = dict(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_heads=2, norm_groups=4)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter redrawn (the zero-initialised paths become active)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize("size, channels, mult, attn", [
    (28, 1, (1, 2, 2), (7,)), (28, 1, (1, 2), (14,)), ((28, 12), 3, (1, 2, 2), (7,)),
    (7, 4, (1,), (7,)), (8, 4, (1, 2, 2, 2), (1, 2)), (32, 3, (1, 2, 2, 2), (16,))])
def test_output_has_the_input_shape_for_every_valid_size(size, channels, mult, attn):
    m = UNet(size, channels, base_channels=8, channel_mult=mult, attention_resolutions=attn, attention_heads=2,
             norm_groups=4)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(3, channels, h, w)
    assert m(x, torch.tensor([0, 5, 999])).shape == x.shape
    assert m(x, torch.tensor(7)).shape == x.shape                         # one timestep for the batch


def test_out_channels_can_differ_from_in_channels():
    m = UNet(28, 1, out_channels=2, **SMALL)
    assert m(torch.randn(2, 1, 28, 28), torch.tensor([1, 2])).shape == (2, 2, 28, 28)


@pytest.mark.parametrize("size, levels", [(28, 3), (7, 1), (8, 4), (14, 2), (32, 6), ((28, 8), 3), (9, 1)])
def test_max_levels_is_the_divisibility_of_both_sides(size, levels):
    assert max_levels(size) == levels


@pytest.mark.parametrize("size, mult, match", [
    (28, (1, 2, 2, 2), "a 28x28 input allows at most 3 U-Net levels"),
    (7, (1, 2), "a 7x7 input allows at most 1 U-Net levels"),
    ((28, 10), (1, 2, 2), "a 28x10 input allows at most 2"),
])
def test_sizes_that_do_not_halve_cleanly_are_a_clear_error(size, mult, match):
    with pytest.raises(UserError, match=match):
        UNet(size, 1, base_channels=8, channel_mult=mult, attention_resolutions=(), norm_groups=4, attention_heads=2)


def test_configuration_errors_name_the_valid_values():
    with pytest.raises(UserError, match=r"attention resolutions \[5\] are not U-Net feature-map sides; they are "
                                        r"\[28, 14, 7\]"):
        UNet(28, 1, attention_resolutions=(5,))
    with pytest.raises(UserError, match="norm_groups=3 and attention_heads=4 must divide"):
        UNet(28, 1, base_channels=32, norm_groups=3)
    with pytest.raises(UserError, match="positive int or None"):
        UNet(28, 1, context_dim=0)
    m = UNet(28, 1, **SMALL)
    with pytest.raises(UserError, match=r"takes \(B, 1, 28, 28\) inputs, got \(2, 1, 32, 32\)"):
        m(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]))
    with pytest.raises(UserError, match="timesteps must be a scalar or"):
        m(torch.randn(2, 1, 28, 28), torch.tensor([1, 2, 3]))


def test_timestep_embedding_is_ho_et_al_formula():
    """tensor2tensor's get_timestep_embedding as Ho et al. use it, written out in float64 numpy."""
    t = np.array([0, 1, 17, 500, 999], dtype=np.float64)
    for dim in (8, 32, 33):
        half = dim // 2
        freqs = np.exp(np.arange(half) * -(math.log(10000) / (half - 1)))
        want = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], axis=1)
        if dim % 2:
            want = np.pad(want, ((0, 0), (0, 1)))
        got = timestep_embedding(torch.tensor(t), dim).double().numpy()
        np.testing.assert_allclose(got, want, atol=2e-4)        # float32 arguments up to t w = 999
    emb = timestep_embedding(torch.arange(1000), 32)
    assert torch.cdist(emb, emb).add(torch.eye(1000) * 10).min() > 1e-3   # every timestep has its own code


def test_initial_network_predicts_zero_and_every_parameter_then_learns():
    """Ho et al.'s init: zero last conv per ResBlock, zero attention projections and head -> output 0."""
    m = UNet(28, 1, **SMALL)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(m(x, torch.tensor([3, 900])), torch.zeros_like(x))
    randomized(m).train()
    m(x, torch.tensor([3, 900])).pow(2).mean().backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


def test_output_depends_on_the_timestep_and_each_sample_only_on_itself():
    m = randomized(UNet(28, 1, **SMALL))
    x = torch.randn(4, 1, 28, 28)
    t = torch.tensor([10, 200, 500, 999])
    out = m(x, t)
    assert (out - m(x, t.flip(0))).abs().max() > 1e-3
    for i in range(4):                                    # GroupNorm, no batch statistics
        torch.testing.assert_close(m(x[i:i + 1], t[i:i + 1]), out[i:i + 1], atol=1e-5, rtol=1e-5)


def test_self_attention_block_equals_torch_multihead_attention():
    block = randomized(SpatialAttention(16, 4, 4))
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    ref.load_state_dict(block.attn.state_dict())
    x = torch.randn(2, 16, 7, 7)
    tokens = F.group_norm(x, 4, block.norm.weight, block.norm.bias).flatten(2).transpose(1, 2)
    want = x + ref(tokens, tokens, tokens, need_weights=False)[0].transpose(1, 2).reshape(2, 16, 7, 7)
    torch.testing.assert_close(block(x), want, atol=1e-5, rtol=1e-5)


def test_cross_attention_equals_torch_and_hides_padded_keys():
    block = randomized(SpatialAttention(16, 4, 4, context_dim=12), seed=1)
    ref = torch.nn.MultiheadAttention(16, 4, kdim=12, vdim=12, batch_first=True)
    ref.load_state_dict(block.attn.state_dict())
    x, ctx = torch.randn(2, 16, 7, 7), torch.randn(2, 5, 12)
    mask = torch.tensor([[False, False, True, True, True], [False, False, False, False, True]])
    tokens = F.group_norm(x, 4, block.norm.weight, block.norm.bias).flatten(2).transpose(1, 2)
    want = x + ref(tokens, ctx, ctx, key_padding_mask=mask, need_weights=False)[0].transpose(1, 2).reshape(x.shape)
    got = block(x, ctx, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    changed = ctx.clone()
    changed[mask] = torch.randn(int(mask.sum()), 12) * 100          # what padding holds does not matter
    torch.testing.assert_close(block(x, changed, mask), got)
    none = torch.ones(2, 5, dtype=torch.bool)                         # nothing to attend to: only the bias
    torch.testing.assert_close(block(x, ctx, none), x + block.attn.out_proj.bias[None, :, None, None])


def test_conditional_unet_uses_the_context_and_checks_it():
    m = randomized(UNet(28, 1, context_dim=12, **SMALL))
    assert sum("cross" in n for n, _ in m.named_parameters()) > 0
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 600])
    ctx, mask = torch.randn(2, 3, 12), torch.tensor([[False, False, True], [False, False, False]])
    out = m(x, t, ctx, mask)
    assert out.shape == x.shape and (out - m(x, t, torch.randn(2, 3, 12), mask)).abs().max() > 1e-3
    with pytest.raises(UserError, match=r"attends to a context \(B, L, 12\) with B=2, got None"):
        m(x, t)
    with pytest.raises(UserError, match="got \\(2, 3, 7\\)"):
        m(x, t, torch.randn(2, 3, 7))
    with pytest.raises(UserError, match="context_mask must be bool"):
        m(x, t, ctx, mask.float())
    with pytest.raises(UserError, match="no conditioning path"):
        UNet(28, 1, **SMALL)(x, t, ctx)


def test_unconditional_unet_has_no_cross_attention_and_a_7x7_latent_unet_works():
    assert not any("cross" in n for n, _ in UNet(28, 1, **SMALL).named_parameters())
    m = randomized(UNet(7, 4, base_channels=16, channel_mult=(1,), num_res_blocks=2, attention_resolutions=(7,),
                        context_dim=8, attention_heads=2, norm_groups=4))
    z = torch.randn(3, 4, 7, 7)
    assert m(z, torch.tensor([1, 2, 3]), torch.randn(3, 6, 8), torch.zeros(3, 6, dtype=torch.bool)).shape == z.shape
