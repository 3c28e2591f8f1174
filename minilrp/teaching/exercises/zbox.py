"""Exercise zbox: the z^B (box) rule for the pixel layer (the student writes zbox_dense)."""
from __future__ import annotations

import numpy as np

from ...engine.layers import Dense
from .shared import (NUMPY_ONLY, STABILISER_HINTS, bundled, dense, divide, relevance_by_layer,
                     sample_inputs, stabilise, zbox_reference)
from ...explain.rules import Epsilon

TITLE = "The z^B (box) rule for the pixel layer"
FUNCTIONS = ["zbox_dense"]
SUMMARY = ("z_k = sum_j x_j w_kj - l_j w+_kj - h_j w-_kj; "
           "R_j = x_j (W^T s)_j - l_j (W+^T s)_j - h_j (W-^T s)_j")
POLICY = NUMPY_ONLY
HINTS = {"bounds_swapped": "low and high are swapped: the lower bound goes with the positive "
                           "weights (l w+) and the upper bound with the negative ones (h w-)",
         "bounds_ignored": "your result is plain LRP-epsilon: the box terms - l w+ - h w- are "
                           "missing from both the denominator and the numerator",
         "bound_terms_sign": "the bound terms have the wrong sign: z_kj = x_j w_kj *minus* l_j w+_kj "
                             "*minus* h_j w-_kj (each z_kj >= 0 when l <= x <= h), and likewise "
                             "R_j = x_j (W^T s)_j - l_j (W+^T s)_j - h_j (W-^T s)_j",
         "high_term_missing": "the upper-bound term - h_j w-_kj is missing (it matters "
                              "wherever a weight is negative)",
         # z >= 0 always (l <= x <= h), so only the stabiliser's sign can go wrong
         "stabiliser_sign": STABILISER_HINTS["stabiliser_sign"]}
USUAL_CAUSES = ["which bound pairs with which weights: l with w+ = max(w, 0), h with "
                "w- = min(w, 0)",
                "the bounds must appear in the denominator *and* in the numerator",
                "low/high given as scalars or per-feature arrays: broadcast them to x's shape",
                "no bias in z^B: the biases cancel"]
COMMON = dict(output="R_in", show_sums=True, shape_doc="like x: (N, in_features)",
              nan_hint="a division by zero: stabilise the denominator with eps * sign0(z)")


def variant(x, W, low, high, R, eps, swap=False, bounds=True, high_term=True, stab="sign0", sign=-1.0):
    """The rule written out, with the usual mistakes as options (sign: of the bound terms)."""
    low, high = np.broadcast_to(low, x.shape), np.broadcast_to(high, x.shape)
    if swap:
        low, high = high, low
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    lt = sign if bounds else 0.0
    ht = sign if (bounds and high_term) else 0.0
    z = x @ W.T + lt * (low @ Wp.T) + ht * (high @ Wn.T)
    s = divide(R, stabilise(z, eps, stab))
    return x * (s @ W) + lt * low * (s @ Wp) + ht * high * (s @ Wn)


def mistakes(x, W, low, high, R, eps):
    return {"bounds_swapped": variant(x, W, low, high, R, eps, swap=True),
            "bounds_ignored": variant(x, W, low, high, R, eps, bounds=False),
            "bound_terms_sign": variant(x, W, low, high, R, eps, sign=1.0),
            "high_term_missing": variant(x, W, low, high, R, eps, high_term=False),
            "stabiliser_sign": variant(x, W, low, high, R, eps, stab="minus")}


def add(book, cid, title, x, W, low, high, R, eps, **extra):
    exp = zbox_reference(dense(W), x, low, high, R, eps)
    book.case(cid, title, "zbox_dense",
              [("x", x), ("weight", W), ("low", low if isinstance(low, np.ndarray) else float(low)),
               ("high", high if isinstance(high, np.ndarray) else float(high)), ("R", R), ("epsilon", eps)],
              exp, mistakes(x, W, low, high, R, eps), **{**COMMON, **extra})


def committed(book):
    add(book, "hand", "two pixels in [0, 1], a 2 -> 2 layer worked by hand", np.array([[0.5, 0.25]]),
        np.array([[1.0, -2.0], [-1.0, 0.5]]), 0.0, 1.0, np.array([[1.0, 2.0]]), 1e-9)


def fresh(book, rng):
    g = rng("normalised")
    low, high = -0.4242, 2.8215
    add(book, "normalised", f"normalised pixels in [{low}, {high}] (scalar bounds), a 6 -> 4 layer",
        g.uniform(low, high, (3, 6)), g.standard_normal((4, 6)), low, high, g.standard_normal((3, 4)), 1e-6)
    g = rng("per_feature")
    low = g.uniform(-1, 0, 5)
    high = low + g.uniform(1, 2, 5)
    add(book, "per_feature", "a bound per input feature (arrays of shape (in_features,))",
        low + g.uniform(0, 1, (2, 5)) * (high - low), g.standard_normal((3, 5)), low, high,
        g.standard_normal((2, 3)), 1e-6)
    net = bundled("fmnist-mlp")
    if net is not None:
        x, idx = sample_inputs(net, rng("bundled_mlp"), 2)
        first = [i for i, layer in enumerate(net.layers) if isinstance(layer, Dense)][0]
        R_enter, _ = relevance_by_layer(net, x, Epsilon(0.25))[first]
        layer = net.layers[first]
        add(book, "bundled_mlp", f"the first layer of the bundled fmnist-mlp ({layer!r}) on test images "
            f"{idx.tolist()}", layer.a.copy(), layer.weight, float(net.input_low[0]), float(net.input_high[0]),
            R_enter, 1e-6, only_here="the smaller checks pass but this one does not: here there are 784 "
                                     "pixels, many of them exactly 0 (= low)")
