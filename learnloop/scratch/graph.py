"""Graph mode: trace a Python function once into a dataflow graph, optimise it, re-run it on new inputs.

Tracing (`trace(f, *examples)`) calls f once on placeholder Tensors with a tracer on the recorder stack of
`learnloop.scratch.autodiff`; every primitive that `apply` evaluates becomes a node (op, input node ids, attrs).
Tensors f reads but did not compute become leaves: trainable ones are `variable` nodes read live at every run
(like tf.Variable captures), other ones `constant` nodes frozen at trace time. Python control flow is frozen at
the traced path, and shapes held in attrs (reshape) are those of the examples.

Optimisations, the classic local ones (Aho, Sethi & Ullman, "Compilers", 1986, sec. 9.4 and 9.7):
    constant folding     an op node whose inputs are all constants is evaluated once and becomes a constant;
    CSE (value numbering) nodes with the same key (op, input ids, attrs) are merged into the first one;
    dead-node removal    nodes the outputs do not depend on (backwards reachability) are dropped.

`graph(*inputs)` evaluates the nodes in order through `apply`, so an enclosing Tape records the run and
gradients flow through a graph exactly as through eager code. `function(f)` caches one graph per input
signature (shapes, dtypes) and traces again only for a new signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.autodiff import OPS, Tensor, apply, as_tensor, recording


@dataclass(frozen=True)
class Node:
    kind: str  # "input", "constant", "variable" or "op"
    op: str = ""
    inputs: tuple = ()
    attrs: dict = field(default_factory=dict)
    value: np.ndarray | None = None  # constant
    tensor: Tensor | None = None  # variable
    index: int = -1  # input position


def _freeze(v):
    """A hashable stand-in for an attribute value (arrays and slices included), used as a CSE key."""
    if isinstance(v, np.ndarray):
        return ("array", v.shape, v.dtype.str, v.tobytes())
    if isinstance(v, (tuple, list)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, slice):
        return ("slice", v.start, v.stop, v.step)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


class _Tracer:
    def __init__(self):
        self.nodes: list[Node] = []
        self.ids: dict[int, int] = {}
        self.alive: list[Tensor] = []  # keeps traced tensors alive so their ids stay unique

    def add(self, node: Node, tensor: Tensor) -> int:
        self.nodes.append(node)
        self.ids[id(tensor)] = len(self.nodes) - 1
        self.alive.append(tensor)
        return len(self.nodes) - 1

    def node_of(self, t: Tensor) -> int:
        if id(t) in self.ids:
            return self.ids[id(t)]
        leaf = Node("variable", tensor=t) if t.trainable else Node("constant", value=t.value.copy())
        return self.add(leaf, t)

    def record(self, op, inputs: tuple, attrs: dict, out: Tensor) -> None:
        ids = tuple(self.node_of(t) for t in inputs)
        self.add(Node("op", op=op.name, inputs=ids, attrs=dict(attrs)), out)


class Graph:
    def __init__(self, nodes: list[Node], outputs: tuple, input_shapes: tuple, single_output: bool):
        self.nodes, self.outputs = list(nodes), tuple(outputs)
        self.input_shapes, self.single_output = tuple(input_shapes), single_output

    def __len__(self) -> int:
        return len(self.nodes)

    def count(self, kind: str = "op", op: str | None = None) -> int:
        return sum(n.kind == kind and (op is None or n.op == op) for n in self.nodes)

    def _with(self, nodes, outputs) -> Graph:
        return Graph(nodes, outputs, self.input_shapes, self.single_output)

    def __call__(self, *inputs):
        if len(inputs) != len(self.input_shapes):
            raise UserError(f"graph was traced with {len(self.input_shapes)} inputs, got {len(inputs)}")
        args = [as_tensor(x) for x in inputs]
        for k, (a, shape) in enumerate(zip(args, self.input_shapes)):
            if a.shape != shape:
                raise UserError(f"graph input {k} was traced with shape {shape}, got {a.shape}; trace again")
        values: list[Tensor] = []
        for node in self.nodes:
            if node.kind == "input":
                values.append(args[node.index])
            elif node.kind == "constant":
                values.append(Tensor(node.value))
            elif node.kind == "variable":
                values.append(node.tensor)
            else:
                values.append(apply(node.op, *(values[i] for i in node.inputs), **node.attrs))
        outs = tuple(values[i] for i in self.outputs)
        return outs[0] if self.single_output else outs

    def fold_constants(self) -> Graph:
        nodes: list[Node] = []
        for node in self.nodes:
            if node.kind == "op" and all(nodes[i].kind == "constant" for i in node.inputs):
                value = OPS[node.op].forward(*(nodes[i].value for i in node.inputs), **node.attrs)
                node = Node("constant", value=np.asarray(value))
            nodes.append(node)
        return self._with(nodes, self.outputs)

    def eliminate_common_subexpressions(self) -> Graph:
        seen: dict = {}
        remap: dict[int, int] = {}
        nodes: list[Node] = []
        for i, node in enumerate(self.nodes):
            node = replace(node, inputs=tuple(remap[j] for j in node.inputs))
            if node.kind == "op":
                key = ("op", node.op, node.inputs, _freeze(node.attrs))
            elif node.kind == "constant":
                key = ("constant", _freeze(node.value))
            elif node.kind == "variable":
                key = ("variable", id(node.tensor))
            else:
                key = ("input", node.index)
            remap[i] = seen.setdefault(key, i)
            nodes.append(node)
        return self._with(nodes, tuple(remap[o] for o in self.outputs))

    def remove_dead_nodes(self) -> Graph:
        live = set(self.outputs) | {i for i, n in enumerate(self.nodes) if n.kind == "input"}
        for i in range(len(self.nodes) - 1, -1, -1):
            if i in live:
                live.update(self.nodes[i].inputs)
        new_index = {old: new for new, old in enumerate(sorted(live))}
        nodes = [replace(self.nodes[old], inputs=tuple(new_index[j] for j in self.nodes[old].inputs))
                 for old in sorted(live)]
        return self._with(nodes, tuple(new_index[o] for o in self.outputs))

    def optimize(self) -> Graph:
        return self.fold_constants().eliminate_common_subexpressions().remove_dead_nodes()


def trace(f, *examples, optimize: bool = True) -> Graph:
    """Run f once on placeholders shaped like `examples` and return its (optimised) graph."""
    placeholders = [Tensor(np.array(as_tensor(x).value)) for x in examples]
    tracer = _Tracer()
    for k, p in enumerate(placeholders):
        tracer.add(Node("input", index=k), p)
    with recording(tracer):
        result = f(*placeholders)
    single = isinstance(result, Tensor)
    results = (result,) if single else tuple(result) if isinstance(result, (tuple, list)) else (None,)
    if not all(isinstance(r, Tensor) for r in results):
        raise UserError("a traced function must return a Tensor or a tuple of Tensors")
    graph = Graph(tracer.nodes, tuple(tracer.node_of(r) for r in results),
                  tuple(p.shape for p in placeholders), single)
    return graph.optimize() if optimize else graph


class function:
    """Trace `f` once per input signature (shapes and dtypes); later calls re-run the cached graph."""

    def __init__(self, f, optimize: bool = True):
        self.f, self.optimize = f, optimize
        self.graphs: dict[tuple, Graph] = {}

    @property
    def trace_count(self) -> int:
        return len(self.graphs)

    def __call__(self, *inputs):
        args = [as_tensor(x) for x in inputs]
        key = tuple((a.shape, a.dtype.str) for a in args)
        if key not in self.graphs:
            self.graphs[key] = trace(self.f, *args, optimize=self.optimize)
        return self.graphs[key](*args)
