"""Random programs over the scratch autodiff ops, runnable on scratch Tensors, Duals and torch tensors.

A program is a list of steps (op, i, j); each step reads pool items i (and j) and appends its result. Ops whose
operands do not fit (shape, rank) act as the identity, so every drawn program runs. Domains are kept safe:
log and sqrt see x^2 + c, division divides by b^2 + c and exp sees tanh(x).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


def _index(x):
    return x[..., ::2] if x.ndim >= 1 else x


def _t_reverse(x):
    return x.permute(*reversed(range(x.ndim)))


# name: (scratch / dual version, torch version, needs ndim >= 1)
UNARY = {
    "neg": (lambda x: -x, lambda x: -x, False),
    "exp_tanh": (lambda x: x.tanh().exp(), lambda x: x.tanh().exp(), False),
    "log": (lambda x: (x * x + 0.5).log(), lambda x: (x * x + 0.5).log(), False),
    "sqrt": (lambda x: (x * x + 0.1).sqrt(), lambda x: (x * x + 0.1).sqrt(), False),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: x.sigmoid(), False),
    "relu": (lambda x: x.relu(), lambda x: x.relu(), False),
    "abs": (lambda x: x.abs(), lambda x: x.abs(), False),
    "cube": (lambda x: x ** 3, lambda x: x ** 3, False),
    "scale": (lambda x: 2.5 * x - 1.0, lambda x: 2.5 * x - 1.0, False),
    "rdiv": (lambda x: 1.0 / (x * x + 1.0), lambda x: 1.0 / (x * x + 1.0), False),
    "sum0": (lambda x: x.sum(axis=0), lambda x: x.sum(dim=0), True),
    "sum_keep": (lambda x: x.sum(axis=-1, keepdims=True), lambda x: x.sum(dim=-1, keepdim=True), True),
    "mean": (lambda x: x.mean(axis=-1), lambda x: x.mean(dim=-1), True),
    "max": (lambda x: x.max(axis=-1), lambda x: x.amax(dim=-1), True),
    "log_softmax": (lambda x: x.log_softmax(-1), lambda x: x.log_softmax(-1), True),
    "transpose": (lambda x: x.transpose(), _t_reverse, True),
    "flatten": (lambda x: x.reshape(-1), lambda x: x.reshape(-1), False),
    "index": (_index, _index, True),
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 0.5),
    "matmul": lambda a, b: a @ b,
}
OPS = sorted(UNARY) + sorted(BINARY)

# input shapes: x (3, 4) with broadcast partners and a matmul partner
SHAPES = [(3, 4), (4,), (3, 1), (4, 4), ()]


def _fits(name: str, a_shape: tuple, b_shape: tuple) -> bool:
    if name == "matmul":
        return len(a_shape) >= 1 and len(b_shape) == 2 and a_shape[-1] == b_shape[0]
    try:
        np.broadcast_shapes(a_shape, b_shape)
    except ValueError:
        return False
    return True


def run(program, inputs, torch_mode: bool = False):
    pool = list(inputs)
    for name, i, j in program:
        a = pool[i % len(pool)]
        if name in UNARY:
            ours, theirs, needs_rank = UNARY[name]
            fn = theirs if torch_mode else ours
            pool.append(a if needs_rank and a.ndim == 0 else fn(a))
        else:
            b = pool[j % len(pool)]
            pool.append(BINARY[name](a, b) if _fits(name, tuple(a.shape), tuple(b.shape)) else a)
    return pool[-1]


programs = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=6)
