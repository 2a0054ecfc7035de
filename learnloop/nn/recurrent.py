"""Recurrent networks from scratch: Elman RNN, LSTM and GRU cells and multi-layer (bidirectional) layers.

Gate equations, with the symbols and gate order of torch.nn (so its state dicts load unchanged):

Elman RNN (Elman, 1990), act = tanh or relu:
    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

LSTM (Hochreiter & Schmidhuber, 1997; forget gate: Gers et al., 2000):
    i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)          input gate
    f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)          forget gate
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)             candidate cell
    o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)          output gate
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)            (with proj_size > 0: h_t = W_hr (o_t * tanh(c_t)); Sak et al., 2014)
  `weight_ih_l{k}` stacks [W_ii; W_if; W_ig; W_io].

GRU (Cho et al., 2014):
    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))     candidate
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}
  `weight_ih_l{k}` stacks [W_ir; W_iz; W_in].

Layers: layer k > 0 reads the output of layer k-1 (dropout in between while training); a bidirectional
layer runs a second cell from t = T-1 down to 0 and concatenates [forward, backward] features;
h_n stacks final states as (layer0 fwd, layer0 bwd, layer1 fwd, ...).

Two implementations of the same equations: `impl="autograd"` steps the cell functions below and lets
autograd differentiate them (the readable reference; supports double backward and proj_size), and
`impl="fused"` (default; proj_size falls back to autograd) runs `learnloop.nn.bptt`, which
back-propagates through time by hand, at about the speed of torch.nn on CPU (`bench/bench_recurrent.py`).
Both equal torch.nn.RNN/LSTM/GRU given the same weights.

Variable-length batches: pass `lengths` (B,) or a prefix `mask` (B, T) (True at real steps), or a
PackedSequence as with torch.nn. Padded outputs are 0, h_n is each sequence's state after its last real
step, and the backward direction starts at each sequence's last real step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from learnloop.nn.bptt import GATES, fused_recurrence

IMPLS = ("fused", "autograd")


# --- the cell equations (reference; autograd differentiates them) ------------------------------------------
def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh"):
    """Elman: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    pre = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_cell(x, state, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """LSTM: returns (h', c') from (h, c); gates in the order i, f, g, o."""
    h, c = state
    i, f, g, o = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    if w_hr is not None:
        h = F.linear(h, w_hr)
    return h, c


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """GRU: h' = (1 - z) * n + z * h, gates in the order r, z, n (reset applied after W_hn, as in torch)."""
    a_r, a_z, a_n = F.linear(x, w_ih, b_ih).chunk(3, dim=-1)
    b_r, b_z, b_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(a_r + b_r)
    z = torch.sigmoid(a_z + b_z)
    n = torch.tanh(a_n + r * b_n)
    return (1 - z) * n + z * h


# --- cells (same constructor, forward and parameter names as torch.nn.RNNCell/LSTMCell/GRUCell) ------------
class _CellBase(nn.Module):
    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = nn.Parameter(torch.empty(self.gates * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(self.gates * hidden_size, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(self.gates * hidden_size, **kw))
            self.bias_hh = nn.Parameter(torch.empty(self.gates * hidden_size, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as torch.nn does."""
        k = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)

    def _zeros(self, x):
        return x.new_zeros(*x.shape[:-1], self.hidden_size)

    def _check(self, x):
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects input (batch, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got '{nonlinearity}'")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        self._check(input)
        hx = self._zeros(input) if hx is None else hx
        return rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)


class LSTMCell(_CellBase):
    gates = 4

    def forward(self, input: torch.Tensor, hx=None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(input)
        hx = (self._zeros(input), self._zeros(input)) if hx is None else hx
        return lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_CellBase):
    gates = 3

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        self._check(input)
        hx = self._zeros(input) if hx is None else hx
        return gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


# --- multi-layer, bidirectional layers ---------------------------------------------------------------------
def lengths_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) prefix mask (True at real steps) -> (B,) lengths; a mask with holes is an error."""
    lengths = mask.long().sum(1)
    expected = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(expected, mask.bool()):
        raise ValueError("mask must be True on a prefix of each sequence (real steps first, then padding)")
    return lengths


class RNNBase(nn.Module):
    """Shared machinery of RNN, LSTM and GRU; `mode` is RNN_TANH, RNN_RELU, LSTM or GRU."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, impl: str = "fused"):
        super().__init__()
        if mode not in GATES:
            raise ValueError(f"unknown mode '{mode}'")
        if not (isinstance(num_layers, int) and num_layers >= 1):
            raise ValueError(f"num_layers must be a positive int, got {num_layers}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        if proj_size < 0 or (proj_size and mode != "LSTM"):
            raise ValueError("proj_size must be >= 0 and is only supported by LSTM")
        if proj_size >= hidden_size and proj_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got '{impl}'")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional, self.proj_size, self.impl = float(dropout), bidirectional, proj_size, impl
        kw = {"device": device, "dtype": dtype}
        gates = GATES[mode] * hidden_size
        real_h = proj_size or hidden_size
        dirs = 2 if bidirectional else 1
        self._names: list[list[str]] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else real_h * dirs
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                setattr(self, names[0], nn.Parameter(torch.empty(gates, layer_in, **kw)))
                setattr(self, names[1], nn.Parameter(torch.empty(gates, real_h, **kw)))
                if bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
                    setattr(self, names[2], nn.Parameter(torch.empty(gates, **kw)))
                    setattr(self, names[3], nn.Parameter(torch.empty(gates, **kw)))
                if proj_size:
                    names.append(f"weight_hr{sfx}")
                    setattr(self, names[-1], nn.Parameter(torch.empty(proj_size, hidden_size, **kw)))
                self._names.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for key, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False), ("proj_size", 0), ("impl", "fused")):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        return s

    def _weights(self, layer: int, direction: int) -> dict:
        names = self._names[layer * (2 if self.bidirectional else 1) + direction]
        w = {n.split("_l")[0]: getattr(self, n) for n in names}
        return {"w_ih": w["weight_ih"], "w_hh": w["weight_hh"], "b_ih": w.get("bias_ih"),
                "b_hh": w.get("bias_hh"), "w_hr": w.get("weight_hr")}

    # ------------------------------------------------------------------------------------------------------
    def forward(self, input, hx=None, lengths: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """input (T, B, I) or (B, T, I) if batch_first, (T, I) unbatched, or a PackedSequence.
        hx: h_0 (L*D, B, H) — for LSTM a tuple (h_0, c_0). Returns (output, h_n) or (output, (h_n, c_n))."""
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None or mask is not None:
                raise ValueError("a PackedSequence carries its own lengths; do not pass lengths or mask")
            sorted_idx, unsorted_idx = input.sorted_indices, input.unsorted_indices
            x, lengths = pad_packed_sequence(input, batch_first=False)
            batch_first = False
        else:
            x, batch_first = input, self.batch_first
        unbatched = x.dim() == 2
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects input (seq, batch, {self.input_size}) "
                             f"(batch_first={self.batch_first}), got {tuple(x.shape)}")
        if unbatched:
            x = x.unsqueeze(1)
        elif batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape[:2]
        if T == 0:
            raise ValueError(f"{type(self).__name__} expects a sequence of at least one step, got length 0")
        if mask is not None:
            if lengths is not None:
                raise ValueError("pass lengths or mask, not both")
            mask = mask.to(x.device)
            if mask.shape != (B, T):
                raise ValueError(f"mask must have shape (batch, seq) = {(B, T)}, got {tuple(mask.shape)}")
            lengths = lengths_from_mask(mask)
        if lengths is not None:
            lengths = torch.as_tensor(lengths).to(device="cpu", dtype=torch.long)
            if lengths.shape != (B,):
                raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
            if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
                raise ValueError(f"lengths must be in [1, {T}], got min {int(lengths.min())}, "
                                 f"max {int(lengths.max())}")
        h0, c0 = self._initial_state(hx, x, B, unbatched)
        out, h_n, c_n = self._run(x, h0, c0, lengths)
        if packed:
            out = out.index_select(1, sorted_idx) if sorted_idx is not None else out
            data = pack_padded_sequence(out, lengths[sorted_idx] if sorted_idx is not None else lengths)
            out = PackedSequence(data.data, data.batch_sizes, sorted_idx, unsorted_idx)
        elif unbatched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        elif batch_first:
            out = out.transpose(0, 1)
        return (out, (h_n, c_n)) if self.mode == "LSTM" else (out, h_n)

    def _initial_state(self, hx, x, B: int, unbatched: bool):
        n = self.num_layers * (2 if self.bidirectional else 1)
        real_h = self.proj_size or self.hidden_size
        if self.mode == "LSTM":
            h0, c0 = (None, None) if hx is None else hx
        else:
            if isinstance(hx, (tuple, list)):
                raise ValueError(f"{type(self).__name__} expects hx as one tensor, not a tuple")
            h0, c0 = hx, None
        if h0 is None:
            h0 = x.new_zeros(n, B, real_h)
            if self.mode == "LSTM":
                c0 = x.new_zeros(n, B, self.hidden_size)
        elif unbatched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
        if tuple(h0.shape) != (n, B, real_h):
            raise ValueError(f"expected hidden state of shape {(n, B, real_h)}, got {tuple(h0.shape)}")
        if self.mode == "LSTM" and (c0 is None or tuple(c0.shape) != (n, B, self.hidden_size)):
            raise ValueError(f"expected cell state of shape {(n, B, self.hidden_size)}, "
                             f"got {None if c0 is None else tuple(c0.shape)}")
        return h0, c0

    def _run(self, x, h0, c0, lengths):
        dirs = 2 if self.bidirectional else 1
        fused = self.impl == "fused" and not self.proj_size
        order = sizes = None
        if lengths is not None and fused:
            # sort by decreasing length so that running rows are a prefix (packed-sequence layout)
            order = torch.argsort(lengths, descending=True, stable=True)
            lengths_sorted = lengths[order]
            sizes = (lengths_sorted[None, :] > torch.arange(x.shape[0])[:, None]).sum(1).tolist()
            order_dev = order.to(x.device)
            x = x.index_select(1, order_dev)
            h0 = h0.index_select(1, order_dev)
            c0 = c0.index_select(1, order_dev) if c0 is not None else None
        mask = None
        if lengths is not None and not fused:
            mask = (torch.arange(x.shape[0])[:, None] < lengths[None, :]).to(x.device)     # (T, B)
        h_n, c_n = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                w = self._weights(layer, d)
                c_init = c0[k] if c0 is not None else None
                if fused:
                    o, h, c = fused_recurrence(self.mode, layer_in, h0[k], c_init, w["w_ih"], w["w_hh"],
                                               w["b_ih"], w["b_hh"], sizes, reverse=bool(d))
                else:
                    o, h, c = self._run_autograd(layer_in, h0[k], c_init, w, mask, reverse=bool(d))
                outs.append(o)
                h_n.append(h)
                c_n.append(c)
            layer_in = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        h_n = torch.stack(h_n)
        c_n = torch.stack(c_n) if self.mode == "LSTM" else None
        if order is not None:
            inverse = torch.argsort(order).to(x.device)
            layer_in = layer_in.index_select(1, inverse)
            h_n = h_n.index_select(1, inverse)
            c_n = c_n.index_select(1, inverse) if c_n is not None else None
        return layer_in, h_n, c_n

    def _run_autograd(self, x, h, c, w, mask, reverse: bool):
        """Step the cell equations; masked (padded) steps keep the state and output 0."""
        T = x.shape[0]
        outputs = [None] * T
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            if self.mode == "LSTM":
                h_new, c_new = lstm_cell(x[t], (h, c), w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], w["w_hr"])
            elif self.mode == "GRU":
                h_new, c_new = gru_cell(x[t], h, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"]), None
            else:
                act = "tanh" if self.mode == "RNN_TANH" else "relu"
                h_new, c_new = rnn_cell(x[t], h, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], act), None
            if mask is None:
                h, c = h_new, c_new
                outputs[t] = h_new
            else:
                m = mask[t].unsqueeze(1)
                h = torch.where(m, h_new, h)
                c = torch.where(m, c_new, c) if c_new is not None else None
                outputs[t] = h_new * m
        return torch.stack(outputs), h, c


class RNN(RNNBase):
    """Elman RNN; same arguments as torch.nn.RNN (plus keyword `impl`)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, impl: str = "fused"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got '{nonlinearity}'")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype, impl=impl)


class LSTM(RNNBase):
    """LSTM; same arguments as torch.nn.LSTM (plus keyword `impl`)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, impl: str = "fused"):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype, impl=impl)


class GRU(RNNBase):
    """GRU; same arguments as torch.nn.GRU (plus keyword `impl`)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, impl: str = "fused"):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype, impl=impl)


RECURRENT = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
