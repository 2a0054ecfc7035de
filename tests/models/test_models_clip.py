"""CLIP (learnloop.models.clip): shapes, the temperature and its clamp, logits as scaled cosines, pooling,
padding invariance, the text Transformer against torch.nn.TransformerEncoder, the prompt ensemble."""

import math

import pytest
import torch
import torch.nn.functional as F

from learnloop.models.clip import CLIP, ImageEncoder, TextEncoder, prompt_ensemble

VOCAB, CONTEXT = 20, 12


def model(pooling="eos", seed=0, **kw):
    torch.manual_seed(seed)
    return CLIP(ImageEncoder(1, 28, width=4, feature_dim=16), TextEncoder(VOCAB, CONTEXT, 16, 2, 4, pooling=pooling),
                embed_dim=8, **kw).eval()


def texts(lengths, T=None, seed=0):
    """Right-padded ids: [BOS]=1, words in 3..VOCAB-1, [EOS]=2, [PAD]=0."""
    g = torch.Generator().manual_seed(seed)
    T = T or max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, n - 1] = 1, 2
        ids[i, 1:n - 1] = torch.randint(3, VOCAB, (n - 2,), generator=g)
    return ids, ids == 0


def test_shapes_and_unit_embeddings():
    m = model()
    x = torch.randn(5, 1, 28, 28)
    ids, pad = texts([3, 7, 5, 4, 6])
    img = m.encode_image(x)
    txt, states = m.encode_text(ids, pad)
    assert img.shape == (5, 8) and txt.shape == (5, 8) and states.shape == (5, 7, m.text_width) == (5, 7, 16)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(5))
    assert m.image_features(x).shape == (5, 16)
    torch.testing.assert_close(m.project_image(m.image_features(x)), img)
    raw, _ = m.encode_text(ids, pad, normalize=False)
    torch.testing.assert_close(F.normalize(raw, dim=1), txt)


def test_logits_are_scaled_cosines():
    m = model()
    x = torch.randn(4, 1, 28, 28)
    ids, pad = texts([3, 7, 5, 4])
    logits = m(x, ids, pad)
    img = m.image_proj(m.image_encoder(x))
    txt = m.text_proj(m.text_encoder(ids, pad)[0])
    cos = F.cosine_similarity(img[:, None], txt[None], dim=-1)
    torch.testing.assert_close(logits, cos / 0.07, rtol=1e-4, atol=1e-5)


def test_temperature_init_and_clamp():
    m = model()
    assert m.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert m.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        m.logit_scale.fill_(7.0)                                   # exp(7) > 100: clamped
    assert m.scale().item() == pytest.approx(100.0, rel=1e-6)
    m.scale().backward()
    assert m.logit_scale.grad.item() == 0.0                        # no gradient beyond the clamp
    m2 = model(logit_scale_init=1.0, logit_scale_max=math.log(50))
    assert m2.scale().item() == pytest.approx(math.e)
    m2.scale().backward()
    assert m2.logit_scale.grad.item() == pytest.approx(math.e)


@pytest.mark.parametrize("pooling", ["eos", "mean"])
def test_pooling_and_padding_invariance(pooling):
    m = model(pooling)
    ids, pad = texts([3, 8, 5])
    longer, longer_pad = texts([3, 8, 5], T=CONTEXT)
    emb, states = m.encode_text(ids, pad)
    emb2, states2 = m.encode_text(longer, longer_pad)
    torch.testing.assert_close(emb, emb2, rtol=1e-5, atol=1e-6)
    for i, n in enumerate([3, 8, 5]):
        torch.testing.assert_close(states[i, :n], states2[i, :n], rtol=1e-5, atol=1e-6)
        alone, _ = m.text_encoder(ids[i:i + 1, :n], pad[i:i + 1, :n])     # batch of one, no padding
        pooled, _ = m.text_encoder(ids, pad)
        torch.testing.assert_close(pooled[i], alone[0], rtol=1e-5, atol=1e-6)
        expect = states[i, n - 1] if pooling == "eos" else states[i, :n].mean(0)
        torch.testing.assert_close(pooled[i], expect)


def test_text_transformer_matches_torch():
    m = model()
    enc = m.text_encoder
    layer = torch.nn.TransformerEncoderLayer(16, 4, 64, 0.0, activation="gelu", batch_first=True, norm_first=True)
    ref = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(16), enable_nested_tensor=False).eval()
    ref.load_state_dict(enc.transformer.state_dict())
    ids, pad = texts([3, 9, 6])
    h = enc.pos(enc.tok(ids))
    _, states = enc(ids, pad)
    expect = ref(h, src_key_padding_mask=pad)
    real = ~pad
    torch.testing.assert_close(states[real], expect[real], rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter():
    m = model().train()
    ids, pad = texts([3, 7, 5, 4])
    m(torch.randn(4, 1, 28, 28), ids, pad).logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_bad_text_inputs():
    enc = model().text_encoder
    ids, pad = texts([3, 4])
    with pytest.raises(ValueError, match="non-padding"):
        enc(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="context"):
        enc(*texts([CONTEXT + 1]))
    with pytest.raises(ValueError, match="pad_mask"):
        enc(ids, pad[:, :2])
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(VOCAB, CONTEXT, pooling="max")


def test_prompt_ensemble():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 4, 8, generator=g) * torch.rand(3, 4, 1, generator=g) * 5
    out = prompt_ensemble(e)
    for c in range(3):
        mean = sum(e[c, k] / e[c, k].norm() for k in range(4)) / 4
        torch.testing.assert_close(out[c], mean / mean.norm())
    torch.testing.assert_close(prompt_ensemble(e[:, :1]), F.normalize(e[:, 0], dim=1))
    with pytest.raises(ValueError):
        prompt_ensemble(e[0])
