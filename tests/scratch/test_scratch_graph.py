"""Graph mode: a traced function re-runs on new inputs without re-tracing, its optimisations keep results."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scratch_programs import SHAPES, programs, run

from learnloop.errors import UserError
from learnloop.scratch.autodiff import Tape, Tensor
from learnloop.scratch.graph import function, trace


@settings(max_examples=50, deadline=None)
@given(program=programs, seed=st.integers(0, 2**16))
def test_traced_random_programs_rerun_like_eager_code(program, seed):
    rng = np.random.default_rng(seed)
    first = [rng.uniform(-2, 2, size=s) for s in SHAPES]
    second = [rng.uniform(-2, 2, size=s) for s in SHAPES]
    graph = trace(lambda *xs: run(program, xs), *first)
    raw = trace(lambda *xs: run(program, xs), *first, optimize=False)
    assert len(graph) <= len(raw)
    for arrays in (first, second):
        eager = run(program, [Tensor(a) for a in arrays]).value
        np.testing.assert_allclose(graph(*arrays).value, eager, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(raw(*arrays).value, eager, rtol=1e-12, atol=1e-12)


def test_constant_folding_cse_and_dead_code_removal():
    def f(x):
        c = (Tensor(np.array([1.0, 2.0, 3.0])) * 2.0).exp()  # constants only: folded
        unused = x.tanh() * 5.0  # noqa: F841 (dead: never reaches the output)
        return x.sigmoid() * c + x.sigmoid()  # sigmoid twice: one after CSE

    x = np.array([0.1, -0.4, 2.0])
    raw = trace(f, x, optimize=False)
    assert raw.count(op="sigmoid") == 2 and raw.count(op="tanh") == 1 and raw.count(op="exp") == 1
    folded = raw.fold_constants()
    assert folded.count(op="exp") == 0
    cse = folded.eliminate_common_subexpressions().remove_dead_nodes()
    assert cse.count(op="sigmoid") == 1 and cse.count(op="tanh") == 0
    assert cse.count() == 3  # sigmoid, mul, add
    expected = 1 / (1 + np.exp(-x)) * (np.exp(2 * np.array([1.0, 2.0, 3.0])) + 1)
    np.testing.assert_allclose(cse(x).value, expected)
    np.testing.assert_allclose(raw(x).value, expected)


def test_function_traces_once_per_signature_and_reads_variables_live():
    calls = []
    w = Tensor(np.array([1.0, 2.0]), trainable=True)

    @function
    def f(x):
        calls.append(1)
        return (x * w).sum()

    assert f(np.array([1.0, 1.0])).value == 3.0
    assert f(np.array([2.0, 0.0])).value == 2.0
    w.value = np.array([10.0, 0.0])  # a variable is captured by reference, not folded
    assert f(np.array([2.0, 0.0])).value == 20.0
    assert len(calls) == 1 and f.trace_count == 1
    f(np.ones((3, 2)))
    assert f.trace_count == 2


def test_gradients_flow_through_a_graph():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(4, 3)), Tensor(rng.normal(size=(3, 2)), trainable=True)
    graph = trace(lambda v: (v @ w).tanh().log_softmax(-1).sum(), x)
    xt = Tensor(x)
    with Tape() as tape:
        tape.watch(xt)
        y = graph(xt)
    gx, gw = tape.gradient(y, [xt, w])
    xe = Tensor(x)
    with Tape() as eager:
        eager.watch(xe)
        ye = (xe @ w).tanh().log_softmax(-1).sum()
    ex, ew = eager.gradient(ye, [xe, w])
    np.testing.assert_allclose(gx, ex)
    np.testing.assert_allclose(gw, ew)


def test_graph_rejects_wrong_inputs():
    graph = trace(lambda v: v * 2.0, np.ones(3))
    with pytest.raises(UserError, match="traced with shape"):
        graph(np.ones(4))
    with pytest.raises(UserError, match="inputs"):
        graph(np.ones(3), np.ones(3))
    with pytest.raises(UserError, match="must return a Tensor"):
        trace(lambda v: 3.0, np.ones(3))
