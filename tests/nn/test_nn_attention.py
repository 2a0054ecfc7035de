"""Attention, positional encodings and Transformer layers: equivalence with torch.nn and mask properties."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnloop.nn.attention import KVCache, MultiheadAttention, look_ahead_mask, scaled_dot_product_attention
from learnloop.nn.positional import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)
from learnloop.nn.transformer import (
    Transformer,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

E, H, B, L, S = 16, 4, 3, 5, 7


def _pair(cls_ours, cls_torch, *args, **kw):
    torch.manual_seed(0)
    ref = cls_torch(*args, **kw).double()
    ours = cls_ours(*args, **kw).double()
    missing = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    return ours, ref


def _inputs(batch_first, kdim=E, vdim=E, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (lambda n, d: (B, n, d)) if batch_first else (lambda n, d: (n, B, d))
    q = torch.randn(*shape(L, E), generator=g, dtype=torch.double, requires_grad=True)
    k = torch.randn(*shape(S, kdim), generator=g, dtype=torch.double, requires_grad=True)
    v = torch.randn(*shape(S, vdim), generator=g, dtype=torch.double, requires_grad=True)
    return q, k, v


def _masks(kind):
    g = torch.Generator().manual_seed(2)
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[0, -2:] = True
    kpm[2, -1] = True
    if kind == "none":
        return {}
    if kind == "key_padding":
        return {"key_padding_mask": kpm}
    if kind == "bool_attn":
        return {"attn_mask": look_ahead_mask(L, S)}
    if kind == "float_attn":
        return {"attn_mask": torch.randn(L, S, generator=g, dtype=torch.double)}
    if kind == "3d_attn+padding":
        return {"attn_mask": torch.randn(B * H, L, S, generator=g, dtype=torch.double),
                "key_padding_mask": torch.zeros(B, S, dtype=torch.double).masked_fill(kpm, float("-inf"))}
    if kind == "both":
        return {"attn_mask": look_ahead_mask(L, S), "key_padding_mask": kpm}
    raise ValueError(kind)


def _grads(module, tensors):
    return [t.grad.clone() for t in tensors] + [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "key_padding", "bool_attn", "float_attn", "3d_attn+padding", "both"])
@pytest.mark.parametrize("average", [True, False])
def test_multihead_attention_matches_torch(batch_first, masks, average):
    ours, ref = _pair(MultiheadAttention, nn.MultiheadAttention, E, H, batch_first=batch_first)
    outs = []
    for m in (ours, ref):
        q, k, v = _inputs(batch_first)
        out, w = m(q, k, v, need_weights=True, average_attn_weights=average, **_masks(masks))
        (out.square().sum() + w.sum()).backward()
        outs.append((out, w, _grads(m, (q, k, v))))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    for a, b in zip(outs[0][2], outs[1][2]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("options", [{"kdim": 6, "vdim": 10}, {"add_bias_kv": True}, {"add_zero_attn": True},
                                     {"bias": False}, {"add_bias_kv": True, "add_zero_attn": True}])
def test_multihead_attention_options_match_torch(options):
    ours, ref = _pair(MultiheadAttention, nn.MultiheadAttention, E, H, batch_first=True, **options)
    outs = []
    for m in (ours, ref):
        q, k, v = _inputs(True, options.get("kdim", E), options.get("vdim", E))
        out, w = m(q, k, v, **_masks("both"))
        out.sum().backward()
        outs.append((out, w, _grads(m, (q, k, v))))
    for a, b in zip([outs[0][0], outs[0][1], *outs[0][2]], [outs[1][0], outs[1][1], *outs[1][2]]):
        torch.testing.assert_close(a, b)


def test_multihead_attention_unbatched_and_no_weights():
    ours, ref = _pair(MultiheadAttention, nn.MultiheadAttention, E, H)
    x = torch.randn(L, E, dtype=torch.double)
    a, wa = ours(x, x, x, attn_mask=look_ahead_mask(L))
    b, wb = ref(x, x, x, attn_mask=look_ahead_mask(L))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(wa, wb)
    assert ours(x, x, x, need_weights=False)[1] is None


def test_attention_weights_are_a_distribution_and_masked_exactly():
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 3)
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[:, :, 4:] = True
    out, w = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4))
    assert (w[..., 4:] == 0).all()
    torch.testing.assert_close(out, w[..., :4] @ v[:, :4])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)
    m = MultiheadAttention(E, H, batch_first=True)
    x = torch.randn(B, L, E)
    with pytest.raises(ValueError, match="key_padding_mask"):
        m(x, x, x, key_padding_mask=torch.zeros(B, L + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="embed_dim"):
        m(torch.randn(B, L, E + 1), x, x)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("train", [False, True])
def test_encoder_layer_matches_torch(norm_first, activation, train):
    ours, ref = _pair(TransformerEncoderLayer, nn.TransformerEncoderLayer, E, H, dim_feedforward=32, dropout=0.0,
                      activation=activation, batch_first=True, norm_first=norm_first)
    kpm = torch.zeros(B, L, dtype=torch.bool)
    kpm[1, -2:] = True
    outs = []
    for m in (ours, ref):
        m.train(train)
        x = torch.randn(B, L, E, dtype=torch.double, generator=torch.Generator().manual_seed(3), requires_grad=True)
        with torch.set_grad_enabled(train):
            y = m(x, src_mask=look_ahead_mask(L), src_key_padding_mask=kpm)
        if train:
            y.square().sum().backward()
            outs.append([y, *_grads(m, (x,))])
        else:
            outs.append([y.masked_fill(kpm[..., None], 0)])       # torch's fast path may zero padded rows
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_decoder_layer_matches_torch(norm_first, batch_first):
    ours, ref = _pair(TransformerDecoderLayer, nn.TransformerDecoderLayer, E, H, dim_feedforward=32, dropout=0.0,
                      batch_first=batch_first, norm_first=norm_first)
    mkpm = torch.zeros(B, S, dtype=torch.bool)
    mkpm[0, -3:] = True
    outs = []
    for m in (ours, ref):
        tgt, mem, _ = _inputs(batch_first)
        y = m(tgt, mem, tgt_mask=Transformer.generate_square_subsequent_mask(L, dtype=torch.double),
              memory_key_padding_mask=mkpm)
        y.square().sum().backward()
        outs.append([y, *_grads(m, (tgt, mem))])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


def test_transformer_matches_torch():
    kw = {"d_model": E, "nhead": H, "num_encoder_layers": 2, "num_decoder_layers": 2, "dim_feedforward": 32, "dropout": 0.0,
              "batch_first": True}
    ours, ref = _pair(Transformer, nn.Transformer, **kw)
    g = torch.Generator().manual_seed(4)
    src, tgt = torch.randn(B, S, E, generator=g, dtype=torch.double), torch.randn(B, L, E, generator=g,
                                                                                   dtype=torch.double)
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[2, -2:] = True
    mask = nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.double)
    torch.testing.assert_close(Transformer.generate_square_subsequent_mask(L, dtype=torch.double), mask)
    outs = [m.train()(src, tgt, tgt_mask=mask, src_key_padding_mask=kpm, memory_key_padding_mask=kpm)
            for m in (ours, ref)]
    torch.testing.assert_close(*outs)


def test_look_ahead_mask_hides_the_future():
    torch.manual_seed(0)
    layer = TransformerDecoderLayer(E, H, 32, dropout=0.0, batch_first=True)
    enc = TransformerEncoder(TransformerEncoderLayer(E, H, 32, dropout=0.0, batch_first=True, norm_first=True), 2)
    x, mem = torch.randn(1, 8, E), torch.randn(1, 6, E)
    base_dec = layer(x, mem, tgt_is_causal=True)
    base_enc = enc(x, is_causal=True)
    for t in range(7):                    # change position t+1 onwards: outputs 0..t must not move
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn(1, 7 - t, E)
        torch.testing.assert_close(layer(x2, mem, tgt_is_causal=True)[:, :t + 1], base_dec[:, :t + 1])
        torch.testing.assert_close(enc(x2, is_causal=True)[:, :t + 1], base_enc[:, :t + 1])
        assert not torch.allclose(layer(x2, mem, tgt_is_causal=True)[:, t + 1], base_dec[:, t + 1])


def test_padding_never_leaks():
    torch.manual_seed(0)
    enc = TransformerEncoder(TransformerEncoderLayer(E, H, 32, dropout=0.0, batch_first=True), 2)
    dec = TransformerDecoderLayer(E, H, 32, dropout=0.0, batch_first=True)
    x = torch.randn(2, 6, E)
    kpm = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    x2 = x.clone()
    x2[0, 4:] = 100 * torch.randn(2, E)                   # garbage in the padded slots
    real = ~kpm
    torch.testing.assert_close(enc(x, src_key_padding_mask=kpm)[real], enc(x2, src_key_padding_mask=kpm)[real])
    tgt = torch.randn(2, 3, E)
    torch.testing.assert_close(dec(tgt, x, memory_key_padding_mask=kpm), dec(tgt, x2, memory_key_padding_mask=kpm))


def test_kv_cache_decoding_equals_the_causal_forward_pass():
    torch.manual_seed(0)
    m = MultiheadAttention(E, H, batch_first=True).eval()
    x = torch.randn(2, 9, E)
    full = m(x, x, x, is_causal=True, need_weights=False)[0]
    cache = KVCache()
    parts = [m(x[:, :4], x[:, :4], x[:, :4], is_causal=True, kv_cache=cache, need_weights=False)[0]]
    for t in range(4, 9):
        xt = x[:, t:t + 1]
        parts.append(m(xt, xt, xt, is_causal=True, kv_cache=cache, need_weights=False)[0])
    torch.testing.assert_close(torch.cat(parts, 1), full)
    assert len(cache) == 9


def test_sinusoidal_pe_shift_is_a_fixed_linear_map():
    d, n = 16, 200
    pe = sinusoidal_encoding(torch.arange(n + 10), d).double()
    omega = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.double) / d)
    for k in (1, 3, 10):
        rot = torch.zeros(d, d, dtype=torch.double)          # R_k from the module docstring
        c, s = torch.cos(k * omega), torch.sin(k * omega)
        for i in range(d // 2):
            rot[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[c[i], s[i]], [-s[i], c[i]]])
        # one matrix, every position: PE(pos + k) = R_k PE(pos)
        torch.testing.assert_close(pe[k:n + k], pe[:n] @ rot.T, atol=1e-5, rtol=0)
    assert pe[:, 0::2].abs().max() <= 1 and pe[0, 1::2].eq(1).all()


def test_positional_encoding_modules():
    x = torch.zeros(2, 5, 8)
    pe = SinusoidalPositionalEncoding(8, max_len=10)
    torch.testing.assert_close(pe(x)[0], sinusoidal_encoding(torch.arange(5), 8))
    torch.testing.assert_close(pe(x[:, :1], offset=3)[0, 0], sinusoidal_encoding(torch.arange(5), 8)[3])
    with pytest.raises(ValueError, match="maximum length"):
        pe(torch.zeros(1, 11, 8))
    learned = LearnedPositionalEncoding(8, max_len=5)
    assert learned(x).shape == x.shape
    with pytest.raises(ValueError, match="maximum length"):
        learned(x, offset=1)


def _fully_masked_masks(kind):
    """Masks that hide every key from some query rows; returns (masks, (B, L) bool: row fully hidden)."""
    g = torch.Generator().manual_seed(5)
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[1] = True                                          # batch element 1: every key is padding
    kpm[2, :2] = True
    am = torch.zeros(L, S, dtype=torch.bool)
    am[0] = True                                           # query 0 may attend to nothing
    am[3, 2:] = True
    def flt(m):
        return torch.zeros(m.shape, dtype=torch.double).masked_fill(m, float("-inf"))
    full_kpm = kpm.all(1)[:, None].expand(B, L)
    full_am = am.all(1)[None, :].expand(B, L)
    if kind == "key_padding":
        return {"key_padding_mask": kpm}, full_kpm
    if kind == "key_padding_float":
        return {"key_padding_mask": flt(kpm)}, full_kpm
    if kind == "attn":
        return {"attn_mask": am}, full_am
    if kind == "attn_float":
        return {"attn_mask": flt(am) + torch.randn(L, S, generator=g, dtype=torch.double)}, full_am
    if kind == "attn_3d":
        am3 = torch.zeros(B * H, L, S, dtype=torch.bool)
        am3[H * 2:H * 3, 4] = True                          # every head of element 2 hides all keys of query 4
        return {"attn_mask": am3}, am3.reshape(B, H, L, S).all(-1).all(1)
    if kind == "both":
        # together, not alone: element 2 pads keys 0-1 and query 3 hides keys 2-6
        kpm2 = torch.zeros(B, S, dtype=torch.bool)
        kpm2[2, :2] = True
        return {"attn_mask": am, "key_padding_mask": kpm2}, full_am | (torch.arange(B) == 2)[:, None] & (
            torch.arange(L) == 3)[None, :]
    raise ValueError(kind)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["key_padding", "key_padding_float", "attn", "attn_float", "attn_3d", "both"])
def test_fully_masked_query_rows_give_zero_attention_like_torch(batch_first, kind):
    ours, ref = _pair(MultiheadAttention, nn.MultiheadAttention, E, H, batch_first=batch_first)
    with torch.no_grad():                                  # non-zero biases, so "0 attention" is visible
        ref.in_proj_bias.normal_(generator=torch.Generator().manual_seed(6))
        ref.out_proj.bias.normal_(generator=torch.Generator().manual_seed(7))
    ours.load_state_dict(ref.state_dict())
    masks, full = _fully_masked_masks(kind)
    assert full.any() and not full.all()
    runs = []
    for m, need in ((ref, False), (ours, False), (ours, True)):
        q, k, v = _inputs(batch_first)
        m.zero_grad()
        out, w = m(q, k, v, need_weights=need, **masks)
        out.square().sum().backward()
        runs.append((out, w, _grads(m, (q, k, v))))
    (ref_out, _, ref_grads) = runs[0]
    assert not ref_out.isnan().any()
    for out, _, grads in runs[1:]:
        torch.testing.assert_close(out, ref_out)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b)
    out_bf = ref_out if batch_first else ref_out.transpose(0, 1)
    torch.testing.assert_close(out_bf[full], ref.out_proj.bias.expand(int(full.sum()), E))   # attention is 0
    # weights: torch's need_weights=True path gives NaN in fully hidden rows (and in their outputs); ours 0
    q, k, v = _inputs(batch_first)
    ref_out_w, ref_w = ref(q, k, v, need_weights=True, **masks)
    w = runs[2][1]
    assert ref_w[full].isnan().all() and not ref_w[~full].isnan().any()
    assert (w[full] == 0).all()
    torch.testing.assert_close(w[~full], ref_w[~full])
    torch.testing.assert_close(w.sum(-1), (~full).double())
    ref_out_w = ref_out_w if batch_first else ref_out_w.transpose(0, 1)
    ours_bf = runs[2][0] if batch_first else runs[2][0].transpose(0, 1)
    torch.testing.assert_close(ours_bf[~full], ref_out_w[~full])


def test_fully_masked_rows_against_torch_fast_path():
    """Eval + no grad + batch-first self-attention takes torch's native fast path, which (torch 2.x) still
    gives NaN in fully hidden rows: ours equals it elsewhere and equals torch's SDPA path everywhere."""
    ours, ref = _pair(MultiheadAttention, nn.MultiheadAttention, E, H, batch_first=True)
    with torch.no_grad():
        ref.out_proj.bias.normal_(generator=torch.Generator().manual_seed(7))
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    kpm = torch.zeros(B, L, dtype=torch.bool)
    kpm[0] = True
    kpm[1, :3] = True
    x = torch.randn(B, L, E, dtype=torch.double, generator=torch.Generator().manual_seed(8))
    slow = ref(x, x, x, key_padding_mask=kpm, need_weights=False)[0]             # grad enabled: SDPA path
    with torch.no_grad():
        a = ours(x, x, x, key_padding_mask=kpm, need_weights=False)[0]
        fast = ref(x, x, x, key_padding_mask=kpm, need_weights=False)[0]
    assert not a.isnan().any() and not slow.isnan().any()
    torch.testing.assert_close(a, slow)
    finite = ~fast.isnan().any(-1)
    assert finite[1:].all()
    torch.testing.assert_close(a[finite], fast[finite])


@pytest.mark.parametrize("dtype_mask", [torch.bool, torch.double])
def test_scaled_dot_product_attention_matches_torch_sdpa_with_fully_masked_rows(dtype_mask):
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g, dtype=torch.double, requires_grad=True) for n in (5, 6, 6))
    hide = torch.rand(2, 3, 5, 6, generator=g) < 0.4
    hide[0, 1, 2] = True
    hide[1, :, 4] = True
    mask = hide if dtype_mask == torch.bool else torch.zeros(hide.shape, dtype=torch.double).masked_fill(
        hide, float("-inf"))
    ours, w = scaled_dot_product_attention(q, k, v, mask)
    ours.square().sum().backward()
    ours_grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    # torch's bool masks mean the opposite: True = may attend
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=~hide if dtype_mask == torch.bool else mask)
    ref.square().sum().backward()
    torch.testing.assert_close(ours, ref)
    for a, t in zip(ours_grads, (q, k, v)):
        torch.testing.assert_close(a, t.grad)
    full = hide.all(-1)
    assert full.sum() >= 4 and (ours[full] == 0).all() and (w[full] == 0).all()


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("norm_first", [False, True])
def test_left_padded_encoder_has_no_nan_and_matches_torch(train, causal, norm_first):
    """Left padding under the look-ahead mask makes the padded queries attend to nothing; a fully padded
    sequence does so without it. With softmax NaN there, layer 2 would spread it to real positions (torch's
    own eval fast path does: with grad off its encoder layer returns NaN there, so the reference is torch's
    SDPA path, which runs with grad on; the fast path is compared wherever it is finite)."""
    torch.manual_seed(0)
    kw = {"dim_feedforward": 32, "dropout": 0.0, "batch_first": True, "norm_first": norm_first}
    ref = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, **kw), 2, enable_nested_tensor=False).double()
    ours = TransformerEncoder(TransformerEncoderLayer(E, H, **kw), 2).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.train(train), ref.train(train)
    kpm = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    real = ~kpm
    x = torch.randn(4, L, E, dtype=torch.double, generator=torch.Generator().manual_seed(10))
    x2 = x.clone()
    x2[kpm] = 100 * torch.randn(int(kpm.sum()), E, dtype=torch.double)      # garbage in the padded slots
    kw = {"mask": look_ahead_mask(L), "is_causal": True} if causal else {}
    ref_out = ref(x, src_key_padding_mask=kpm, **kw)
    with torch.set_grad_enabled(train):
        ours_out = ours(x, src_key_padding_mask=kpm, **kw)
    assert not ours_out.isnan().any() and not ref_out.isnan().any()
    torch.testing.assert_close(ours_out, ref_out)
    with torch.no_grad():
        fast = ref(x, src_key_padding_mask=kpm, **kw)
        torch.testing.assert_close(ours(x2, src_key_padding_mask=kpm, **kw)[real], ours_out[real])
    finite = ~fast.isnan().any(-1)
    assert finite[2].all()                                      # the unpadded sequence, at least
    torch.testing.assert_close(ours_out[real & finite], fast[real & finite])
