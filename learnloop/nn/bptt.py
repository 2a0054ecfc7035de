"""Back-propagation through time written by hand (Werbos, 1990): the fast path of `learnloop.nn.recurrent`.

One call runs one direction of one recurrent layer over a whole (T, B, I) sequence. Autograd records no
per-step graph; instead this module does what cuDNN does:

1. the input projection of all T steps is one matmul:   P = X W_ih^T + b            (T*B, G*H)
2. the loop does only the recurrent part per step, writing into preallocated buffers
   (no per-step allocation):                              gates_t = P_t + h_{t-1} W_hh^T
3. backward walks the steps in reverse, carrying dh and dc; per step it needs one matmul
   (dh_{t-1} = dgates_t W_hh) and a few element-wise products with factors precomputed in bulk;
4. the weight gradients are summed over time in one matmul each:
       dW_hh = sum_t dgates_t^T h_{t-1},   dW_ih = dgates^T X,   dX = dgates W_ih,   db = sum dgates.

Gate equations (gate order and symbols as in torch.nn, see recurrent.py):
    Elman:  h_t = act(P_t + W_hh h_{t-1})                          dpre = dh * act'(.)
    LSTM:   [i, f, g, o] = [s, s, tanh, s](P_t + W_hh h_{t-1}),     c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)
            dc_t = dc_{t+1} f_{t+1} + dh_t o (1 - tanh^2 c_t)
            dpre_i = dc g i(1-i),  dpre_f = dc c_{t-1} f(1-f),  dpre_g = dc i (1-g^2),  dpre_o = dh tanh(c_t) o(1-o)
    GRU:    a = P_t (with b_ih),  b = W_hh h_{t-1} + b_hh
            r = s(a_r + b_r),  z = s(a_z + b_z),  n = tanh(a_n + r b_n),  h_t = n + z (h_{t-1} - n)
            dpre_n = dh (1-z)(1-n^2),  dpre_z = dh (h_{t-1}-n) z(1-z),  dpre_r = dpre_n b_n r(1-r),
            db_n = dpre_n r,  dh_{t-1} = dh z + [dpre_r, dpre_z, db_n] W_hh

Variable lengths use the packed-sequence trick: the batch is sorted by decreasing length, so the rows
still running at step t are a prefix [:b_t] of the batch. Finished rows keep their state (the final state
of row r is the one after its step len_r - 1), padded outputs are 0, and the reverse direction of row r
starts from h_0 at step len_r - 1, exactly as torch.nn does with a PackedSequence.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _schedule(T: int, batch_sizes: list[int], reverse: bool):
    """[(t, b_t, t_prev, b_prev)] in processing order; t_prev is None at the first step."""
    order = range(T - 1, -1, -1) if reverse else range(T)
    out, prev = [], None
    for t in order:
        b = batch_sizes[t]
        if b == 0:
            continue
        out.append((t, b, prev, batch_sizes[prev] if prev is not None else 0))
        prev = t
    return out


def _prev_state(buf: torch.Tensor, init: torch.Tensor, t_prev, b: int, b_prev: int) -> torch.Tensor:
    """State entering a step for rows [:b]: the previous step's rows, and the initial state for rows that
    start here (only in the reverse direction of a ragged batch)."""
    if t_prev is None:
        return init[:b]
    if b_prev >= b:
        return buf[t_prev, :b]
    return torch.cat([buf[t_prev, :b_prev], init[b_prev:b]])


def _prev_states_bulk(buf: torch.Tensor, init: torch.Tensor, batch_sizes: list[int], reverse: bool) -> torch.Tensor:
    """(T, B, H) tensor of the state entering every step, built with a few bulk ops. Rows not running at t
    hold 0 (their gradient there is 0, so the value never matters)."""
    prev = torch.empty_like(buf)
    if not reverse:
        prev[0] = init
        prev[1:] = buf[:-1]
        return prev
    prev[-1] = init
    prev[:-1] = buf[1:]
    B = buf.shape[1]
    if min(batch_sizes) == B:
        return prev
    sizes = torch.tensor(batch_sizes, device=buf.device)
    running = torch.arange(B, device=buf.device)[None, :] < sizes[:, None]          # (T, B)
    starts = running.clone()
    starts[:-1] &= ~running[1:]                    # reverse direction: row r starts at t = len_r - 1
    return torch.where(starts[..., None], init.unsqueeze(0), prev)


def _final_state(buf: torch.Tensor, init: torch.Tensor, steps) -> torch.Tensor:
    """State after each row's last step: the last step where the row was in the running prefix."""
    out = init.clone()
    done = 0
    for t, b, _, _ in reversed(steps):          # from the last processed step backwards
        if b > done:
            out[done:b] = buf[t, done:b]
            done = b
    return out


class FusedRecurrence(torch.autograd.Function):
    """One direction of one layer. Returns (output (T, B, H), h_n (B, H), c_n (B, H) or an empty tensor)."""

    @staticmethod
    def forward(ctx, mode, batch_sizes, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        steps = _schedule(T, batch_sizes, reverse)
        w_hh_t = w_hh.t()
        bias = None
        if b_ih is not None:
            bias = b_ih + b_hh if mode != "GRU" else b_ih
        flat = x.reshape(T * B, -1)
        proj = torch.addmm(bias, flat, w_ih.t()) if bias is not None else flat @ w_ih.t()
        proj = proj.view(T, B, -1)
        out = x.new_zeros(T, B, H)
        extra = {}
        if mode in ("RNN_TANH", "RNN_RELU"):
            act = torch.tanh_ if mode == "RNN_TANH" else torch.relu_
            for t, b, tp, bp in steps:
                h = out[t, :b]
                torch.addmm(proj[t, :b], _prev_state(out, h0, tp, b, bp), w_hh_t, out=h)
                act(h)
            h_n, c_n = _final_state(out, h0, steps), x.new_empty(0)
        elif mode == "LSTM":
            gates = proj                                   # overwritten in place by the activated gates
            cell = x.new_zeros(T, B, H)
            tanh_c = x.new_zeros(T, B, H)
            for t, b, tp, bp in steps:
                g = gates[t, :b]
                g.addmm_(_prev_state(out, h0, tp, b, bp), w_hh_t)
                g[:, : 2 * H].sigmoid_()
                g[:, 2 * H: 3 * H].tanh_()
                g[:, 3 * H:].sigmoid_()
                c = cell[t, :b]
                torch.mul(g[:, H: 2 * H], _prev_state(cell, c0, tp, b, bp), out=c)
                c.addcmul_(g[:, :H], g[:, 2 * H: 3 * H])
                torch.tanh(c, out=tanh_c[t, :b])
                torch.mul(g[:, 3 * H:], tanh_c[t, :b], out=out[t, :b])
            h_n, c_n = _final_state(out, h0, steps), _final_state(cell, c0, steps)
            extra = {"gates": gates, "cell": cell, "tanh_c": tanh_c}
        elif mode == "GRU":
            rz = x.new_zeros(T, B, 2 * H)                  # activated r, z
            n_buf = x.new_zeros(T, B, H)
            hn_buf = x.new_zeros(T, B, H)                  # b_n = W_hn h_{t-1} + b_hn (needed by backward)
            gh = x.new_empty(B, 3 * H)
            for t, b, tp, bp in steps:
                hp = _prev_state(out, h0, tp, b, bp)
                g = gh[:b]
                if b_hh is not None:
                    torch.addmm(b_hh, hp, w_hh_t, out=g)
                else:
                    torch.mm(hp, w_hh_t, out=g)
                a = proj[t, :b]
                torch.add(a[:, : 2 * H], g[:, : 2 * H], out=rz[t, :b]).sigmoid_()
                hn_buf[t, :b] = g[:, 2 * H:]
                n = n_buf[t, :b]
                torch.addcmul(a[:, 2 * H:], rz[t, :b, :H], g[:, 2 * H:], out=n).tanh_()
                h = out[t, :b]
                torch.sub(hp, n, out=h)
                h.mul_(rz[t, :b, H:]).add_(n)
            h_n, c_n = _final_state(out, h0, steps), x.new_empty(0)
            extra = {"rz": rz, "n": n_buf, "hn": hn_buf}
        else:
            raise ValueError(f"unknown recurrent mode '{mode}'; choose from {', '.join(MODES)}")
        ctx.mode, ctx.steps, ctx.has_bias = mode, steps, b_ih is not None
        ctx.sizes, ctx.reverse = batch_sizes, reverse
        ctx.extra_keys = tuple(extra)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, out, *extra.values())
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_hn, g_cn):
        x, h0, c0, w_ih, w_hh, out, *extra_vals = ctx.saved_tensors
        extra = dict(zip(ctx.extra_keys, extra_vals))
        mode, steps = ctx.mode, ctx.steps
        T, B, _ = x.shape
        H = w_hh.shape[1]
        g_out = g_out if g_out is not None else torch.zeros_like(out)
        dh = g_hn.clone() if g_hn is not None else torch.zeros_like(h0)
        h_prev = _prev_states_bulk(out, h0, ctx.sizes, ctx.reverse)
        dc = None
        d_hh_gate = None                                   # GRU: gradient of the W_hh h + b_hh pre-activations
        if mode in ("RNN_TANH", "RNN_RELU"):
            deriv = 1 - out * out if mode == "RNN_TANH" else (out > 0).to(out.dtype)
            d_gate = torch.zeros_like(out)
            for t, b, _, _ in reversed(steps):
                d = dh[:b]
                d.add_(g_out[t, :b])
                torch.mul(d, deriv[t, :b], out=d_gate[t, :b])
                torch.mm(d_gate[t, :b], w_hh, out=d)
        elif mode == "LSTM":
            gates, cell, tanh_c = extra["gates"], extra["cell"], extra["tanh_c"]
            i, f, g, o = gates.split(H, dim=2)
            c_prev = _prev_states_bulk(cell, c0, ctx.sizes, ctx.reverse)
            # factors of the pre-activation gradients, computed for all steps at once
            k = torch.cat([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], dim=2)
            a = o * (1 - tanh_c * tanh_c)
            kv = k.view(T, B, 4, H)
            dc = g_cn.clone() if g_cn is not None else torch.zeros_like(c0)
            d_gate = torch.zeros_like(gates)
            dv = d_gate.view(T, B, 4, H)
            for t, b, _, _ in reversed(steps):
                d = dh[:b]
                d.add_(g_out[t, :b])
                dct = dc[:b]
                dct.addcmul_(d, a[t, :b])
                torch.mul(dct.unsqueeze(1), kv[t, :b, :3], out=dv[t, :b, :3])
                torch.mul(d, kv[t, :b, 3], out=dv[t, :b, 3])
                dct.mul_(f[t, :b])
                torch.mm(d_gate[t, :b], w_hh, out=d)
        else:  # GRU
            rz, n, hn = extra["rz"], extra["n"], extra["hn"]
            r, z = rz[..., :H], rz[..., H:]
            f_n = (1 - z) * (1 - n * n)                    # d h / d pre_n
            f_z = (h_prev - n) * z * (1 - z)               # d h / d pre_z
            f_r = hn * r * (1 - r)                         # d pre_n / d pre_r
            d_gate = torch.zeros(T, B, 3 * H, dtype=x.dtype, device=x.device)     # input-side pre-activations
            d_hh_gate = torch.zeros_like(d_gate)
            direct = torch.empty_like(dh)
            for t, b, _, _ in reversed(steps):
                d = dh[:b]
                d.add_(g_out[t, :b])
                dn = d_gate[t, :b, 2 * H:]
                torch.mul(d, f_n[t, :b], out=dn)
                torch.mul(d, f_z[t, :b], out=d_gate[t, :b, H: 2 * H])
                torch.mul(dn, f_r[t, :b], out=d_gate[t, :b, :H])
                dhh = d_hh_gate[t, :b]
                dhh[:, : 2 * H] = d_gate[t, :b, : 2 * H]
                torch.mul(dn, r[t, :b], out=dhh[:, 2 * H:])
                torch.mul(d, z[t, :b], out=direct[:b])
                torch.addmm(direct[:b], dhh, w_hh, out=d)
        rec = d_hh_gate if d_hh_gate is not None else d_gate
        flat_rec = rec.reshape(T * B, -1)
        flat_in = d_gate.reshape(T * B, -1)
        need = ctx.needs_input_grad
        dx = (flat_in @ w_ih).view(T, B, -1) if need[3] else None
        dw_ih = flat_in.t() @ x.reshape(T * B, -1) if need[6] else None
        dw_hh = flat_rec.t() @ h_prev.reshape(T * B, H) if need[7] else None
        db_ih = flat_in.sum(0) if ctx.has_bias and need[8] else None
        db_hh = flat_rec.sum(0) if ctx.has_bias and need[9] else None
        dh0 = dh if need[4] else None
        dc0 = dc if (dc is not None and need[5]) else None
        return None, None, None, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh


def fused_recurrence(mode: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, w_ih, w_hh,
                     b_ih=None, b_hh=None, batch_sizes: list[int] | None = None, reverse: bool = False):
    """Run one direction of one layer: x (T, B, I), h0/c0 (B, H); rows sorted by decreasing length when
    `batch_sizes` (rows still running at each step) is given. Returns (output, h_n, c_n or None)."""
    T, B = x.shape[:2]
    sizes = list(batch_sizes) if batch_sizes is not None else [B] * T
    if c0 is None:
        c0 = x.new_zeros(0)
    out, h_n, c_n = FusedRecurrence.apply(mode, sizes, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return out, h_n, (c_n if mode == "LSTM" else None)
