"""LRP rules, written by hand: the readable reference path. A rule is data (its parameters);
the layer owns the arithmetic.

Every rule on a linear layer (Dense, Conv2d, AvgPool2d) is the same four steps, reusing the
layer's forward ``linear(a, w, b)`` and its adjoint ``linear_T(s, w)`` (for a conv: the
transposed convolution) under modified parameters rho(w), rho(b):

    1. z   = linear(a, rho(w), rho(b))          the modified pre-activations
    2. s   = R / (z + eps * sign0(z))           sign0(0) = +1; where the denominator is 0
                                                exactly, R is dropped (never NaN)
    3. c   = linear_T(s, rho(w))
    4. R_j = a_j * c_j

Notation: a+ = max(a, 0), a- = min(a, 0), likewise w+, w-, b+, b-. Conventions follow
Zennit 0.5.1 (../shared/ZENNIT_SEMANTICS.md), so results agree with it to float64 rounding:

- ``bias=True`` keeps the (rho-modified) bias in the denominator, absorbing its share of
  relevance (shown in the ledger); ``bias=False`` ignores biases (conservation then holds).
- AlphaBeta uses alpha - beta = 1 (Bach et al. 2015, Montavon et al. 2019, Zennit,
  iNNvestigate).

``relevance(layer, a, R, ctx=None)`` takes the layer's input a and the relevance R at its
output and returns ``(R_in, shares)``, leaving a and R unchanged. ``shares`` are per-example
sums of what did not reach the layer's input: ``bias`` (absorbed by biases), ``stabiliser``
(absorbed by eps), ``dropped`` (where a denominator was exactly 0), and for AlphaBeta the
``positive`` and ``negative`` parts. For every rule,
sum(R) - sum(R_in) = bias + stabiliser + dropped (the ledger checks it).

This is the code ``net.relevance(x, ..., fast=False)`` runs. ``fast=True`` (the default) runs
minilrp/fast/, a faster implementation of these same rules, held equal to them by
tests/test_fast_path.py. A rule of your own needs only ``relevance``: it runs on both paths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass

import numpy as np

from ..engine.layers import AvgPool2d, Conv2d, Dense, MaxPool2d
from ..errors import MinilrpError

LINEAR = (Dense, Conv2d, AvgPool2d)


def pos(v):
    """v+ = max(v, 0); None stays None (a layer without bias)."""
    return None if v is None else np.maximum(v, 0)


def neg(v):
    """v- = min(v, 0); None stays None."""
    return None if v is None else np.minimum(v, 0)


def per_example(x):
    """Sum over everything but the batch axis, in float64: (N, ...) -> (N,)."""
    return x.reshape(x.shape[0], -1).sum(axis=1, dtype=np.float64)


def stabilise(z, eps):
    """z + eps sign0(z) with sign0(0) = +1: the stabiliser pushes a zero z up, never to 0."""
    return z + eps * np.where(z >= 0, 1, -1).astype(z.dtype)


def per_output(b, z):
    """A per-output bias (Co,) shaped to broadcast against outputs z (N, Co[, Ho, Wo])."""
    return None if b is None else b.reshape((1, -1) + (1,) * (z.ndim - 2))


def ratio(z, R, eps, b=None):
    """Step 2: s = R / (z + eps sign0(z)), s = 0 where that is exactly 0 (R is dropped there),
    and where the relevance went, per example: ``bias`` = sum s b (b (Co,): the bias inside z),
    ``stabiliser`` = sum s (d - z), ``dropped``. -> s (like R), shares."""
    d = stabilise(z, eps)
    s = np.divide(R, d, out=np.zeros_like(R), where=d != 0)
    bias = np.zeros(len(R)) if b is None else per_example(s * per_output(b, z))
    return s, {"bias": bias, "stabiliser": per_example(s * (d - z)),
               "dropped": per_example(np.where(d == 0, R, 0))}


def added(*shares):
    """The sum of several rules' shares, key by key."""
    return {k: sum(sh[k] for sh in shares) for k in shares[0]}


class Rule:
    """Base class of the rules: ``relevance(layer, a, R, ctx=None) -> (R_in, shares)``."""

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

    def params(self, layer):
        """The layer's weight and the bias the rule uses (None with ``bias=False``)."""
        return layer.weight, layer.bias if self.bias else None

    def relevance(self, layer, a, R, ctx=None):
        raise NotImplementedError


def _check_bool(value, what):
    if not isinstance(value, (bool, np.bool_)):
        raise MinilrpError(f"{what} must be True or False, got {value!r}")


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
        _check_bool(self.relative, "relative")
        _check_bool(self.bias, "bias")

    def relevance(self, layer, a, R, ctx=None):
        w, b = self.params(layer)
        z = layer.linear(a, w, b)                              # 1. z_k = sum_j a_j w_jk + b_k
        eps = self.epsilon
        if self.relative:                                      #    eps x RMS of each example's z
            eps = eps * np.sqrt(np.mean(z.reshape(len(z), -1) ** 2, axis=1)).reshape((-1,) + (1,) * (z.ndim - 1))
        s, shares = ratio(z, R, eps, b)                        # 2. s_k = R_k / (z_k + eps sign0(z_k))
        c = layer.linear_T(s, w)                               # 3. c_j = sum_k w_jk s_k
        return a * c, shares                                   # 4. R_j = a_j c_j


def LRP0(bias=True):
    """LRP-0 (Bach et al. 2015): Epsilon with epsilon = 0."""
    return Epsilon(0.0, bias=bias)


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-gamma, sign-aware (Zennit's generalisation; Montavon et al. 2019 for a >= 0). The
    unmodified z_k = sum_j a_j w_jk + b_k picks the weights that favour its sign:
      z_k > 0: d_k = sum a+ (w + g w+) + sum a- (w + g w-) + (b + g b+)
      z_k < 0: d_k = sum a+ (w + g w-) + sum a- (w + g w+) + (b + g b-)
      z_k = 0: R_k is dropped;
    R_j = sum_k a_j (the weight w_jk took in d_k) R_k / (d_k + eps sign0(d_k)). gamma = 0 is
    LRP-epsilon. After a ReLU a- = 0 and only the a+ terms remain."""

    gamma: float = 0.25
    epsilon: float = 1e-6
    bias: bool = True
    primary = ("gamma",)

    def __post_init__(self):
        _check_nonneg(self.gamma, "gamma")
        _check_nonneg(self.epsilon, "epsilon")
        _check_bool(self.bias, "bias")

    def relevance(self, layer, a, R, ctx=None):
        w, b = self.params(layer)
        g = self.gamma
        w_up, w_down = w + g * pos(w), w + g * neg(w)          # favour positive / negative z
        b_up, b_down = (None, None) if b is None else (b + g * pos(b), b + g * neg(b))
        z = layer.linear(a, w, b)
        # 1. d for z > 0 (a+ through w_up, a- through w_down) and for z < 0 (the other way round)
        d_up = layer.linear(pos(a), w_up, b_up) + layer.linear(neg(a), w_down)
        d_down = layer.linear(pos(a), w_down, b_down) + layer.linear(neg(a), w_up)
        # 2. each output's R goes through the d of its sign
        s_up, up = ratio(d_up, np.where(z > 0, R, 0), self.epsilon, b_up)
        s_down, down = ratio(d_down, np.where(z < 0, R, 0), self.epsilon, b_down)
        # 3-4. back along the weights that made each d
        R_in = pos(a) * (layer.linear_T(s_up, w_up) + layer.linear_T(s_down, w_down)) + \
            neg(a) * (layer.linear_T(s_up, w_down) + layer.linear_T(s_down, w_up))
        shares = added(up, down)
        shares["dropped"] = shares["dropped"] + per_example(np.where(z == 0, R, 0))
        return R_in, shares


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta with alpha - beta = 1, on the positive and negative contributions
      z+_k = sum a+ w+ + sum a- w- + b+_k,   z-_k = sum a+ w- + sum a- w+ + b-_k:
      R_j = alpha sum_k (a+_j w+_jk + a-_j w-_jk) R_k / s(z+_k)
          - beta  sum_k (a+_j w-_jk + a-_j w+_jk) R_k / s(z-_k),   s(z) = z + eps sign0(z).
    alpha=1, beta=0 is z+ (ZPlus)."""

    alpha: float = 2.0
    beta: float = 1.0
    epsilon: float = 1e-6
    bias: bool = True
    primary = ("alpha", "beta")

    def __post_init__(self):
        _check_nonneg(self.alpha, "alpha")
        _check_nonneg(self.beta, "beta")
        _check_nonneg(self.epsilon, "epsilon")
        _check_bool(self.bias, "bias")
        if abs(self.alpha - self.beta - 1) > 1e-12:
            hint = (" You gave alpha + beta = 1, a convention some papers use for a different "
                    "parametrisation; minilrp (like Zennit, iNNvestigate and Montavon et al.) "
                    "needs alpha - beta = 1 so that relevance is conserved, e.g. alpha=2, beta=1."
                    if abs(self.alpha + self.beta - 1) < 1e-12 else
                    " Conservation needs alpha - beta = 1 (e.g. alpha=2, beta=1 or alpha=1, beta=0).")
            raise MinilrpError(f"AlphaBeta(alpha={self.alpha}, beta={self.beta}): alpha - beta "
                               f"must equal 1.{hint}")

    def relevance(self, layer, a, R, ctx=None):
        w, b = self.params(layer)
        ap, an, wp, wn = pos(a), neg(a), pos(w), neg(w)
        z_pos = layer.linear(ap, wp, pos(b)) + layer.linear(an, wn)            # 1. z+
        z_neg = layer.linear(ap, wn, neg(b)) + layer.linear(an, wp)            #    z-
        s_pos, positive = ratio(z_pos, self.alpha * R, self.epsilon, pos(b))   # 2.
        s_neg, negative = ratio(z_neg, -self.beta * R, self.epsilon, neg(b))
        R_pos = ap * layer.linear_T(s_pos, wp) + an * layer.linear_T(s_pos, wn)  # 3-4.
        R_neg = ap * layer.linear_T(s_neg, wn) + an * layer.linear_T(s_neg, wp)
        return R_pos + R_neg, {**added(positive, negative), "positive": per_example(R_pos),
                               "negative": -per_example(R_neg)}


def ZPlus(epsilon=1e-6, bias=True):
    """z+ (Montavon et al. 2017): AlphaBeta with alpha = 1, beta = 0."""
    return AlphaBeta(1.0, 0.0, epsilon=epsilon, bias=bias)


@dataclass(frozen=True)
class ZBox(Rule):
    """z^B, the box rule for the pixel layer (Montavon et al. 2017), inputs bounded by
    l_j <= x_j <= h_j (in the network's input space):
      z_k = sum_j x_j w_jk - l_j w+_jk - h_j w-_jk     (the biases cancel)
      R_j = x_j (w s)_j - l_j (w+ s)_j - h_j (w- s)_j,  s = R / (z + eps sign0(z)).
    l and h are zero-padded by a convolution like x. ``low``/``high``: a number, one value
    per channel, or an array like one input (or like the batch); None: the network's valid
    input range from its weight file (on the pixel layer)."""

    low: object = None
    high: object = None
    epsilon: float = 1e-6

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")

    def relevance(self, layer, a, R, ctx=None):
        low, high = self.bounds(a, ctx)
        w = layer.weight
        z = layer.linear(a, w) - layer.linear(low, pos(w)) - layer.linear(high, neg(w))  # 1.
        s, shares = ratio(z, R, self.epsilon)                                                # 2.
        return a * layer.linear_T(s, w) - low * layer.linear_T(s, pos(w)) \
            - high * layer.linear_T(s, neg(w)), shares                                       # 3-4.

    def bounds(self, a, ctx=None):
        """l and h broadcast to a's shape, checked to contain a. ctx["input_range"] and
        ctx["input_shape"] (set by the network for a layer fed by its input) give the
        default bounds and the space they are per channel in."""
        ctx = ctx or {}
        shape = tuple(ctx.get("input_shape", a.shape[1:]))
        out = []
        for given, default, what in zip((self.low, self.high), ctx.get("input_range", (None, None)), ("low", "high")):
            if given is None and default is None:
                raise MinilrpError("ZBox needs bounds: give ZBox(low, high), or use it on the pixel "
                                   "layer, where the network's valid input range applies")
            v = np.asarray(default if given is None else given, dtype=np.float64)
            if not np.isfinite(v).all():
                raise MinilrpError(f"ZBox {what} must be finite, got {given!r}")
            if v.ndim == 1 and len(shape) == 3:  # one value per channel
                if v.size not in (1, shape[0]):
                    raise MinilrpError(f"ZBox {what} needs 1 or {shape[0]} per-channel values, got {v.size}")
                v = v.reshape(-1, 1, 1)
            try:
                out.append(np.broadcast_to(v, (len(a),) + shape).reshape(a.shape).astype(a.dtype))
            except ValueError:
                raise MinilrpError(f"ZBox {what} of shape {v.shape} does not fit the input {shape}") from None
        low, high = out
        tol = 1e-5 * np.maximum(1.0, np.abs(high - low))  # rounding of the normalisation
        if (a < low - tol).any() or (a > high + tol).any():
            raise MinilrpError(f"z^B bounds do not contain the input: it lies up to "
                               f"{max(float(np.max(low - a)), float(np.max(a - high))):.3g} outside "
                               "[low, high] (set ZBox low/high, or check the input normalisation)")
        return low, high


@dataclass(frozen=True)
class WSquare(Rule):
    """w^2 (Montavon et al. 2017): R_j = sum_k w_jk^2 R_k / s(sum_j w_jk^2 + b_k^2);
    the input values do not matter. ``bias=False`` drops b^2 from the denominator."""

    epsilon: float = 1e-6
    bias: bool = True

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")
        _check_bool(self.bias, "bias")

    def relevance(self, layer, a, R, ctx=None):
        w, b = self.params(layer)
        w2, b2 = w * w, None if b is None else b * b
        z = layer.linear(np.ones_like(a), w2, b2)              # 1. every input counts as 1
        s, shares = ratio(z, R, self.epsilon, b2)              # 2.
        return layer.linear_T(s, w2), shares                   # 3-4. R_j = c_j


@dataclass(frozen=True)
class Flat(Rule):
    """flat (Lapuschkin et al. 2019): all weights 1, no bias, input 1: each output spreads
    its relevance evenly over the inputs its window reaches (fewer at a zero-padded border):
    R_j = sum_{k: j in window(k)} R_k / s(n_k)."""

    epsilon: float = 1e-6

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")

    def relevance(self, layer, a, R, ctx=None):
        ones = np.ones_like(layer.weight)
        n = layer.linear(np.ones_like(a), ones)                # 1. n_k: inputs in k's window
        s, shares = ratio(n, R, self.epsilon)                  # 2.
        return layer.linear_T(s, ones), shares                 # 3-4. R_j = c_j


# ----------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------
def _no_shares(R):
    zero = np.zeros(len(R))
    return {"bias": zero, "stabiliser": zero, "dropped": zero}


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
        cols = layer.windows(a)                                # (K*K, N, C, Ho, Wo)
        if self.ties == "split":
            winners = cols == cols.max(axis=0)                 # every maximum of a window
        else:
            entry = np.arange(len(cols)).reshape((-1,) + (1,) * R.ndim)
            winners = entry == cols.argmax(axis=0)             # its first maximum
        return layer.windows_T(winners * (R / winners.sum(axis=0, dtype=R.dtype)), a.shape), _no_shares(R)


@dataclass(frozen=True)
class Proportional(Rule):
    """Max pooling treated as a sum pool: R_j = sum_k a_j R_k / s(sum_{j' in window k} a_j')."""

    epsilon: float = 1e-6
    serves = (MaxPool2d,)

    def __post_init__(self):
        _check_nonneg(self.epsilon, "epsilon")

    def relevance(self, layer, a, R, ctx=None):
        cols = layer.windows(a)                                # (K*K, N, C, Ho, Wo)
        s, shares = ratio(cols.sum(axis=0), R, self.epsilon)   # 1-2. z_k: the window's sum
        return layer.windows_T(cols * s, a.shape), shares      # 3-4. R_j = sum_k a_j s_k
