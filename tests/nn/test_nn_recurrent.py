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
