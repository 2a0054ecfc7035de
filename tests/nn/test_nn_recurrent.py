"""learnloop.nn recurrent blocks equal torch.nn.RNN/LSTM/GRU (outputs, final states, gradients)."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from learnloop import nn as lnn
from learnloop.nn.recurrent import RECURRENT

TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
I, H, T, B = 5, 7, 6, 4  # noqa: E741 - torch.nn.RNN names: input, hidden, time, batch
LENGTHS = torch.tensor([6, 3, 5, 1])


def _pair(kind, impl, dtype, **kw):
    torch.manual_seed(0)
    ref = TORCH[kind](I, H, **kw).to(dtype)
    mine = RECURRENT[kind](I, H, impl=impl, **kw).to(dtype)
    mine.load_state_dict(ref.state_dict())                 # torch state dicts load unchanged
    return ref, mine


def _compare(kind, impl, dtype, layers, bidir, batch_first, ragged, **extra):
    ref, mine = _pair(kind, impl, dtype, num_layers=layers, bidirectional=bidir, batch_first=batch_first, **extra)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g, dtype=dtype)
    D = 2 if bidir else 1
    hsize = extra.get("proj_size") or H
    h0 = torch.randn(layers * D, B, hsize, generator=g, dtype=dtype, requires_grad=True)
    c0 = torch.randn(layers * D, B, H, generator=g, dtype=dtype, requires_grad=True)
    hx = (h0, c0) if kind == "lstm" else h0
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    if ragged:
        packed = pack_padded_sequence(x1, LENGTHS, batch_first=batch_first, enforce_sorted=False)
        out1, hn1 = ref(packed, hx)
        out1, _ = pad_packed_sequence(out1, batch_first=batch_first, total_length=T)
        out2, hn2 = mine(x2, hx, lengths=LENGTHS)
    else:
        out1, hn1 = ref(x1, hx)
        out2, hn2 = mine(x2, hx)
    hn1 = hn1 if isinstance(hn1, tuple) else (hn1,)
    hn2 = hn2 if isinstance(hn2, tuple) else (hn2,)
    results1, results2 = (out1, *hn1), (out2, *hn2)
    weights = [torch.randn(r.shape, generator=g, dtype=dtype) for r in results1]
    inputs1 = [x1, h0] + ([c0] if kind == "lstm" else [])
    grads1 = torch.autograd.grad(sum((r * w).sum() for r, w in zip(results1, weights)), inputs1 + list(ref.parameters()))
    grads2 = torch.autograd.grad(sum((r * w).sum() for r, w in zip(results2, weights)), inputs1[:0] + [x2] + inputs1[1:]
                                 + list(mine.parameters()))
    return [(a - b).abs().max().item() for a, b in zip(results1 + grads1, results2 + grads2)]


@pytest.mark.parametrize("impl", ["fused", "autograd"])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_equivalence_float64_every_configuration(kind, impl):
    """Layers 1-3 x direction x batch_first x ragged lengths: outputs, h_n (c_n) and all gradients."""
    for layers, bidir, batch_first, ragged in itertools.product((1, 2, 3), (False, True), (False, True),
                                                                 (False, True)):
        errs = _compare(kind, impl, torch.float64, layers, bidir, batch_first, ragged)
        assert max(errs) < 1e-10, (kind, impl, layers, bidir, batch_first, ragged, errs)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_equivalence_float32(kind):
    for layers, bidir, ragged in itertools.product((1, 2), (False, True), (False, True)):
        errs = _compare(kind, "fused", torch.float32, layers, bidir, True, ragged)
        assert max(errs) < 1e-5, (kind, layers, bidir, ragged, errs)


@pytest.mark.parametrize("impl", ["fused", "autograd"])
def test_relu_rnn_and_no_bias(impl):
    assert max(_compare("rnn", impl, torch.float64, 2, True, False, True, nonlinearity="relu")) < 1e-10
    for kind in ("rnn", "lstm", "gru"):
        assert max(_compare(kind, impl, torch.float64, 2, True, False, True, bias=False)) < 1e-10


def test_lstm_projection_matches_torch():
    assert max(_compare("lstm", "fused", torch.float64, 2, True, False, True, proj_size=3)) < 1e-10


def test_packed_sequence_input_and_mask_equal_lengths():
    ref, mine = _pair("gru", "fused", torch.float64, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    out1, h1 = ref(packed)
    out2, h2 = mine(packed)
    assert torch.equal(out1.batch_sizes, out2.batch_sizes)
    assert torch.allclose(out1.data, out2.data, atol=1e-12) and torch.allclose(h1, h2, atol=1e-12)
    mask = torch.arange(T)[None, :] < LENGTHS[:, None]
    out3, h3 = mine(x, mask=mask)
    out4, h4 = mine(x, lengths=LENGTHS)
    assert torch.equal(out3, out4) and torch.equal(h3, h4)
    assert (out4[1, 3:] == 0).all()                          # padded outputs are zero


def test_fused_and_autograd_paths_agree():
    torch.manual_seed(0)
    a = lnn.LSTM(I, H, 2, bidirectional=True, impl="fused").double()
    b = lnn.LSTM(I, H, 2, bidirectional=True, impl="autograd").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert torch.allclose(a(x, lengths=LENGTHS)[0], b(x, lengths=LENGTHS)[0], atol=1e-12)


def test_unbatched_input_and_cells_match_torch():
    ref, mine = _pair("lstm", "fused", torch.float64)
    x = torch.randn(T, I, dtype=torch.float64)
    (o1, (h1, c1)), (o2, (h2, c2)) = ref(x), mine(x)
    assert o2.shape == (T, H) and torch.allclose(o1, o2) and torch.allclose(h1, h2) and torch.allclose(c1, c2)
    for name in ("RNNCell", "LSTMCell", "GRUCell"):
        torch.manual_seed(0)
        rc = getattr(torch.nn, name)(I, H).double()
        mc = getattr(lnn, name)(I, H).double()
        mc.load_state_dict(rc.state_dict())
        xs = torch.randn(B, I, dtype=torch.float64)
        hx = torch.randn(B, H, dtype=torch.float64)
        hx = (hx, torch.randn(B, H, dtype=torch.float64)) if name == "LSTMCell" else hx
        r, m = rc(xs, hx), mc(xs, hx)
        r, m = (r if isinstance(r, tuple) else (r,)), (m if isinstance(m, tuple) else (m,))
        assert all(torch.allclose(p, q, atol=1e-12) for p, q in zip(r, m))


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    m = lnn.GRU(I, H, num_layers=2, dropout=0.5)
    x = torch.randn(T, B, I)
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])
    m.train()
    torch.manual_seed(1)
    a = m(x)[0]
    torch.manual_seed(2)
    assert not torch.allclose(a, m(x)[0])
    single = lnn.GRU(I, H, num_layers=1, dropout=0.5).train()     # no dropout after the last layer
    assert torch.equal(single(x)[0], single(x)[0])


def test_signature_and_state_dict_keys_match_torch():
    for kind, cls in TORCH.items():
        kw = {"num_layers": 2, "bidirectional": True, "batch_first": True, "dropout": 0.1}
        assert list(RECURRENT[kind](I, H, **kw).state_dict()) == list(cls(I, H, **kw).state_dict())


def test_bad_inputs_are_one_clear_error():
    m = lnn.LSTM(I, H)
    with pytest.raises(ValueError, match="expects input"):
        m(torch.randn(T, B, I + 1))
    with pytest.raises(ValueError, match="lengths must be in"):
        m(torch.randn(T, B, I), lengths=torch.tensor([T + 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="prefix"):
        m(torch.randn(T, B, I), mask=torch.tensor([[1, 0, 1, 0, 0, 0]] * B).bool())
    with pytest.raises(ValueError, match="hidden state"):
        m(torch.randn(T, B, I), (torch.zeros(2, B, H), torch.zeros(2, B, H)))
    with pytest.raises(ValueError, match="nonlinearity"):
        lnn.RNN(I, H, nonlinearity="sigmoid")


def _loss_and_grads(model, x, hx, pick, lengths=None, packed_ref=False):
    """Gradients of a weighted sum of the outputs chosen by `pick` w.r.t. x, h0, (c0) and the parameters."""
    x = x.clone().requires_grad_()
    states = [s.clone().requires_grad_() for s in (hx if isinstance(hx, tuple) else (hx,))]
    hx = tuple(states) if len(states) == 2 else states[0]
    if packed_ref:
        out, hn = model(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    elif lengths is not None:
        out, hn = model(x, hx, lengths=lengths)
    else:
        out, hn = model(x, hx)
    results = [out, *(hn if isinstance(hn, tuple) else (hn,))]
    g = torch.Generator().manual_seed(3)
    loss = sum((results[k] * torch.randn(results[k].shape, generator=g, dtype=x.dtype)).sum() for k in pick)
    return results, torch.autograd.grad(loss, [x, *states, *model.parameters()], allow_unused=True)


def _max_diff(a, b):
    assert len(a) == len(b) and all((p is None) == (q is None) for p, q in zip(a, b))
    return max((p - q).abs().max().item() for p, q in zip(a, b) if p is not None)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_fused_lengths_shorter_than_the_sequence_and_partial_losses(kind):
    """Trailing steps where no row runs, and losses that use only the output, only h_n or only c_n."""
    lengths = torch.tensor([4, 2, 4, 1])
    picks = [(0,), (1,), (0, 1)] + ([(2,), (1, 2)] if kind == "lstm" else [])
    for bidir, ragged, pick in itertools.product((False, True), (False, True), picks):
        ref, mine = _pair(kind, "fused", torch.float64, num_layers=2, bidirectional=bidir)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
        n = 4 if bidir else 2
        h0 = torch.randn(n, B, H, generator=g, dtype=torch.float64)
        hx = (h0, torch.randn(n, B, H, generator=g, dtype=torch.float64)) if kind == "lstm" else h0
        r1, g1 = _loss_and_grads(ref, x, hx, pick, lengths if ragged else None, packed_ref=ragged)
        r2, g2 = _loss_and_grads(mine, x, hx, pick, lengths if ragged else None)
        assert _max_diff(r1, r2) < 1e-10 and _max_diff(g1, g2) < 1e-10, (kind, bidir, ragged, pick)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_fused_calls_with_different_shapes_before_one_backward(kind):
    """Each call owns its buffers: two calls (different T and B) then one backward, outputs changed in
    place in between (they are plain tensors, not views of internal buffers), equal torch.nn."""
    ref, mine = _pair(kind, "fused", torch.float64, num_layers=2, bidirectional=True)
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(T, B, I, generator=g, dtype=torch.float64), torch.randn(3, 2, I, generator=g, dtype=torch.float64)]
    grads = []
    for model in (ref, mine):
        model.zero_grad()
        loss = 0
        for k, x in enumerate(xs):
            out, _ = model(x)
            out.mul_(k + 2)
            loss = loss + (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert _max_diff(*grads) < 1e-10


@pytest.mark.parametrize("impl", ["fused", "autograd"])
def test_empty_batch_like_torch_and_empty_sequence_is_an_error(impl):
    for kind, bidir in itertools.product(("rnn", "lstm", "gru"), (False, True)):
        ref, mine = _pair(kind, impl, torch.float64, num_layers=2, bidirectional=bidir)
        x = torch.randn(T, 0, I, dtype=torch.float64, requires_grad=True)
        (o1, h1), (o2, h2) = ref(x), mine(x)
        h1, h2 = (h1 if isinstance(h1, tuple) else (h1,)), (h2 if isinstance(h2, tuple) else (h2,))
        assert o1.shape == o2.shape and [h.shape for h in h1] == [h.shape for h in h2]
        (o2.sum() + sum(h.sum() for h in h2)).backward()
        assert all(p.grad is not None and not p.grad.any() for p in mine.parameters())
        with pytest.raises(ValueError, match="at least one step"):
            mine(torch.randn(0, B, I, dtype=torch.float64))
