"""Spectral norm from scratch vs torch.nn.utils.parametrizations.spectral_norm: init, outputs, gradients."""

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

from learnloop.nn.spectral_norm import largest_singular_value, spectral_norm

MAKERS = {
    "linear": (lambda: nn.Linear(20, 7), lambda: torch.randn(5, 20)),
    "conv": (lambda: nn.Conv2d(3, 8, 3, padding=1), lambda: torch.randn(4, 3, 9, 9)),
    "conv_transpose": (lambda: nn.ConvTranspose2d(4, 6, 4, 2, 1), lambda: torch.randn(2, 4, 5, 5)),
}


def _pair(kind, seed=0, **kw):
    make, _ = MAKERS[kind]
    torch.manual_seed(seed)
    ref = torch_sn(make(), **kw)
    torch.manual_seed(seed)
    ours = spectral_norm(make(), **kw)
    return ref, ours


@pytest.mark.parametrize("kind", list(MAKERS))
def test_same_seed_same_state(kind):
    ref, ours = _pair(kind)
    a, b = ref.state_dict(), ours.state_dict()
    assert set(a) == set(b) and {"parametrizations.weight.0._u", "parametrizations.weight.0._v"} <= set(a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("kind", list(MAKERS))
@pytest.mark.parametrize("n_iter", [1, 3])
def test_outputs_and_gradients_match_over_training_steps(kind, n_iter):
    ref, ours = _pair(kind, n_power_iterations=n_iter)
    _, make_x = MAKERS[kind]
    torch.manual_seed(1)
    for _ in range(4):
        x1, x2 = make_x(), make_x()
        outs = []
        for m in (ref, ours):
            m.zero_grad()
            xa, xb = x1.clone().requires_grad_(True), x2.clone()
            # two forwards before one backward, as in D(real) - D(fake)
            loss = m(xa).square().mean() - m(xb).mean()
            loss.backward()
            outs.append((loss.detach(), xa.grad, m.parametrizations.weight.original.grad, m.bias.grad))
            with torch.no_grad():            # an SGD step so the next power iteration sees a new W
                for p in m.parameters():
                    p -= 0.1 * p.grad
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(v, ours.state_dict()[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_eval_mode_freezes_u_v_and_matches(kind):
    ref, ours = _pair(kind)
    ref.eval()
    ours.eval()
    _, make_x = MAKERS[kind]
    x = make_x()
    u0 = ours.parametrizations.weight[0]._u.clone()
    torch.testing.assert_close(ref(x), ours(x), rtol=1e-6, atol=1e-7)
    ours(x)
    assert torch.equal(ours.parametrizations.weight[0]._u, u0)


def test_loads_torch_buffers_from_another_seed():
    ref, _ = _pair("conv", seed=3)
    _, ours = _pair("conv", seed=4)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(ref(x), ours(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_normalised_weight_has_unit_spectral_norm(kind):
    make, _ = MAKERS[kind]
    torch.manual_seed(0)
    m = make()
    dim = 1 if kind == "conv_transpose" else 0
    assert abs(float(largest_singular_value(m.weight.detach(), dim)) - 1.0) > 0.05   # not already normalised
    spectral_norm(m, n_power_iterations=5)
    for _ in range(10):
        w = m.weight                     # each access in train mode runs the power iteration
    assert float(largest_singular_value(w.detach(), dim)) == pytest.approx(1.0, abs=1e-3)


def test_one_dimensional_weight_is_divided_by_its_norm():
    m = nn.BatchNorm1d(6)
    with torch.no_grad():
        m.weight.copy_(torch.arange(1.0, 7.0))
    spectral_norm(m)
    torch.testing.assert_close(m.weight.norm(), torch.tensor(1.0))


def test_bad_arguments():
    with pytest.raises(TypeError, match="no parameter"):
        spectral_norm(nn.Linear(3, 3), name="kernel")
    with pytest.raises(ValueError, match="positive"):
        spectral_norm(nn.Linear(3, 3), n_power_iterations=0)
