"""Reverse mode (tape), forward mode (duals) and numerical gradients agree with torch.autograd and each other."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scratch_programs import SHAPES, programs, run

from learnloop.errors import UserError
from learnloop.scratch.autodiff import Tape, Tensor, stop_gradient, unbroadcast
from learnloop.scratch.forward import Dual, jacfwd, jvp
from learnloop.scratch.numgrad import numerical_gradient, numerical_jacobian

FAST = settings(max_examples=100, deadline=None)


def _inputs(seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2, 2, size=s) for s in SHAPES]


@FAST
@given(program=programs, seed=st.integers(0, 2**16))
def test_random_programs_match_torch_values_and_gradients(program, seed):
    arrays = _inputs(seed)
    xs = [Tensor(a) for a in arrays]
    with Tape() as tape:
        tape.watch(*xs)
        y = run(program, xs).sum()
    grads = tape.gradient(y, xs, unconnected="zero")
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    yt = run(program, ts, torch_mode=True).sum()
    yt.backward()
    np.testing.assert_allclose(y.value, yt.item(), rtol=1e-9, atol=1e-9)
    for g, t in zip(grads, ts):
        expected = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        np.testing.assert_allclose(g, expected, rtol=1e-7, atol=1e-9)


@FAST
@given(program=programs, seed=st.integers(0, 2**16))
def test_forward_mode_jacobian_equals_reverse_mode_jacobian(program, seed):
    arrays = _inputs(seed)

    def f(x):
        return run(program, [x] + [type(x)(a) for a in arrays[1:]])  # constants of x's kind

    x = Tensor(arrays[0])
    with Tape(persistent=True) as tape:
        tape.watch(x)
        out = f(x)
    reverse = tape.jacobian(out, x)
    np.testing.assert_allclose(jacfwd(f, arrays[0]), reverse, rtol=1e-9, atol=1e-10)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(program=programs, seed=st.integers(0, 2**16))
def test_reverse_mode_matches_central_differences(program, seed):
    arrays = _inputs(seed)
    x = Tensor(arrays[0])
    with Tape() as tape:
        tape.watch(x)
        y = run(program, [x] + [Tensor(a) for a in arrays[1:]]).sum()
    g = tape.gradient(y, x, unconnected="zero")
    numeric = numerical_gradient(lambda a: run(program, [Tensor(b) for b in [a] + arrays[1:]]).sum().value, arrays[0])
    # relu/abs/max kinks can sit within h of a sample only with negligible probability
    np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-6)


def test_jvp_matches_torch_func_jvp():
    rng = np.random.default_rng(0)
    x, t, w = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    value, tangent = jvp(lambda v: (v @ w).tanh().log_softmax(-1) * v.sum(axis=1, keepdims=True), x, t)
    ref_value, ref_tangent = torch.func.jvp(
        lambda v: (v @ torch.tensor(w)).tanh().log_softmax(-1) * v.sum(dim=1, keepdim=True),
        (torch.tensor(x),), (torch.tensor(t),))
    np.testing.assert_allclose(value, ref_value.numpy(), rtol=1e-12)
    np.testing.assert_allclose(tangent, ref_tangent.numpy(), rtol=1e-10)


def test_broadcast_gradients_are_summed_back_to_input_shape():
    a, b, c = Tensor(np.ones((2, 3))), Tensor(np.arange(3.0)), Tensor(np.array([[2.0], [3.0]]))
    with Tape() as tape:
        tape.watch(a, b, c)
        y = (a * b * c).sum()
    ga, gb, gc = tape.gradient(y, [a, b, c])
    np.testing.assert_allclose(gb, [5.0, 5.0, 5.0])
    np.testing.assert_allclose(gc, [[3.0], [3.0]])
    assert ga.shape == (2, 3)
    assert unbroadcast(np.ones((4, 2, 3)), (1, 3)).tolist() == [[8.0, 8.0, 8.0]]


def test_watch_rules_and_stop_gradient():
    x, const = Tensor(np.array([1.0, 2.0])), Tensor(np.array([3.0, 4.0]))
    w = Tensor(np.array([0.5, -1.0]), trainable=True)
    with Tape() as tape:
        tape.watch(x)
        y = (x * x).sum() + (stop_gradient(x) * x).sum() + (w * const).sum()
    gx, gw, gc = tape.gradient(y, [x, w, const])
    np.testing.assert_allclose(gx, 2 * x.value + x.value)  # the stopped factor is a constant
    np.testing.assert_allclose(gw, const.value)  # trainable tensors are watched automatically
    assert gc is None  # never watched


def test_unwatched_variables_when_auto_watch_is_off():
    w = Tensor(np.array([1.0]), trainable=True)
    with Tape(watch_accessed_variables=False) as tape:
        y = (w * 3.0).sum()
    assert tape.gradient(y, [w]) == [None]


def test_persistent_tape_allows_many_gradients_and_plain_tape_only_one():
    x = Tensor(np.array(3.0))
    with Tape(persistent=True) as tape:
        tape.watch(x)
        y, z = x * x, x.exp()
    assert tape.gradient(y, x) == pytest.approx(6.0)
    assert tape.gradient(z, x) == pytest.approx(np.exp(3.0))
    with Tape() as once:
        once.watch(x)
        y = x * x
    once.gradient(y, x)
    with pytest.raises(UserError, match="persistent"):
        once.gradient(y, x)


def test_nothing_is_recorded_outside_a_tape():
    x = Tensor(np.array(2.0))
    y = x * x
    with Tape() as tape:
        tape.watch(x)
        z = y * x
    assert tape.gradient(z, x) == pytest.approx(4.0)  # y = x^2 was computed before: a constant here


def test_numerical_jacobian_of_a_known_function():
    x = np.array([0.3, -1.2])
    jac = numerical_jacobian(lambda v: np.array([v[0] * v[1], np.sin(v[0])]), x)
    np.testing.assert_allclose(jac, [[x[1], x[0]], [np.cos(x[0]), 0.0]], atol=1e-8)
    with pytest.raises(UserError, match="scalar"):
        numerical_gradient(lambda v: v * 2, x)


def test_bad_inputs_raise_clear_errors():
    x = Tensor(np.ones(3))
    with pytest.raises(UserError, match="constant scalar exponent"):
        _ = x ** x
    with pytest.raises(UserError, match="watch expects Tensors"):
        Tape().watch(np.ones(3))
    with pytest.raises(UserError, match="tangent shape"):
        Dual(np.ones(3), np.ones(2))
    with Tape() as tape:
        tape.watch(x)
        y = x * 2
    with pytest.raises(UserError, match="output_gradient shape"):
        tape.gradient(y, x, output_gradient=np.ones(2))
