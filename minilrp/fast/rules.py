"""Fast twins of the reference rules (minilrp/explain/rules.py): the same relevance and
shares, computed faster. Each twin ``twin(rule, layer, a, R, ctx) -> (R_in, shares) or None``
returns None where it has nothing faster to offer (the reference rule then runs).

What makes them faster:
- step 1 comes from the forward pass: the layer's output z (epsilon, z^B) and, for
  gamma and alpha-beta on inputs a >= 0 (after a ReLU), the products P = a w+ and Q = a w-
  computed by the forward from the same im2col columns (relevance.forward);
- after a ReLU the a- halves of gamma and alpha-beta vanish: they are skipped;
- step 2 runs fused in one numba pass (kernels.two_term_ratios);
- step 3 runs as one GEMM over stacked weights (and one col2im for a conv);
- rule-modified weights (w+, w-, w + g w+-, z^B's l w+ + h w-) and the window counts of flat
  are kept in the network's fast-path state while the weight they came from is unchanged
  (compared in full once per call: weights may be changed in place);
- flat on a stride-1 conv spreads its ratios with a box sum instead of a transposed conv;
  w^2 and flat compute their image-independent denominators for one image only.
"""
from __future__ import annotations

import numpy as np

from ..engine import kernels as engine_kernels
from ..engine.layers import Conv2d, Dense
from ..explain.rules import (AlphaBeta, Epsilon, Flat, Gamma, WinnerTakeAll, WSquare, ZBox, neg, per_output, pos)
from . import kernels

STACKED = (Dense, Conv2d)  # weights stack along the output-channel axis: one GEMM for several
KEPT_MAX = 1 << 20  # weights up to this many elements keep their rule-modified copies


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------
def kept(ctx, layer, key, make):
    """make(layer.weight), kept in the network's fast-path state with a snapshot of the weight
    it came from, reused while the weight equals the snapshot (compared once per call)."""
    w = layer.weight
    if w.size > KEPT_MAX:
        return make(w)
    store = ctx["state"].kept
    entry = store.get(id(layer))
    if entry is None or entry["layer"] is not layer or entry["call"] is not ctx["call"]:
        if entry is None or entry["layer"] is not layer or entry["w"].shape != w.shape or \
                entry["w"].dtype != w.dtype or not (entry["w"] == w).all():
            entry = store[id(layer)] = {"layer": layer, "w": w.copy()}
        entry["call"] = ctx["call"]
    if key not in entry:
        entry[key] = make(w)
        entry[key].flags.writeable = False
    return entry[key]


def signed(w):
    """w+ and w- stacked: (2, *w.shape)."""
    return np.stack([np.maximum(w, 0), np.minimum(w, 0)])


def nonnegative(a, ctx):
    """a >= 0 (after a ReLU): the forward's products exist only for such inputs."""
    return ctx.get("PQ") is not None or np.minimum.reduce(a, axis=None) >= 0


def linear_stacked(layer, a, W):
    """[linear(a, W[i]) for each i] stacked along the output-channel axis, in one GEMM."""
    return layer.linear(a, W.reshape((-1,) + W.shape[2:]))


def linear_T_stacked(layer, S, W):
    """sum_i linear_T(S_i, W[i]) for S = [S_0, S_1, ...] stacked along axis 1, in one GEMM."""
    return layer.linear_T(S, W.reshape((-1,) + W.shape[2:]))


def bias_vector(b, R):
    return np.zeros(R.shape[1], R.dtype) if b is None else b


def ratio(z, R, eps, b=None):
    """Step 2 of the rule pattern fused in one pass, as explain.rules.ratio."""
    N, Co = R.shape[:2]
    zero = np.zeros(Co, R.dtype)
    s, sh = kernels.two_term_ratios(z, None, R, zero, zero, zero, 1, 0, 0, 0, 1, 0, eps, False)
    bias = np.zeros(N) if b is None else (s if s.ndim == 2 else s.reshape(N, Co, -1).sum(axis=2)) @ b
    return s, {"bias": bias, "stabiliser": sh[:, 1], "dropped": sh[:, 2]}


def one_image(layer, a, w, b=None):
    """linear(1, w, b) for inputs of a's shape: the same for every image, computed once."""
    z1 = layer.linear(np.ones((1,) + a.shape[1:], a.dtype), w, b)
    return np.broadcast_to(z1, (len(a),) + z1.shape[1:])


def signed_products(layer, a, ctx, W):
    """P = a w+ (and Q = a w- when W holds both), from the forward when it computed them."""
    PQ = ctx.get("PQ")
    if PQ is None:
        PQ = linear_stacked(layer, a, W)
    Co = PQ.shape[1] // len(W)
    return PQ[:, :Co], (PQ[:, Co:] if len(W) == 2 else None)


# ----------------------------------------------------------------------------------------
# The twins
# ----------------------------------------------------------------------------------------
def epsilon(rule, layer, a, R, ctx):
    if rule.relative:
        return None
    w, b = rule.params(layer)
    z = ctx["z"]  # step 1 is the forward's output (less the bias the rule ignores)
    if b is None and layer.bias is not None:
        z = z - per_output(layer.bias, z)
    s, shares = ratio(z, R, rule.epsilon, b)
    return a * layer.linear_T(s, w), shares


def product_weights(rule, layer, a, ctx):
    """The weights whose products with a a twin needs from the forward: [w+, w-] for alpha-beta,
    [w+] for z+ and gamma, on Dense/Conv2d with a >= 0; else None."""
    if type(rule) not in (Gamma, AlphaBeta) or not isinstance(layer, STACKED) or not nonnegative(a, ctx):
        return None
    W = kept(ctx, layer, "signed", signed)
    return W if type(rule) is AlphaBeta and rule.beta != 0 else W[:1]


def gamma(rule, layer, a, R, ctx):
    W = product_weights(rule, layer, a, ctx)
    if W is None:
        return None
    w, b = rule.params(layer)
    g = rule.gamma
    P, _ = signed_products(layer, a, ctx, W)
    # Q = a w- from the forward's output z = P + Q + bias: one GEMM fewer. Gamma's denominators
    # stay well conditioned (|d| >= g |P| or g |Q| on the branch that uses them, so the rounding
    # of the subtraction costs a few ulps); alpha-beta's z- = Q alone would not, it keeps its GEMM.
    Q = ctx["z"] - P if layer.bias is None else ctx["z"] - per_output(layer.bias, P) - P
    bv = bias_vector(b, R)
    S, sh = kernels.two_term_ratios(P, Q, R, bv, bv + g * pos(bv), bv + g * neg(bv),
                                    1 + g, 1, 1, 1 + g, 1, 1, rule.epsilon, True)
    W_mod = kept(ctx, layer, ("gamma", g), lambda w: w + g * signed(w))
    return a * linear_T_stacked(layer, S, W_mod), {"bias": sh[:, 0], "stabiliser": sh[:, 1], "dropped": sh[:, 2]}


def alpha_beta(rule, layer, a, R, ctx):
    W = product_weights(rule, layer, a, ctx)
    if W is None:
        return None
    w, b = rule.params(layer)
    P, Q = signed_products(layer, a, ctx, W)
    bv = bias_vector(b, R)
    S, sh = kernels.two_term_ratios(P, Q, R, bv, pos(bv), neg(bv), 1, 0, 0, 1,
                                    rule.alpha, -rule.beta, rule.epsilon, False)
    return a * linear_T_stacked(layer, S, W), {"bias": sh[:, 0], "stabiliser": sh[:, 1], "dropped": sh[:, 2],
                                               "positive": sh[:, 3], "negative": sh[:, 4]}


def channel_bounds(rule, a, ctx):
    """z^B bounds as one (l, h) per input channel of a (N, C, H, W), when they are (finite
    numbers or per-channel values, given or the network's input range) and contain a (checked on
    each channel's extremes); else None (the reference rule then checks them and says why)."""
    default = ctx.get("input_range", (None, None))
    key = (rule, a.shape[1]) + tuple(None if v is None else v.tobytes() for v in default)
    try:
        limits = ctx["state"].bounds.get(key, False)
    except TypeError:  # bounds given as arrays or lists: worked out every call
        limits = per_channel_limits(rule, a.shape[1], ctx)
    if limits is False:
        limits = ctx["state"].bounds[key] = per_channel_limits(rule, a.shape[1], ctx)
    if limits is None:
        return None
    l, h, floor, ceiling = limits
    if (a.min(axis=(0, 2, 3)) < floor).any() or (a.max(axis=(0, 2, 3)) > ceiling).any():
        return None
    return l, h


def per_channel_limits(rule, C, ctx):
    """(l, h, floor, ceiling) per channel for bounds that are numbers or per-channel values, the
    floor and ceiling with the reference's tolerance; else None."""
    out = []
    for given, default in zip((rule.low, rule.high), ctx.get("input_range", (None, None))):
        if given is None and default is None:
            return None
        try:
            v = np.asarray(default if given is None else given, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if v.ndim > 1 or v.size not in (1, C) or not np.isfinite(v).all():
            return None
        out.append(np.broadcast_to(v.reshape(-1), (C,)))
    l, h = out
    tol = 1e-5 * np.maximum(1.0, np.abs(h - l))  # as the reference's check
    return tuple(l.tolist()), tuple(h.tolist()), l - tol, h + tol


def zbox(rule, layer, a, R, ctx):
    if not isinstance(layer, Conv2d):
        return None
    channel = channel_bounds(rule, a, ctx)
    if channel is None:
        return None
    # the same l, h per input channel everywhere: sum_j l_j w+_jk + h_j w-_jk is a conv of ones
    # with one weight w_b = l w+ + h w-, and R_j = x_j (w s)_j - (w_b s)_j
    l, h = channel
    w_b = kept(ctx, layer, ("box", l, h), lambda w: box_weight(w, l, h))
    z_b = kept(ctx, layer, ("box z", l, h, a.shape[1:]), lambda w: one_image(layer, a[:1], w_b)[0])
    z = ctx["z"] if layer.bias is None else ctx["z"] - per_output(layer.bias, ctx["z"])
    s, shares = ratio(z - z_b, R, rule.epsilon)
    c = layer.linear_T(s, np.concatenate([layer.weight, w_b], axis=1))  # both in one GEMM
    C = a.shape[1]
    return a * c[:, :C] - c[:, C:], shares


def box_weight(w, l, h):
    """l w+ + h w- for a conv weight w (Co, C, K, K) and per-input-channel bounds l, h (C,)."""
    wp, wn = signed(w)
    shape = (1, -1, 1, 1)
    return np.asarray(l, w.dtype).reshape(shape) * wp + np.asarray(h, w.dtype).reshape(shape) * wn


def wsquare(rule, layer, a, R, ctx):
    w, b = rule.params(layer)
    w2 = kept(ctx, layer, "w2", lambda w: w * w)
    b2 = None if b is None else b * b
    s, shares = ratio(one_image(layer, a, w2, b2), R, rule.epsilon, b2)
    return layer.linear_T(s, w2), shares


def flat(rule, layer, a, R, ctx):
    if not isinstance(layer, STACKED):
        return None
    # all weights equal: every output channel has the same window count n_k, so the
    # relevance is summed over the channels first and spread back through one channel of ones
    ones, n = window_counts(ctx["state"], layer, a)
    R1 = R.sum(axis=1, keepdims=True)
    s, shares = ratio(np.broadcast_to(n, R1.shape), R1, rule.epsilon)
    if isinstance(layer, Conv2d) and layer.stride == 1:
        return box_sum(s, layer.kernel_size, layer.padding, a.shape), shares
    return layer.linear_T(s, ones), shares


def window_counts(state, layer, a):
    """One output channel of ones (1, *weight.shape[1:]) and n_k, how many inputs each output's
    window reaches (1, 1[, Ho, Wo]); kept per geometry."""
    key = (type(layer), layer.weight.shape[1:], getattr(layer, "stride", 1), getattr(layer, "padding", 0),
           a.shape[1:], a.dtype)
    if key not in state.counts:
        ones = np.ones((1,) + layer.weight.shape[1:], a.dtype)
        state.counts[key] = ones, layer.linear(np.ones((1,) + a.shape[1:], a.dtype), ones)
    return state.counts[key]


def box_sum(s, K, p, shape):
    """The transposed stride-1 conv (padding p) of one channel s (N, 1, Ho, Wo) with a K x K
    kernel of ones: every input receives the sum of s over the windows reaching it, the same in
    every input channel. Two passes of K shifted adds. -> shape (N, C, H, W)."""
    N, C, H, W = shape
    Ho, Wo = s.shape[2:]
    rows = np.zeros((N, Ho + K - 1, Wo), s.dtype)
    for i in range(K):
        rows[:, i:i + Ho] += s[:, 0]
    full = np.zeros((N, Ho + K - 1, Wo + K - 1), s.dtype)
    for j in range(K):
        full[:, :, j:j + Wo] += rows
    return np.ascontiguousarray(np.broadcast_to(full[:, None, p:p + H, p:p + W], shape))


def winner_take_all(rule, layer, a, R, ctx):
    K, S = layer.kernel_size, layer.stride
    if rule.ties == "first":  # the gradient's routing, from the forward's argmax
        R_in = engine_kernels.maxpool_backward(R, layer.arg, K, S, a.shape)
    else:
        R_in = kernels.maxpool_relevance(a, ctx["z"], R, K, S)
    zero = np.zeros(len(R))
    return R_in, {"bias": zero, "stabiliser": zero, "dropped": zero}


TWINS = {Epsilon: epsilon, Gamma: gamma, AlphaBeta: alpha_beta, ZBox: zbox, WSquare: wsquare, Flat: flat,
         WinnerTakeAll: winner_take_all}
