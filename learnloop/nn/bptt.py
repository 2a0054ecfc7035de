"""Back-propagation through time written by hand (Werbos, 1990): the fast path of `learnloop.nn.recurrent`.

One call runs one direction of one recurrent layer over a whole (T, B, I) sequence. Autograd records no
per-step graph; instead this module does what cuDNN / oneDNN do:

1. the input projection of all T steps is one matmul:   P = X W_ih^T + b            (T*B, G*H)
2. the loop does only the recurrent part per step, in place in buffers allocated once per call for all
   steps (per-step views made in one `unbind`):           gates_t = P_t + h_{t-1} W_hh^T
3. backward walks the steps in reverse, carrying dh and dc; per step it does one matmul, which also adds
   the output gradient of the next step it visits (dh_{t-1} = g_out_{t-1} + dgates_t W_hh), and a few
   element-wise products with factors computed for all steps at once before the loop;
4. the weight gradients are summed over time in one matmul each:
       dW_hh = sum_t dgates_t^T h_{t-1},   dW_ih = dgates^T X,   dX = dgates W_ih,   db = sum dgates.
A step is one matmul and a few single-threaded element-wise ops: tanh is computed as 2 s(2u) - 1 from
doubled pre-activations (torch.tanh opens a parallel region on every (B, H) step, see _tanh_from_sigmoid),
and the LSTM's four gates take one sigmoid. Measured by bench/bench_recurrent.py.

Gate equations (gate order and symbols as in torch.nn, see recurrent.py); s = sigmoid:
    Elman (Elman, 1990):  h_t = act(P_t + W_hh h_{t-1})                       dpre = dh act'(.)
    LSTM (Hochreiter & Schmidhuber, 1997; forget gate Gers et al., 2000):
            [i, f, g, o] = [s, s, tanh, s](P_t + W_hh h_{t-1}),  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)
            dc_t = dc_{t+1} f_{t+1} + dh_t o (1 - tanh^2 c_t)
            dpre_i = dc g i(1-i),  dpre_f = dc c_{t-1} f(1-f),  dpre_g = dc i (1-g^2),  dpre_o = dh tanh(c_t) o(1-o)
    GRU (Cho et al., 2014):  a = P_t (with b_ih),  b = W_hh h_{t-1} + b_hh
            r = s(a_r + b_r),  z = s(a_z + b_z),  n = tanh(a_n + r b_n),  h_t = n + z (h_{t-1} - n)
            dpre_n = dh (1-z)(1-n^2),  dpre_z = dh (h_{t-1}-n) z(1-z),  dpre_r = dpre_n b_n r(1-r),
            db_n = dpre_n r,  dh_{t-1} = dh z + [db_n, dpre_r, dpre_z] [W_hn; W_hr; W_hz]
  (the GRU backward keeps [db_n, dpre_r, dpre_z, dpre_n] side by side, so the recurrent gradient is the
  first three blocks and the input-side one the last three, both in one matmul).

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


# --- the schedule and per-step views ------------------------------------------------------------------------
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


def _at_steps(buf: torch.Tensor, steps) -> list[torch.Tensor]:
    """[buf[t, :b_t] for each step, in processing order]; `unbind` makes the T views in one call."""
    views, full = buf.unbind(0), buf.shape[1]
    return [views[t] if b == full else views[t][:b] for t, b, _, _ in steps]


def _h_prev(out: torch.Tensor, h0: torch.Tensor, steps) -> list:
    """State entering each step: h_0 at the first, the previous step's output after it. Where rows start
    mid-sequence (reverse direction of a ragged batch) the entry is a pair to concatenate at run time."""
    views, full, res = out.unbind(0), out.shape[1], []
    for _, b, tp, bp in steps:
        if tp is None:
            res.append(h0 if b == full else h0[:b])
        elif bp >= b:
            res.append(views[tp] if b == full else views[tp][:b])
        else:
            res.append((views[tp][:bp], h0[bp:b]))
    return res


def _cell_slots(c0: torch.Tensor, T: int, steps, reverse: bool, alloc):
    """LSTM cell states in one (T + 1, B, H) buffer: step t reads slot t + reverse and writes slot
    t + 1 - reverse, so c_{t-1} of all steps is a view. c_0 rows are written where rows start."""
    buf = alloc(T + 1, *c0.shape)
    for t, b, tp, bp in steps:
        lo = 0 if tp is None else bp
        if lo < b:
            buf[t + reverse, lo:b] = c0[lo:b]
    return buf, buf[int(reverse): T + int(reverse)], buf[1 - int(reverse): T + 1 - int(reverse)]


def _final_state(leaving: list[torch.Tensor], init: torch.Tensor, steps) -> torch.Tensor:
    """State after each row's last step: the last step where the row was in the running prefix."""
    if steps and all(b == init.shape[0] for _, b, _, _ in steps):
        return leaving[-1].clone()
    out, done = init.clone(), 0
    for k in range(len(steps) - 1, -1, -1):                 # from the last processed step backwards
        b = steps[k][1]
        if b > done:
            out[done:b] = leaving[k][done:b]
            done = b
    return out


def _outer_prev(dg: torch.Tensor, out: torch.Tensor, h0: torch.Tensor, steps, reverse: bool) -> torch.Tensor:
    """sum_t dg_t^T h_{t-1}: the outputs shifted by one step in one matmul, plus h_0 where rows start.
    Rows not running at a step have dg = 0 there (and padded outputs are 0)."""
    G, H = dg.shape[2], out.shape[2]
    if not steps:                                           # an empty batch
        return dg.new_zeros(G, H)
    res = dg[steps[0][0]].t() @ h0
    if out.shape[0] > 1:
        cur, prev = (dg[:-1], out[1:]) if reverse else (dg[1:], out[:-1])
        res.addmm_(cur.reshape(-1, G).t(), prev.reshape(-1, H))
    for t, b, tp, bp in steps:
        if tp is not None and bp < b:
            res.addmm_(dg[t, bp:b].t(), h0[bp:b])
    return res


def _input_grads(need, flat_d: torch.Tensor, x: torch.Tensor, w_ih: torch.Tensor):
    """dX = dgates W_ih and dW_ih = dgates^T X (each only if needed)."""
    T, B = x.shape[:2]
    dx = (flat_d @ w_ih).view(x.shape) if need[3] else None
    dw_ih = flat_d.t() @ x.reshape(T * B, x.shape[2]) if need[6] else None
    return dx, dw_ih


def _backward_loop(steps, ragged: bool, g_out_l, dh: torch.Tensor, step) -> None:
    """Walk the steps in reverse. `step(k, d, nxt)` turns d = dL/dh_t (rows [:b]) into dL/dh_{t-1} in
    place, adding `nxt` (the output gradient of the next step visited) when it is not None."""
    n = len(steps)
    if not ragged:
        dh.add_(g_out_l[n - 1])
    for k in range(n - 1, -1, -1):
        if ragged:
            d = dh[: steps[k][1]]
            d.add_(g_out_l[k])
            step(k, d, None)
        else:
            step(k, dh, g_out_l[k - 1] if k else None)


def _mm_into(d: torch.Tensor, nxt, a: torch.Tensor, w: torch.Tensor) -> None:
    """d = nxt + a @ w (or a @ w)."""
    if nxt is None:
        torch.mm(a, w, out=d)
    else:
        torch.addmm(nxt, a, w, out=d)


def _tanh_from_sigmoid(two_u: torch.Tensor, out: torch.Tensor, minus_one: torch.Tensor) -> None:
    """out = tanh(u) = 2 s(2u) - 1, given 2u. torch.tanh runs its kernel on several threads from 2048
    elements up, so each (B, H) step would open a parallel region (slow, and very slow when other
    processes share the cores); sigmoid and add stay on one thread at these sizes."""
    torch.sigmoid(two_u, out=out)
    torch.add(minus_one, out, alpha=2, out=out)


# --- Elman ------------------------------------------------------------------------------------------------
def _rnn_forward(mode, proj, out, h0, w_hh_t, steps):
    """tanh: proj and w_hh_t are doubled, h = 2 s(2 pre) - 1 (see _tanh_from_sigmoid)."""
    tanh, m1 = mode == "RNN_TANH", out.new_full((), -1.0)
    for p, h, hp in zip(_at_steps(proj, steps), _at_steps(out, steps), _h_prev(out, h0, steps)):
        torch.addmm(p, torch.cat(hp) if type(hp) is tuple else hp, w_hh_t, out=h)
        if tanh:
            _tanh_from_sigmoid(h, h, m1)
        else:
            h.relu_()
    return {}


def _rnn_backward(ctx, out, dh, dc, g_out, w_hh, alloc, extra):
    steps = ctx.steps
    if ctx.mode == "RNN_TANH":
        deriv = torch.addcmul(out.new_ones(()), out, out, value=-1)
    else:
        deriv = (out > 0).to(out.dtype)
    dg = alloc(out.shape)
    dg_l, der_l = _at_steps(dg, steps), _at_steps(deriv, steps)

    def step(k, d, nxt):
        torch.mul(d, der_l[k], out=dg_l[k])
        _mm_into(d, nxt, dg_l[k], w_hh)

    _backward_loop(steps, ctx.ragged, _at_steps(g_out, steps), dh, step)
    return dg, dg, None


# --- LSTM -------------------------------------------------------------------------------------------------
def _lstm_forward(proj, out, h0, c0, w_hh_t, steps, reverse, alloc):
    """No torch.tanh (see _tanh_from_sigmoid): proj and w_hh_t carry 2x the g rows, so one sigmoid covers
    all four gates, s_g = s(2 pre_g) and g = 2 s_g - 1; the cell buffer holds 2c, so tanh(c) = 2 s(2c) - 1.
    tanh(c) goes through one small buffer (backward recomputes it in bulk): less memory traffic per step."""
    T, _, H = out.shape
    gates = proj                                           # activated in place: [s_i, s_f, s_g, s_o]
    cells, c_prev, c_next = _cell_slots(c0 * 2, T, steps, reverse, alloc)
    tc, m1 = h0.new_empty(h0.shape), out.new_full((), -1.0)
    lists = [_at_steps(v, steps) for v in (gates, gates[..., :H], gates[..., H: 2 * H], gates[..., 2 * H: 3 * H],
                                           gates[..., 3 * H:], c_prev, c_next, out)]
    B = tc.shape[0]
    for g, i, f, sg, o, cp, cn, h, hp in zip(*lists, _h_prev(out, h0, steps)):
        g.addmm_(torch.cat(hp) if type(hp) is tuple else hp, w_hh_t)
        g.sigmoid_()
        torch.mul(f, cp, out=cn)
        cn.addcmul_(i, sg, value=4).sub_(i, alpha=2)       # 2c = f 2c_prev + 2 i (2 s_g - 1)
        t_c = tc if cn.shape[0] == B else tc[: cn.shape[0]]
        _tanh_from_sigmoid(cn, t_c, m1)
        torch.mul(o, t_c, out=h)
    c_n = _final_state(lists[6], c0 * 2, steps).mul_(0.5)
    return {"gates": gates, "cells": cells, "c_n": c_n}


def _lstm_backward(ctx, out, dh, dc, g_out, w_hh, alloc, extra):
    steps, H = ctx.steps, out.shape[2]
    gates, cells, T, m1 = extra["gates"], extra["cells"], out.shape[0], out.new_full((), -1.0)
    c_prev = cells[int(ctx.reverse): T + int(ctx.reverse)]
    tanh_c = torch.empty_like(out)
    _tanh_from_sigmoid(cells[1 - int(ctx.reverse): T + 1 - int(ctx.reverse)], tanh_c, m1)    # as the forward did
    i, f, s_g, o = gates.split(H, dim=2)
    one, zero = out.new_ones(()), out.new_zeros(())
    # factors of the pre-activation gradients for all steps at once (each line one pass over memory):
    # s(1-s) = s - s*s for every block, and with g = 2 s_g - 1: 1 - g^2 = 4 s_g (1 - s_g)
    k = torch.addcmul(gates, gates, gates, value=-1)
    k_i, k_f, k_g, k_o = k.split(H, dim=2)
    k_i.mul_(torch.add(m1, s_g, alpha=2))
    torch.addcmul(zero, k_f, c_prev, value=0.5, out=k_f)           # the buffer holds 2c
    torch.addcmul(zero, k_g, i, value=4, out=k_g)
    k_o.mul_(tanh_c)
    a = torch.addcmul(one, tanh_c, tanh_c, value=-1).mul_(o)       # dh_t -> dc_t
    dg = alloc(gates.shape)
    kv, dv = k.view(*out.shape[:2], 4, H), dg.view(*out.shape[:2], 4, H)
    a_l, kifg_l, ko_l, f_l = (_at_steps(v, steps) for v in (a, kv[:, :, :3], k_o, f))
    dg_l, difg_l, do_l = (_at_steps(v, steps) for v in (dg, dv[:, :, :3], dg[..., 3 * H:]))
    ragged, dc_u = ctx.ragged, dc.unsqueeze(1)

    def step(kk, d, nxt):
        dct, dcu = (dc[: d.shape[0]], dc_u[: d.shape[0]]) if ragged else (dc, dc_u)
        dct.addcmul_(d, a_l[kk])
        torch.mul(dcu, kifg_l[kk], out=difg_l[kk])
        torch.mul(d, ko_l[kk], out=do_l[kk])
        dct.mul_(f_l[kk])
        _mm_into(d, nxt, dg_l[kk], w_hh)

    _backward_loop(steps, ragged, _at_steps(g_out, steps), dh, step)
    return dg, dg, None


# --- GRU --------------------------------------------------------------------------------------------------
def _gru_forward(proj, out, h0, w_hh_t, steps, alloc):
    """proj (T, B, 4H) holds [a_r + b_hr, a_z + b_hz, 2 b_hn, 2 a_n]; the step's matmul adds W_hh h_{t-1}
    (n rows doubled) to the first three blocks in place, so they become the r, z pre-activations and
    2 b_n = 2 (W_hn h + b_hn); n = tanh(a_n + r b_n) = 2 s(2 a_n + r 2 b_n) - 1."""
    H = out.shape[2]
    n_buf, diff, m1 = alloc(out.shape), alloc(out.shape), out.new_full((), -1.0)
    lists = [_at_steps(v, steps) for v in (proj[..., : 3 * H], proj[..., : 2 * H], proj[..., :H],
                                           proj[..., H: 2 * H], proj[..., 2 * H: 3 * H], proj[..., 3 * H:],
                                           n_buf, diff, out)]
    for g, rz, r, z, hn, a_n, n, df, h, hp in zip(*lists, _h_prev(out, h0, steps)):
        hp = torch.cat(hp) if type(hp) is tuple else hp
        g.addmm_(hp, w_hh_t)
        rz.sigmoid_()
        _tanh_from_sigmoid(torch.addcmul(a_n, r, hn, out=n), n, m1)     # a_n, b_n are doubled
        torch.sub(hp, n, out=df)
        torch.addcmul(n, z, df, out=h)
    return {"gh": proj, "n": n_buf, "diff": diff}


def _gru_backward(ctx, out, dh, dc, g_out, w_hh, alloc, extra):
    steps, (T, B, H) = ctx.steps, out.shape
    gh, n, diff = extra["gh"], extra["n"], extra["diff"]
    r, z, hn, _ = gh.split(H, dim=2)
    one = out.new_ones(())
    f_zn = torch.empty(T, B, 2, H, dtype=out.dtype, device=out.device)     # dh -> [dpre_z, dpre_n]
    torch.addcmul(z, z, z, value=-1, out=f_zn[:, :, 0]).mul_(diff)
    tmp = torch.addcmul(one, n, n, value=-1)
    torch.addcmul(tmp, tmp, z, value=-1, out=f_zn[:, :, 1])
    f_rr = torch.empty_like(f_zn)                                           # dpre_n -> [db_n, dpre_r]
    f_rr[:, :, 0] = r
    f_r = torch.addcmul(r, r, r, value=-1, out=f_rr[:, :, 1])
    torch.addcmul(out.new_zeros(()), f_r, hn, value=0.5, out=f_r)            # the buffer holds 2 b_n
    dg = alloc(T, B, 4 * H)                                     # [db_n, dpre_r, dpre_z, dpre_n]
    dv = dg.view(T, B, 4, H)
    w_perm = torch.cat([w_hh[2 * H:], w_hh[: 2 * H]])          # rows [W_hn; W_hr; W_hz]
    lists = [_at_steps(v, steps) for v in (f_zn, f_rr, dv[:, :, 2:], dv[:, :, 3:], dv[:, :, :2], dg[..., : 3 * H], z)]
    fzn_l, frr_l, dzn_l, dn_l, dhr_l, drec_l, z_l = lists
    direct, dh_u = out.new_empty(B, H), dh.unsqueeze(1)

    def step(k, d, nxt):
        torch.mul(dh_u[: d.shape[0]] if ctx.ragged else dh_u, fzn_l[k], out=dzn_l[k])
        torch.mul(dn_l[k], frr_l[k], out=dhr_l[k])
        dr = direct[: d.shape[0]]
        if nxt is None:
            torch.mul(d, z_l[k], out=dr)
        else:
            torch.addcmul(nxt, d, z_l[k], out=dr)
        torch.addmm(dr, drec_l[k], w_perm, out=d)

    _backward_loop(steps, ctx.ragged, _at_steps(g_out, steps), dh, step)
    return dg[..., H:], dg[..., : 3 * H], (lambda m: torch.cat([m[H:], m[:H]]))


def _projection(mode, x, w_ih, w_hh, b_ih, b_hh):
    """The input projection of all steps in one matmul (step 1 above), laid out for the step loop, and the
    W_hh^T the loop multiplies by, copied contiguous (the small per-step matmul is faster with it).
    LSTM: the g rows doubled (see _lstm_forward). GRU: [r, z, n_h, n_x] (see _gru_forward)."""
    T, B, n_in = x.shape
    H = w_hh.shape[1]
    flat = x.reshape(T * B, n_in)
    if mode == "GRU":
        proj = x.new_empty(T * B, 4 * H)
        w_rz, w_n = w_ih[: 2 * H].t(), w_ih[2 * H:].t() * 2
        if b_ih is None:
            torch.mm(flat, w_rz, out=proj[:, : 2 * H])
            torch.mm(flat, w_n, out=proj[:, 3 * H:])
            proj[:, 2 * H: 3 * H] = 0
        else:
            torch.addmm(b_ih[: 2 * H] + b_hh[: 2 * H], flat, w_rz, out=proj[:, : 2 * H])
            torch.addmm(b_ih[2 * H:] * 2, flat, w_n, out=proj[:, 3 * H:])
            proj[:, 2 * H: 3 * H] = b_hh[2 * H:] * 2
        scale = w_hh.new_ones(3 * H, 1)
        scale[2 * H:] = 2
        return proj.view(T, B, 4 * H), (w_hh * scale).t().contiguous()
    bias = b_ih + b_hh if b_ih is not None else None
    if mode != "RNN_RELU":                 # pre-activations fed to a tanh are doubled (_tanh_from_sigmoid)
        scale = w_ih.new_full((w_ih.shape[0], 1), 2.0)
        if mode == "LSTM":
            scale[: 2 * H] = 1
            scale[3 * H:] = 1
        w_ih, w_hh = w_ih * scale, w_hh * scale
        bias = bias * scale[:, 0] if bias is not None else None
    proj = torch.addmm(bias, flat, w_ih.t()) if bias is not None else flat @ w_ih.t()
    return proj.view(T, B, proj.shape[1]), w_hh.t().contiguous()


# --- the autograd Function ----------------------------------------------------------------------------------
class FusedRecurrence(torch.autograd.Function):
    """One direction of one layer. Returns (output (T, B, H), h_n (B, H), c_n (B, H) or an empty tensor)."""

    @staticmethod
    def forward(ctx, mode, batch_sizes, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        if mode not in MODES:
            raise ValueError(f"unknown recurrent mode '{mode}'; choose from {', '.join(MODES)}")
        T, B, _ = x.shape
        H = w_hh.shape[1]
        steps = _schedule(T, batch_sizes, reverse)
        ragged = any(b < B for _, b, _, _ in steps) or len(steps) < T
        # padded positions must be 0 in a ragged batch (outputs, and gradients of rows not running)
        alloc = (lambda *s: x.new_zeros(*s)) if ragged else (lambda *s: x.new_empty(*s))
        proj, w_hh_t = _projection(mode, x, w_ih, w_hh, b_ih, b_hh)
        out = alloc(T, B, H)
        c_n = x.new_empty(0)
        if mode == "LSTM":
            extra = _lstm_forward(proj, out, h0, c0, w_hh_t, steps, reverse, alloc)
            c_n = extra.pop("c_n")
        elif mode == "GRU":
            extra = _gru_forward(proj, out, h0, w_hh_t, steps, alloc)
        else:
            extra = _rnn_forward(mode, proj, out, h0, w_hh_t, steps)
        h_n = _final_state(_at_steps(out, steps), h0, steps)
        ctx.mode, ctx.steps, ctx.has_bias, ctx.reverse, ctx.ragged = mode, steps, b_ih is not None, reverse, ragged
        ctx.extra_keys = tuple(extra)
        ctx.save_for_backward(x, h0, w_ih, w_hh, out, *extra.values())
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_hn, g_cn):
        x, h0, w_ih, w_hh, out, *extra_vals = ctx.saved_tensors
        extra = dict(zip(ctx.extra_keys, extra_vals))
        mode = ctx.mode
        T, B, H = out.shape
        alloc = (lambda *s: x.new_zeros(*s)) if ctx.ragged else (lambda *s: x.new_empty(*s))
        g_out = g_out if g_out is not None else torch.zeros_like(out)
        dh = g_hn.clone() if g_hn is not None else torch.zeros_like(h0)
        dc = None
        if mode == "LSTM":
            dc = g_cn.clone() if g_cn is not None else torch.zeros_like(h0)
            d_in, d_rec, unperm = _lstm_backward(ctx, out, dh, dc, g_out, w_hh, alloc, extra)
        elif mode == "GRU":
            d_in, d_rec, unperm = _gru_backward(ctx, out, dh, dc, g_out, w_hh, alloc, extra)
        else:
            d_in, d_rec, unperm = _rnn_backward(ctx, out, dh, dc, g_out, w_hh, alloc, extra)
        unperm = unperm or (lambda m: m)                   # recurrent-gradient block order -> torch's
        need = ctx.needs_input_grad
        flat_in = d_in.reshape(T * B, d_in.shape[2])
        dx, dw_ih = _input_grads(need, flat_in, x, w_ih)
        dw_hh = unperm(_outer_prev(d_rec, out, h0, ctx.steps, ctx.reverse)) if need[7] else None
        db_ih = db_hh = None
        if ctx.has_bias and (need[8] or need[9]):
            db_ih = flat_in.sum(0)
            if d_rec is d_in:
                db_hh = db_ih.clone()
            else:                                          # GRU: [db_n, dpre_r, dpre_z]; r, z shared
                db_hh = torch.cat([db_ih[: 2 * H], d_rec[..., :H].sum((0, 1))])
        return None, None, None, dx, (dh if need[4] else None), (dc if need[5] else None), dw_ih, dw_hh, \
            db_ih, db_hh


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
