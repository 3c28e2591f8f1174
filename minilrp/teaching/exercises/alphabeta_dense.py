"""Exercise alphabeta_dense: LRP-alpha-beta (alpha - beta = 1) through a Dense layer."""
from __future__ import annotations

import numpy as np

from ...explain.rules import AlphaBeta
from .shared import (NUMPY_ONLY, STABILISER_HINTS, bundled, dense, divide, random_mlp,
                     relevance_by_layer, sample_inputs, stabilise)

TITLE = "LRP-alpha-beta (alpha - beta = 1) through a Dense layer"
FUNCTIONS = ["alphabeta_dense"]
SUMMARY = "R_in = alpha * R+ - beta * R-, positive and negative contributions normalised apart"
POLICY = NUMPY_ONLY
HINTS = {"alpha_plus_beta": "you *added* the negative part (alpha R+ + beta R-): that is the "
                            "convention in which alpha + beta = 1 and beta carries its own "
                            "sign. minilrp (like Zennit, iNNvestigate, Montavon et al.) uses "
                            "alpha - beta = 1 and subtracts: R = alpha R+ - beta R-",
         "alpha_beta_normalised": "your result is the right one divided by (alpha + beta): "
                                  "alpha and beta were rescaled to sum to 1; minilrp uses "
                                  "them as given, with alpha - beta = 1",
         "alpha_beta_swapped": "alpha and beta are swapped: alpha weighs the *positive* part R+ "
                               "and beta the negative part R- (R = alpha R+ - beta R-; with "
                               "alpha=2, beta=1 the positive evidence counts double)",
         "bias_not_split": "the whole bias went into both denominators: the positive part "
                           "b+ = max(b, 0) belongs to z+, the negative part b- = min(b, 0) to z-",
         "bias_ignored": "the biases are missing from the denominators: z+ includes "
                         "b+ = max(b, 0) and z- includes b- = min(b, 0)",
         "negative_inputs_ignored": "negative inputs are ignored: with a < 0, a- w- is a "
                                    "positive contribution (belongs to z+) and a- w+ a "
                                    "negative one (belongs to z-)",
         "full_denominator": "both parts were divided by the full z = sum a w + b: z+ and "
                             "z- are normalised separately",
         "stabiliser_sign": STABILISER_HINTS["stabiliser_sign"],
         "stabiliser_plus": STABILISER_HINTS["stabiliser_plus"]}
USUAL_CAUSES = ["the alpha/beta convention: R = alpha R+ - beta R-, alpha - beta = 1",
                "the bias: b+ into z+, b- into z-",
                "negative inputs: a- w- is positive, a- w+ negative",
                "z+ and z- normalised separately, each stabilised with eps * sign0"]
COMMON = dict(output="R_in", show_sums=True, shape_doc="like a: (N, in_features)",
              nan_hint="a division by zero: z+ or z- can be exactly 0 (e.g. no negative "
                       "weights); stabilise with eps * sign0, and drop where it is still 0")


def variant(a, W, b, R, alpha, beta, eps, combine="minus", bias="split", neg_inputs=True,
            denom="parts", stab="sign0"):
    """The rule written out, with the usual mistakes as options."""
    ap, an = np.maximum(a, 0), np.minimum(a, 0)
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    b0 = np.zeros(W.shape[0]) if b is None else b
    bp, bn = {"split": (np.maximum(b0, 0), np.minimum(b0, 0)), "whole": (b0, b0),
              "ignored": (0.0 * b0, 0.0 * b0)}[bias]
    P = ap @ Wp.T + (an @ Wn.T if neg_inputs else 0.0)
    Q = ap @ Wn.T + (an @ Wp.T if neg_inputs else 0.0)
    zp, zn = P + bp, Q + bn
    if denom == "full":
        zp = zn = a @ W.T + b0
    sp, sn = divide(R, stabilise(zp, eps, stab)), divide(R, stabilise(zn, eps, stab))
    Rp = ap * (sp @ Wp) + (an * (sp @ Wn) if neg_inputs else 0.0)
    Rn = ap * (sn @ Wn) + (an * (sn @ Wp) if neg_inputs else 0.0)
    if combine == "plus":
        return alpha * Rp + beta * Rn
    if combine == "swapped":
        return beta * Rp - alpha * Rn
    if combine == "normalised":
        return (alpha * Rp - beta * Rn) / (alpha + beta)
    return alpha * Rp - beta * Rn


def mistakes(a, W, b, R, alpha, beta, eps):
    args = (a, W, b, R, alpha, beta, eps)
    return {"alpha_plus_beta": variant(*args, combine="plus"),
            "alpha_beta_normalised": variant(*args, combine="normalised"),
            "alpha_beta_swapped": variant(*args, combine="swapped"),
            "bias_not_split": variant(*args, bias="whole"),
            "bias_ignored": variant(*args, bias="ignored"),
            "negative_inputs_ignored": variant(*args, neg_inputs=False),
            "full_denominator": variant(*args, denom="full"),
            "stabiliser_sign": variant(*args, stab="minus"),
            "stabiliser_plus": variant(*args, stab="plus")}


def expected(a, W, b, R, alpha, beta, eps):
    return AlphaBeta(alpha, beta, eps).relevance(dense(W, b), a, R)[0]


def _args(a, W, b, R, alpha, beta, eps):
    return [("a", a), ("weight", W), ("bias", b), ("R", R), ("alpha", alpha), ("beta", beta), ("epsilon", eps)]


def add(book, cid, title, a, W, b, R, alpha, beta, eps):
    book.case(cid, title, "alphabeta_dense", _args(a, W, b, R, alpha, beta, eps),
              expected(a, W, b, R, alpha, beta, eps), mistakes(a, W, b, R, alpha, beta, eps), **COMMON)


def chain(book, cid, title, net, x, alpha, beta, eps, **extra):
    by_layer = relevance_by_layer(net, x, AlphaBeta(alpha, beta, eps))
    steps = []
    for i in reversed(range(len(net.layers))):
        layer = net.layers[i]
        if type(layer).__name__ != "Dense":
            continue
        R_enter, R_in = by_layer[i]
        a, W, b = layer.a, layer.weight, layer.bias
        steps.append((i, f"layer {i} {layer!r}", _args(a, W, b, R_enter, alpha, beta, eps), R_in,
                      mistakes(a, W, b, R_enter, alpha, beta, eps)))
    book.chain(cid, title, "alphabeta_dense", steps, **{**COMMON, **extra})


def committed(book):
    a = np.array([[1.0, 2.0, 0.5]])
    W = np.array([[1.0, -1.0, 2.0], [-0.5, 1.0, -1.0]])
    b = np.array([0.5, -0.25])
    R = np.array([[1.0, 2.0]])
    add(book, "hand_a2b1", "alpha=2, beta=1 on a 3 -> 2 layer worked by hand", a, W, b, R, 2.0, 1.0, 1e-9)
    add(book, "hand_zplus", "alpha=1, beta=0 (the z+ rule)", a, W, b, R, 1.0, 0.0, 1e-9)


def fresh(book, rng):
    g = rng("negative_inputs")
    add(book, "negative_inputs", "inputs of both signs (a layer fed by normalised pixels), alpha=2, beta=1",
        g.standard_normal((3, 6)), g.standard_normal((4, 6)), g.standard_normal(4), g.standard_normal((3, 4)),
        2.0, 1.0, 1e-6)
    g = rng("random_a3b2")
    add(book, "random_a3b2", "a random 8 -> 5 layer after a ReLU, alpha=3, beta=2",
        g.uniform(0, 2, (2, 8)), g.standard_normal((5, 8)), g.standard_normal(5), g.standard_normal((2, 5)),
        3.0, 2.0, 1e-6)
    g = rng("no_bias")
    add(book, "no_bias", "no bias (bias=None), alpha=2, beta=1", g.uniform(0, 2, (2, 8)),
        g.standard_normal((5, 8)), None, g.standard_normal((2, 5)), 2.0, 1.0, 1e-6)
    g = rng("chain_random")
    chain(book, "chain_random", "a random 12-8-6-3 MLP, alpha=2 beta=1 on every Dense layer, from the "
          "output back", random_mlp(g), g.standard_normal((2, 12)), 2.0, 1.0, 1e-6)
    net = bundled("fmnist-mlp")
    if net is not None:
        x, idx = sample_inputs(net, rng("bundled_mlp"), 2)
        chain(book, "bundled_mlp", f"the bundled fmnist-mlp on test images {idx.tolist()}, every Dense layer",
              net, x, 2.0, 1.0, 1e-6)
