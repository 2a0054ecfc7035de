"""GPT: causal masking, weight tying, KV-cache decoding equals the full forward pass, sampling filters."""

import pytest
import torch

from learnloop.data.text import char_vocab
from learnloop.errors import UserError
from learnloop.models.gpt import GPT, generate_text
from learnloop.models.sampling import filter_logits, sample_next


def _model(**kw):
    torch.manual_seed(0)
    return GPT(vocab_size=20, context=32, d_model=32, n_heads=4, n_layers=2, dropout=0.0, **kw).eval()


def test_weight_tying_and_shapes():
    m = _model()
    assert m.head.weight is m.tok.weight
    assert m(torch.randint(0, 20, (3, 10))).shape == (3, 10, 20)
    untied = _model(tie_weights=False)
    assert untied.head.weight is not untied.tok.weight
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in untied.parameters())


def test_logits_depend_only_on_the_past():
    m = _model()
    x = torch.randint(0, 20, (1, 12))
    base = m(x)
    for t in range(11):
        x2 = x.clone()
        x2[0, t + 1:] = (x2[0, t + 1:] + 1) % 20
        torch.testing.assert_close(m(x2)[:, :t + 1], base[:, :t + 1])


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_kv_cache_logits_equal_full_forward(positional):
    m = _model(positional=positional)
    x = torch.randint(0, 20, (2, 20))
    full = m(x)
    caches = m.new_cache()
    parts = [m(x[:, :7], caches)]                      # prefill, then one token at a time
    parts += [m(x[:, t:t + 1], caches) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_generate_with_and_without_cache_agree_beyond_the_context():
    m = _model()
    prompt = torch.randint(0, 20, (2, 5))
    a = m.generate(prompt, 40, greedy=True, use_cache=True)      # 45 tokens > context 32: window slides
    b = m.generate(prompt, 40, greedy=True, use_cache=False)
    assert a.shape == (2, 45) and torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(m.generate(prompt, 10, top_k=5, generator=g1),
                               m.generate(prompt, 10, top_k=5, generator=g2, use_cache=False))


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.75)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.85)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.1)).tolist() == [[False, True, True, True]]
    draws = sample_next(logits.expand(2000, 4), top_p=0.85, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1, 2}
    freq = torch.bincount(draws, minlength=4).float() / 2000
    torch.testing.assert_close(freq[:3], torch.tensor([0.5, 0.3, 0.15]) / 0.95, atol=0.04, rtol=0)
    cold = sample_next(logits.expand(500, 4), temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert (cold == 0).all()


@pytest.mark.parametrize("kw, msg", [({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
                                     ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
                                     ({"top_k": 0}, "top_k")])
def test_invalid_sampling_parameters(kw, msg):
    with pytest.raises(UserError, match=msg):
        _model().generate(torch.zeros(1, 3, dtype=torch.long), 2, **kw)


def test_bad_prompts():
    m = _model()
    vocab = char_vocab(["abcdefghij"])
    assert len(vocab) <= 20
    with pytest.raises(UserError, match="longer than the context"):
        m.generate(torch.zeros(1, 33, dtype=torch.long), 1)
    with pytest.raises(UserError, match="not in the vocabulary"):
        generate_text(m, vocab, "abcXYZ", 5)
    with pytest.raises(UserError, match="empty"):
        generate_text(m, vocab, "", 5)
    with pytest.raises(UserError, match="ids must be in"):
        m.generate(torch.full((1, 3), 25), 1)
    text = generate_text(m, vocab, "abc", 5, temperature=0.8, top_k=5)
    assert text.startswith("abc") and len(text) <= 8
