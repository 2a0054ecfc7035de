"""GPT: causal masking, weight tying, KV-cache decoding equals the full forward pass, sampling filters."""

import pytest
import torch

from learnloop.data.text import char_vocab
from learnloop.errors import UserError
from learnloop.models.gpt import GPT, generate_text
from learnloop.models.sampling import filter_logits, sample_next
from learnloop.nn.attention import KVCache


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


def _step_logits(m, prompt, n):
    """Greedy decoding by hand, cached and uncached side by side: (tokens, cached logits, uncached logits)."""
    out, caches, fresh, cached, full = prompt, m.new_cache(), prompt, [], []
    for _ in range(n):
        cached.append(m(fresh, caches)[:, -1])
        full.append(m(out)[:, -1])
        fresh = full[-1].argmax(-1, keepdim=True)
        out = torch.cat([out, fresh], 1)
    return out, torch.stack(cached, 1), torch.stack(full, 1), caches


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("batch, prompt_len", [(1, 1), (1, 7), (3, 2), (2, 16), (4, 31)])
def test_cached_decoding_equals_uncached_up_to_the_full_context(dtype, tol, batch, prompt_len):
    m = _model().to(dtype)
    g = torch.Generator().manual_seed(batch * 100 + prompt_len)
    prompt = torch.randint(0, 20, (batch, prompt_len), generator=g)
    n = m.context - prompt_len                                  # the last step fills the whole context
    out, cached, full, caches = _step_logits(m, prompt, n)
    assert cached.dtype == dtype and out.shape == (batch, m.context)
    torch.testing.assert_close(cached, full, atol=tol, rtol=tol)
    assert all(len(c) == m.context - 1 for c in caches)
    a = m.generate(prompt, n, greedy=True, use_cache=True)
    assert torch.equal(a, m.generate(prompt, n, greedy=True, use_cache=False))
    if dtype == torch.float64:                                  # the hand loop's argmax of uncached logits
        assert torch.equal(a, out)
    with pytest.raises(UserError, match="exceeds the context"):
        m(out[:, -2:], caches)                                  # context - 1 cached + 2 new


@pytest.mark.parametrize("sampling", [{"top_k": 3}, {"top_p": 0.8}, {"top_k": 5, "top_p": 0.9, "temperature": 0.7},
                                      {"temperature": 1.5}])
@pytest.mark.parametrize("batch, prompt_len, new", [(1, 1, 31), (3, 4, 12), (2, 30, 10)])
def test_cached_sampling_equals_uncached_with_a_fixed_generator(sampling, batch, prompt_len, new):
    m = _model()
    prompt = torch.randint(0, 20, (batch, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    a = m.generate(prompt, new, generator=torch.Generator().manual_seed(7), **sampling)
    b = m.generate(prompt, new, generator=torch.Generator().manual_seed(7), use_cache=False, **sampling)
    assert a.shape == (batch, prompt_len + new) and torch.equal(a[:, :prompt_len], prompt)
    assert torch.equal(a, b)


def test_cache_buffers_are_allocated_once_and_written_in_place():
    m = _model()
    caches = m.new_cache()
    x = torch.randint(0, 20, (2, 12))
    m(x[:, :5], caches)
    k0, v0 = caches[0].k, caches[0].v
    ptrs = (k0.data_ptr(), v0.data_ptr())
    for t in range(5, 12):
        m(x[:, t:t + 1], caches)
        assert (caches[0].k.data_ptr(), caches[0].v.data_ptr()) == ptrs      # same storage, no new buffer
    assert caches[0].k.shape == (2, 4, 12, 8) and len(caches[1]) == 12
    torch.testing.assert_close(caches[0].k[:, :, :5], k0)                    # earlier slots untouched
    for c in caches:
        c.reset()
    assert len(caches[0]) == 0 and caches[0].k is None
    torch.testing.assert_close(m(x, caches), m(x), atol=1e-5, rtol=1e-5)     # reuse after reset
    assert caches[0].k.data_ptr() == ptrs[0]


def test_kv_cache_without_max_len_grows_and_keeps_its_contents():
    torch.manual_seed(0)
    ks = [torch.randn(2, 3, n, 4) for n in (1, 1, 3, 1, 5, 2)]
    cache, bounded = KVCache(), KVCache(max_len=13)
    for k in ks:
        got_k, got_v = cache.append(k, 2 * k)
        bounded.append(k, 2 * k)
    assert torch.equal(got_k, torch.cat(ks, 2)) and torch.equal(got_v, 2 * torch.cat(ks, 2))
    assert torch.equal(bounded.k, got_k) and len(cache) == len(bounded) == 13
    with pytest.raises(ValueError, match="at most 13"):
        bounded.append(ks[0], ks[0])
    with pytest.raises(ValueError, match="do not continue"):
        cache.append(torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4))      # other batch size
    with pytest.raises(ValueError, match="max_len"):
        KVCache(max_len=0)
    cache.reset()
    assert torch.equal(cache.append(ks[0].double(), ks[0].double())[0], ks[0].double())  # new dtype after reset


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


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_static_and_dynamic_cached_steps_and_any_thread_count_decode_the_same_tokens(threads):
    m = _model()
    prompt = torch.randint(0, 20, (2, 3), generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    static = m.generate(prompt, 20, greedy=True, threads=threads)
    dynamic = m.generate(prompt, 20, greedy=True, static_cache=False, threads=threads)
    full = m.generate(prompt, 20, greedy=True, use_cache=False)
    assert torch.equal(static, full) and torch.equal(dynamic, full)
    assert torch.get_num_threads() == before


def test_static_step_logits_equal_attending_over_the_filled_slots():
    m = _model()
    x = torch.randint(0, 20, (3, 10))
    for static in (True, False):
        caches = m.new_cache(static=static)
        m(x[:, :4], caches)
        steps = torch.cat([m(x[:, t:t + 1], caches) for t in range(4, 10)], dim=1)
        assert caches[0].is_static == static
        torch.testing.assert_close(steps, m(x)[:, 4:], atol=1e-5, rtol=1e-5)
    caches[0].reset()
    with pytest.raises(ValueError, match="static"):
        caches[0].static()
