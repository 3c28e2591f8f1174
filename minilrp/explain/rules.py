"""LRP rules, written by hand. A rule is data (its parameters); the layer owns the arithmetic.

Every rule on a linear layer (Dense, Conv2d, AvgPool2d) follows one pattern, reusing the
layer's forward ``linear(a, w, b)`` and its adjoint ``linear_T(s, w)`` (for a conv: the
transposed convolution) under modified parameters:

    1. z   = linear(a', rho(w), rho(b))        the modified pre-activations
    2. s   = R / (z + eps * sign0(z))          sign0(0) = +1; where the denominator is 0
                                               exactly, R is dropped (never NaN)
    3. c   = linear_T(s, rho(w))
    4. R_j = a'_j * c_j

Notation: a+ = max(a, 0), a- = min(a, 0), likewise w+, w-, b+, b-. Conventions follow
Zennit 0.5.1 (../shared/ZENNIT_SEMANTICS.md), so results agree with it to float64 rounding:

- ``bias=True`` keeps the (rho-modified) bias in the denominator, absorbing its share of
  relevance (shown in the ledger); ``bias=False`` ignores biases (conservation then holds).
- AlphaBeta uses alpha - beta = 1 (Bach et al. 2015, Montavon et al. 2019, Zennit,
  iNNvestigate).

Each ``relevance`` leaves its inputs unchanged (the ledger sums them later) and returns
``(R_in, shares)``: ``shares`` are per-example sums telling
where relevance went that did not reach the layer's input: ``bias`` (absorbed by biases),
``stabiliser`` (absorbed by eps), ``dropped`` (where a denominator was exactly 0), and for
AlphaBeta the ``positive`` and ``negative`` parts. For every rule,
sum(R) - sum(R_in) = bias + stabiliser + dropped (the ledger checks it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass

import numpy as np

from ..engine import kernels
from ..errors import MinilrpError
from ..engine.layers import AvgPool2d, Conv2d, Dense, MaxPool2d

LINEAR = (Dense, Conv2d, AvgPool2d)


def sign0(z):
    """sign with sign0(0) = +1: the stabiliser pushes a zero denominator up, never to 0."""
    one = z.dtype.type(1)
    return np.where(z >= 0, one, -one)


def per_example(x):
    """Sum over everything but the batch axis: (N, ...) -> (N,)."""
    return x.reshape(x.shape[0], -1).sum(axis=1)


def _divide(R, d):
    """s = R / d, with s = 0 where d == 0 exactly (that relevance is dropped)."""
    s = np.zeros_like(R)
    np.divide(R, d, out=s, where=d != 0)
    return s


STACKED = (Dense, Conv2d)  # layers whose weights stack along an output/input channel axis


def _signed_parts(w):
    """w+ and w- in one array (2, *w.shape); [0] and [1] are contiguous views."""
    W = np.empty((2,) + w.shape, w.dtype)
    np.maximum(w, 0, out=W[0])
    np.minimum(w, 0, out=W[1])
    return W


DERIVED_MAX = 1 << 20  # weights up to this many elements keep their rule-modified copies


def _derived(layer, key, make, ctx=None):
    """make(layer.weight), e.g. [w+, w-], kept on the layer with a snapshot of the weight it
    was made from while the weight equals that snapshot (compared in full: weights may be
    changed in place) and is small: at batch 1 rebuilding them is a visible part of an LRP
    call (benchmarks/lrp_batch1.py derived). Within one Network.relevance call (ctx["call"])
    the weight is compared once."""
    w = layer.weight
    if w.size > DERIVED_MAX:
        return make(w)
    cache = layer.__dict__.get("_derived")
    call = (ctx or {}).get("call")
    if cache is None or call is None or cache["call"] is not call:
        if cache is None or cache["w"].shape != w.shape or cache["w"].dtype != w.dtype or not (cache["w"] == w).all():
            cache = layer._derived = {"w": w.copy()}
        cache["call"] = call
    if key not in cache:
        cache[key] = make(w)
        cache[key].flags.writeable = False
    return cache[key]


def _linear_stacked(layer, a, W):
    """[linear(a, W[i]) for each i] stacked along the output-channel axis (N, len(W) Co, ...),
    in one GEMM where the layer's weights stack (Dense, Conv2d). W: (k, *w.shape)."""
    if isinstance(layer, STACKED):
        return layer.linear(a, W.reshape((-1,) + W.shape[2:]))
    return np.concatenate([layer.linear(a, w) for w in W], axis=1)


def _linear_T_stacked(layer, S, W):
    """sum_i linear_T(S_i, W[i]) for S = [S_0, S_1, ...] stacked along axis 1, in one GEMM
    (and one col2im for a conv) where the weights stack. W: (k, *w.shape)."""
    if isinstance(layer, STACKED):
        return layer.linear_T(S, W.reshape((-1,) + W.shape[2:]))
    return sum(layer.linear_T(part, w) for part, w in zip(np.split(S, len(W), axis=1), W))


def _linear2(layer, a, w1, w2):
    """(linear(a, w1), linear(a, w2)) in one GEMM where the weights stack."""
    z = _linear_stacked(layer, a, np.stack([w1, w2]))
    return np.split(z, 2, axis=1)


def _linear_T2(layer, s1, w1, s2, w2):
    """linear_T(s1, w1) + linear_T(s2, w2) in one GEMM where the weights stack."""
    return _linear_T_stacked(layer, np.concatenate([s1, s2], axis=1), np.stack([w1, w2]))


def _linear_inputs(layer, vs, ws):
    """sum_i linear(vs[i], ws[i]) in one GEMM, stacking inputs and weights along the input
    axis where the layer has one."""
    if isinstance(layer, STACKED):
        return layer.linear(np.concatenate(vs, axis=1), np.concatenate(ws, axis=1))
    return sum(layer.linear(v, w) for v, w in zip(vs, ws))


def _linear_T_inputs(layer, s, ws):
    """[linear_T(s, w) for w in ws] with one GEMM (and one col2im), stacking the weights
    along the input axis where the layer has one."""
    if isinstance(layer, STACKED):
        c = layer.linear_T(s, np.concatenate(ws, axis=1))
        return np.split(c, len(ws), axis=1)
    return [layer.linear_T(s, w) for w in ws]


def _fused_ratios(layer, a, R, ctx, W, bias, *args):
    """Steps 1-2 of the rule pattern for inputs a >= 0, where a rule needs only P = a w+ and
    Q = a w- (W = [w+, w-], or [w+] alone for one term): P from the forward (ctx["P"], see
    :func:`_with_plus`) or one GEMM, and Q from the forward's output z = P + Q + b when the
    caller has it (ctx["z"]), else both from one stacked GEMM; then the element-wise steps in
    one pass (kernels.two_term_ratios; ``bias`` and ``args`` are its parameters).
    -> S (N, len(W) Co, ...), shares (N, 5)."""
    ctx = ctx or {}
    z, P = ctx.get("z"), ctx.get("P")
    if len(W) == 1 or z is not None:
        P = layer.linear(a, W[0]) if P is None else P
        return kernels.two_term_ratios(P, R, bias, *args, z=z if len(W) == 2 else None,
                                       z_bias=_bias_vector(layer.bias, R))
    return kernels.two_term_ratios(_linear_stacked(layer, a, W), R, bias, *args)


def _nonnegative(a, ctx=None):
    """a >= 0 everywhere (after a ReLU): the rules' fast path. A product from the forward
    (ctx["P"], see :func:`_with_plus`) was computed only for such inputs."""
    return (ctx or {}).get("P") is not None or np.minimum.reduce(a, axis=None) >= 0


def _with_plus(layer, a, ctx):
    """w+, for the forward to compute P = a w+ with the layer's output (Network.relevance
    passes it back as ctx["P"]), when the rule's fast path (inputs a >= 0) will need it;
    else None."""
    if isinstance(layer, STACKED) and _nonnegative(a):
        return _derived(layer, "signed", _signed_parts, ctx)[0]
    return None


def _one_image_linear(layer, v, w, b=None):
    """linear(v, w, b) for an input ``v`` that is the same for every image (a broadcast
    view): computed once, broadcast to the batch."""
    if v.strides[0] == 0:
        z1 = layer.linear(np.ascontiguousarray(v[:1]), w, b)
        return np.broadcast_to(z1, (len(v),) + z1.shape[1:])
    return layer.linear(np.ascontiguousarray(v), w, b)


def _bias_vector(b, R):
    """The per-output bias (Co,), zeros when there is none."""
    return np.zeros(R.shape[1], R.dtype) if b is None else b


def _bias_map(b, like):
    """A per-output bias shaped to broadcast against outputs ``like`` (N, Co[, Ho, Wo])."""
    if b is None:
        return np.zeros((), like.dtype)
    return b.reshape((1, -1) + (1,) * (like.ndim - 2))


class Rule:
    """Base class of the rules for linear layers."""

    serves = LINEAR
    bias = True

    primary: tuple = ()  # parameters always shown in a label

    def label(self) -> str:
        """Short name: the rule's main parameters, and others where they differ from their
        defaults, e.g. ``AlphaBeta(alpha=2.0, beta=1.0)``, ``Epsilon(epsilon=0.25, relative=True)``."""
        if not is_dataclass(self):  # a user's own rule class
            return repr(self)
        args = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                if f.name not in ("low", "high") and (f.name in self.primary or getattr(self, f.name) != f.default)]
        return f"{type(self).__name__}({', '.join(args)})"

    def check_layer(self, layer):
        if not isinstance(layer, self.serves):
            raise MinilrpError(f"rule {self!r} cannot serve layer {layer!r} (it serves "
                               f"{', '.join(c.__name__ for c in self.serves)})")

    def _params(self, layer):
        b = layer.bias if self.bias else None
        return layer.weight, b

    def forward_weights(self, layer, a, ctx=None):
        """Weights whose product with the input ``a`` of ``layer`` this rule will need, for
        the forward to compute it while the input is at hand (ctx["P"] in
        :meth:`relevance`); None (the default): none. ctx: as relevance's."""
        return None


def _stabilise(z, eps):
    return z + eps * sign0(z)


def _ratio(z, R, eps, b=None):
    """Step 2 of the rule pattern: s = R / (z + eps sign0(z)) (0 where that is exactly 0)
    and where relevance went: bias = sum s*b (b: the bias inside z, or None), stabiliser,
    dropped. A scalar eps runs fused in one pass (kernels.two_term_ratios)."""
    N, Co = R.shape[:2]
    if not isinstance(eps, np.ndarray):
        zero = np.zeros(Co, R.dtype)
        s, sh = kernels.two_term_ratios(z, R, zero, zero, zero, 1, 0, 0, 0, 1, 0, eps, False)
        shares = {"stabiliser": sh[:, 1], "dropped": sh[:, 2]}
    else:  # a per-example epsilon (relative to the RMS of z)
        d = _stabilise(z, eps)
        s = _divide(R, d)
        shares = {"stabiliser": per_example(s * (d - z)), "dropped": per_example(np.where(d == 0, R, 0))}
    if b is None:
        shares["bias"] = np.zeros(N)
    else:
        shares["bias"] = (s if s.ndim == 2 else s.reshape(N, Co, -1).sum(axis=2)) @ b
    return s, shares


def _check_nonneg(value, what):
    try:
        ok = math.isfinite(value) and value >= 0
    except TypeError:
        ok = False
    if not ok:
        raise MinilrpError(f"{what} must be >= 0 (a finite number), got {value!r}")


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon:  R_j = a_j sum_k w_jk R_k / (z_k + eps sign0(z_k)),  z_k = sum_j a_j w_jk + b_k.

    ``relative=True`` scales eps by the RMS of z over each example's layer outputs
    (Montavon et al. 2019's tutorial uses eps = 0.25 * std). epsilon = 0 is LRP-0."""

    epsilon: float = 1e-6
    relative: bool = False
    bias: bool = True
    primary = ("epsilon",)

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")

    def relevance(self, layer, a, R, ctx=None):
        w, b = self._params(layer)
        z = (ctx or {}).get("z")  # the layer's output from the forward pass, when known
        if z is None:
            z = layer.linear(a, w, b)
        elif b is None and layer.bias is not None:
            z = z - _bias_map(layer.bias, z)
        eps = self.epsilon
        if self.relative:
            eps = eps * np.sqrt(np.mean(z.reshape(len(z), -1) ** 2, axis=1)).reshape((-1,) + (1,) * (z.ndim - 1))
        s, shares = _ratio(z, R, eps, b)
        return a * layer.linear_T(s, w), shares


def LRP0(bias=True):
    """LRP-0 (Bach et al. 2015): Epsilon with epsilon = 0."""
    return Epsilon(0.0, bias=bias)


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-gamma, sign-aware (Zennit's generalisation; Montavon et al. 2019 for a >= 0).

    With the unmodified z_k = sum a w + b deciding the branch:
      z_k > 0: d_k = sum a+ (w + g w+) + sum a- (w + g w-) + (b + g b+); R_k reaches a+ through
               (w + g w+) and a- through (w + g w-);
      z_k < 0: d_k = sum a+ (w + g w-) + sum a- (w + g w+) + (b + g b-); R_k reaches a+ through
               (w + g w-) and a- through (w + g w+);
      z_k = 0: R_k is dropped.
    R_j = sum_k a_j (modified w_jk) R_k / (d_k + eps sign0(d_k)). gamma = 0 is LRP-epsilon.
    After a ReLU the inputs are >= 0, so the a- terms vanish and are skipped."""

    gamma: float = 0.25
    epsilon: float = 1e-6
    bias: bool = True
    primary = ("gamma",)

    def __post_init__(self):
        _check_nonneg(self.gamma, "gamma")
        _check_nonneg(self.epsilon, "epsilon")

    def forward_weights(self, layer, a, ctx=None):
        return _with_plus(layer, a, ctx)

    def relevance(self, layer, a, R, ctx=None):
        w, b = self._params(layer)
        g = self.gamma
        W_mod = _derived(layer, ("gamma", g), lambda w: w + g * _signed_parts(w), ctx)
        if _nonnegative(a, ctx):
            # a >= 0 (after a ReLU): the a- terms vanish. With P = a w+, Q = a w-:
            # z = P + Q + b, d_pos = (1+g) P + Q + b + g b+, d_neg = P + (1+g) Q + b + g b-;
            # the element-wise steps run fused, then one stacked transposed GEMM.
            bv = _bias_vector(b, R)
            W = _derived(layer, "signed", _signed_parts, ctx)
            S, sh = _fused_ratios(layer, a, R, ctx, W, bv, bv + g * np.maximum(bv, 0), bv + g * np.minimum(bv, 0),
                                  1 + g, 1, 1, 1 + g, 1, 1, self.epsilon, True)
            R_in = a * _linear_T_stacked(layer, S, W_mod)
            return R_in, {"bias": sh[:, 0], "stabiliser": sh[:, 1], "dropped": sh[:, 2]}
        w_up, w_down = W_mod  # w + g w+, w + g w-: the weights favouring positive / negative z
        # signed inputs: both halves of a, four modified forwards
        bm = _bias_map(b, R)
        b_up, b_down = bm + g * np.maximum(bm, 0), bm + g * np.minimum(bm, 0)
        ap, an = np.maximum(a, 0), np.minimum(a, 0)
        up_p, down_p = _linear2(layer, ap, w_up, w_down)
        up_n, down_n = _linear2(layer, an, w_up, w_down)
        z = layer.linear(a, w, b)
        d_pos, d_neg = up_p + down_n + b_up, down_p + up_n + b_down
        stab_pos, stab_neg = _stabilise(d_pos, self.epsilon), _stabilise(d_neg, self.epsilon)
        s_pos = _divide(np.where(z > 0, R, 0), stab_pos)
        s_neg = _divide(np.where(z < 0, R, 0), stab_neg)
        R_in = ap * _linear_T2(layer, s_pos, w_up, s_neg, w_down) + \
            an * _linear_T2(layer, s_pos, w_down, s_neg, w_up)
        dropped = np.where(z == 0, R, 0) + np.where((z > 0) & (stab_pos == 0), R, 0) + \
            np.where((z < 0) & (stab_neg == 0), R, 0)
        return R_in, {"bias": per_example(s_pos * b_up + s_neg * b_down),
                      "stabiliser": per_example(s_pos * (stab_pos - d_pos) + s_neg * (stab_neg - d_neg)),
                      "dropped": per_example(dropped)}


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta with alpha - beta = 1:
      z+_k = sum a+ w+ + sum a- w- + b+_k,   z-_k = sum a+ w- + sum a- w+ + b-_k,
      R_j = alpha [a+_j sum_k w+_jk R_k / s(z+_k) + a-_j sum_k w-_jk R_k / s(z+_k)]
          - beta  [a+_j sum_k w-_jk R_k / s(z-_k) + a-_j sum_k w+_jk R_k / s(z-_k)].
    alpha=1, beta=0 is z+ (ZPlus)."""

    alpha: float = 2.0
    beta: float = 1.0
    epsilon: float = 1e-6
    bias: bool = True
    primary = ("alpha", "beta")

    def __post_init__(self):
        _check_nonneg(self.beta, "beta")
        _check_nonneg(self.epsilon, "epsilon")
        if abs(self.alpha - self.beta - 1) > 1e-12:
            hint = (" You gave alpha + beta = 1, a convention some papers use for a different "
                    "parametrisation; minilrp (like Zennit, iNNvestigate and Montavon et al.) "
                    "needs alpha - beta = 1 so that relevance is conserved, e.g. alpha=2, beta=1."
                    if abs(self.alpha + self.beta - 1) < 1e-12 else
                    " Conservation needs alpha - beta = 1 (e.g. alpha=2, beta=1 or alpha=1, beta=0).")
            raise MinilrpError(f"AlphaBeta(alpha={self.alpha}, beta={self.beta}): alpha - beta "
                               f"must equal 1.{hint}")

    def forward_weights(self, layer, a, ctx=None):
        return _with_plus(layer, a, ctx)

    def relevance(self, layer, a, R, ctx=None):
        w, b = self._params(layer)
        if _nonnegative(a, ctx):
            # a >= 0: z+ = P + b+, z- = Q + b- (P alone for z+), fused element-wise steps,
            # one stacked transposed GEMM.
            bv = _bias_vector(b, R)
            W = _derived(layer, "signed", _signed_parts, ctx)
            W = W if self.beta else W[:1]
            S, sh = _fused_ratios(layer, a, R, ctx, W, bv, np.maximum(bv, 0), np.minimum(bv, 0), 1, 0, 0, 1,
                                  self.alpha, -self.beta, self.epsilon, False)
            R_in = a * _linear_T_stacked(layer, S, W)
            return R_in, {"bias": sh[:, 0], "stabiliser": sh[:, 1], "dropped": sh[:, 2],
                          "positive": sh[:, 3], "negative": sh[:, 4]}
        # signed inputs: P = a+ w+ + a- w-, Q = a+ w- + a- w+ (the positive and negative parts)
        wp, wn = _derived(layer, "signed", _signed_parts, ctx)
        bm = _bias_map(b, R)
        bp, bn = np.maximum(bm, 0), np.minimum(bm, 0)
        ap, an = np.maximum(a, 0), np.minimum(a, 0)
        pp, qp = _linear2(layer, ap, wp, wn)
        pn, qn = _linear2(layer, an, wp, wn)
        P, Q = pp + qn, qp + pn
        z_pos = P + bp
        stab_pos = _stabilise(z_pos, self.epsilon)
        s_pos = self.alpha * _divide(R, stab_pos)
        shares = {"positive": per_example(s_pos * P), "bias": per_example(s_pos * bp),
                  "stabiliser": per_example(s_pos * (stab_pos - z_pos)),
                  "dropped": self.alpha * per_example(np.where(stab_pos == 0, R, 0))}
        z_neg = Q + bn
        stab_neg = _stabilise(z_neg, self.epsilon)
        s_neg = -self.beta * _divide(R, stab_neg)
        R_in = ap * _linear_T2(layer, s_pos, wp, s_neg, wn) + an * _linear_T2(layer, s_pos, wn, s_neg, wp)
        shares["negative"] = -per_example(s_neg * Q)
        shares["bias"] += per_example(s_neg * bn)
        shares["stabiliser"] += per_example(s_neg * (stab_neg - z_neg))
        shares["dropped"] -= self.beta * per_example(np.where(stab_neg == 0, R, 0))
        return R_in, shares


def ZPlus(epsilon=1e-6, bias=True):
    """z+ (Montavon et al. 2017): AlphaBeta with alpha = 1, beta = 0."""
    return AlphaBeta(1.0, 0.0, epsilon=epsilon, bias=bias)


@dataclass(frozen=True)
class ZBox(Rule):
    """z^B, the box rule for the pixel layer (Montavon et al. 2017), inputs bounded by
    low <= x <= high (per channel, in the network's input space):
      z_k = sum_j x_j w_jk - l_j w+_jk - h_j w-_jk     (the biases cancel)
      R_j = x_j (w s)_j - l_j (w+ s)_j - h_j (w- s)_j,  s = R / (z + eps sign0(z)).
    l and h are zero-padded by a convolution like x. ``low``/``high`` None: the network's
    valid input range from its weight file."""

    low: object = None
    high: object = None
    epsilon: float = 1e-6

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")

    def relevance(self, layer, a, R, ctx=None):
        low, high = (ctx or {}).get("bounds", (None, None))
        if low is None:
            raise MinilrpError("ZBox needs bounds: give low/high, or use it on the pixel layer "
                               "where the network's input range applies")
        w = layer.weight
        z = (ctx or {}).get("z")  # the forward's output, less the bias that z^B cancels
        z = layer.linear(a, w) if z is None else z - _bias_map(layer.bias, z)
        channel = (ctx or {}).get("channel_bounds")
        if channel is not None and isinstance(layer, Conv2d):
            # the same l, h per input channel everywhere: sum_j l_j w+_jk + h_j w-_jk is a conv
            # of ones with the one weight w_b = l w+ + h w-, kept per weight, bounds and shape,
            # and R_j = x_j (w s)_j - (w_b s)_j needs two stacked weights instead of three
            l, h = channel
            w_b = _derived(layer, ("box", l, h), lambda w: _box_weight(w, l, h), ctx)
            z_b = _derived(layer, ("box z", l, h, a.shape[1:]),
                           lambda w: layer.linear(np.ones((1,) + a.shape[1:], a.dtype), w_b), ctx)
            s, shares = _ratio(z - z_b, R, self.epsilon)
            c, c_b = _linear_T_inputs(layer, s, [w, w_b])
            return a * c - c_b, shares
        wp, wn = _derived(layer, "signed", _signed_parts, ctx)
        # sum_j l_j w+_jk + h_j w-_jk in one GEMM; computed once when every image has the same bounds
        shared = low.strides[0] == 0 and high.strides[0] == 0
        z = z - _linear_inputs(layer, [np.ascontiguousarray(v[:1] if shared else v) for v in (low, high)], [wp, wn])
        s, shares = _ratio(z, R, self.epsilon)
        c, c_low, c_high = _linear_T_inputs(layer, s, [w, wp, wn])
        return a * c - low * c_low - high * c_high, shares


def _box_weight(w, l, h):
    """l w+ + h w- for a conv weight w (Co, C, K, K) and per-input-channel bounds l, h (C,)."""
    wp, wn = _signed_parts(w)
    shape = (1, -1) + (1,) * (w.ndim - 2)
    return np.asarray(l, w.dtype).reshape(shape) * wp + np.asarray(h, w.dtype).reshape(shape) * wn


@dataclass(frozen=True)
class WSquare(Rule):
    """w^2 (Montavon et al. 2017): R_j = sum_k w_jk^2 R_k / s(sum_j w_jk^2 + b_k^2);
    the input values do not matter. ``bias=False`` drops b^2 from the denominator."""

    epsilon: float = 1e-6
    bias: bool = True

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")

    def relevance(self, layer, a, R, ctx=None):
        w, b = self._params(layer)
        w2 = w * w
        b2 = None if b is None else b * b
        z = _one_image_linear(layer, np.broadcast_to(np.ones((), a.dtype), a.shape), w2, b2)
        s, shares = _ratio(z, R, self.epsilon, b2)
        return layer.linear_T(s, w2), shares


@dataclass(frozen=True)
class Flat(Rule):
    """flat (Lapuschkin et al. 2019): all weights 1, no bias, input 1: each output spreads
    its relevance evenly over the inputs its window reaches (fewer at a zero-padded border):
    R_j = sum_{k: j in window(k)} R_k / s(n_k)."""

    epsilon: float = 1e-6

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")

    def relevance(self, layer, a, R, ctx=None):
        if isinstance(layer, STACKED):
            # all weights equal: every output channel has the same n_k, so the relevance is
            # summed over the channels first and spread back through one channel of ones
            w, z = _window_counts(layer, a.shape[1:], a.dtype)
            R = R.sum(axis=1, keepdims=True)
            s, shares = _ratio(z if len(R) == 1 else np.broadcast_to(z, R.shape), R, self.epsilon)
            if isinstance(layer, Conv2d) and layer.stride == 1:
                return _box_sum(s, layer.kernel_size, layer.padding, a.shape), shares
        else:
            w = np.ones_like(layer.weight)  # AvgPool2d: its kernel shape, shared by the channels
            z = _one_image_linear(layer, np.broadcast_to(np.ones((), a.dtype), a.shape), w)
            s, shares = _ratio(z, R, self.epsilon)
        return layer.linear_T(s, w), shares


def _box_sum(s, K, p, shape):
    """The transposed stride-1 conv (padding p) of one channel s (N, 1, Ho, Wo) with a
    K x K kernel of ones: every input receives the sum of s over the windows reaching it,
    the same in every input channel. A box sum, in two passes of K shifted adds: cheaper
    than the GEMM and col2im of a transposed conv. -> shape (N, C, H, W)."""
    N, C, H, W = shape
    Ho, Wo = s.shape[2:]
    rows = np.zeros((N, Ho + K - 1, Wo), s.dtype)
    for i in range(K):
        rows[:, i:i + Ho] += s[:, 0]
    full = np.zeros((N, Ho + K - 1, Wo + K - 1), s.dtype)
    for j in range(K):
        full[:, :, j:j + Wo] += rows
    return np.ascontiguousarray(np.broadcast_to(full[:, None, p:p + H, p:p + W], shape))


_counts: dict = {}


def _window_counts(layer, in_shape, dtype):
    """One output channel of ones (1, *weight.shape[1:]) and n_k of a Dense or Conv2d layer
    for inputs of shape in_shape: how many inputs each output's window reaches,
    (1, 1[, Ho, Wo]). They depend on the geometry only, so they are kept per geometry (a
    conv of ones costs as much as the rest of Flat at batch 1)."""
    key = (type(layer), layer.weight.shape[1:], getattr(layer, "stride", 1), getattr(layer, "padding", 0),
           in_shape, dtype)
    kept = _counts.get(key)
    if kept is None:
        if len(_counts) >= 64:
            _counts.clear()
        ones = np.ones((1,) + layer.weight.shape[1:], dtype)
        n = layer.linear(np.ones((1,) + tuple(in_shape), dtype), ones)
        ones.flags.writeable = n.flags.writeable = False
        kept = _counts[key] = (ones, n)
    return kept


# ----------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WinnerTakeAll(Rule):
    """Max-pool relevance follows the gradient: each window's relevance goes to its maximum;
    overlapping windows accumulate. Conserves relevance exactly.

    ties="split" (default): a window with several equal maxima splits its relevance evenly
    among them. ties="first": all of it goes to the first maximum in row-major order, as
    PyTorch's max-pool gradient and hence Zennit route it. Ties are common on real images:
    blank background gives identical activations in a whole window."""

    ties: str = "split"
    serves = (MaxPool2d,)
    primary = ("ties",)

    def __post_init__(self):
        if self.ties not in ("split", "first"):
            raise MinilrpError(f"WinnerTakeAll ties must be 'split' or 'first', got {self.ties!r}")

    def relevance(self, layer, a, R, ctx=None):
        K, S = layer.kernel_size, layer.stride
        out = (ctx or {}).get("z")  # the forward's output and argmax, when they are a's
        arg = layer.arg if layer.a is a else None
        if out is None or arg is None:
            out, arg = kernels.maxpool_forward(a, K, S)
        if self.ties == "first":
            R_in = kernels.maxpool_backward(R, arg, K, S, a.shape)
        else:
            R_in = kernels.maxpool_relevance(a, out, arg, R, K, S)
        zero = np.zeros(len(R), R.dtype)
        return R_in, {"bias": zero, "stabiliser": zero, "dropped": zero}


@dataclass(frozen=True)
class Proportional(Rule):
    """Max pooling treated as a sum pool: R_j = sum_k a_j R_k / s(sum_{j' in window k} a_j')."""

    epsilon: float = 1e-6
    serves = (MaxPool2d,)

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")

    def relevance(self, layer, a, R, ctx=None):
        K, S = layer.kernel_size, layer.stride
        ones = np.ones((K, K), a.dtype)
        z = kernels.pool2d(a, ones, S, 0)
        s, shares = _ratio(z, R, self.epsilon)
        return a * kernels.pool2d_transpose(s, ones, S, 0, a.shape), shares
