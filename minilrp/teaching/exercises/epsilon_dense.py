"""Exercise epsilon_dense: LRP-epsilon through a Dense layer (the student writes epsilon_dense)."""
from __future__ import annotations

import numpy as np

from ...explain.rules import Epsilon
from .shared import (NUMPY_ONLY, STABILISER_HINTS, bundled, dense, divide, random_mlp,
                     relevance_by_layer, sample_inputs, stabilise)

TITLE = "LRP-epsilon through a Dense layer"
FUNCTIONS = ["epsilon_dense"]
SUMMARY = "R_in = a * ((R / (z + eps*sign0(z))) @ W), z = a @ W.T + b"
POLICY = NUMPY_ONLY
HINTS = {**STABILISER_HINTS,
         "bias_ignored": "your denominator leaves the bias out: z_k = sum_j a_j w_kj + b_k "
                         "includes it (the bias absorbs its share of relevance)",
         "no_input_factor": "you returned (R / z) @ W without multiplying by the input a "
                            "(step 4 of the rule: R_in = a * c)",
         "weight_layout": "the weight is used transposed: minilrp stores it as PyTorch "
                          "does, weight[k, j] = (output k, input j), so z = a @ weight.T"}
USUAL_CAUSES = ["the sign convention of the stabiliser (z + eps * sign0(z), sign0(0) = +1)",
                "the bias left out of (or added twice to) the denominator",
                "the weight's layout: (out_features, in_features), z = a @ weight.T + bias",
                "forgetting the final multiplication by the input a"]
COMMON = dict(output="R_in", show_sums=True, shape_doc="like a: (N, in_features)",
              nan_hint="a division by zero: is every denominator stabilised (and where it is "
                       "exactly 0, is that output's relevance dropped)?")


def variant(a, W, b, R, eps, denom="sign0", bias=True, times_a=True, wT=False):
    """The rule written out, with the usual mistakes as options."""
    Wm = W.T if wT else W
    z = a @ Wm.T + (b if (bias and b is not None) else 0.0)
    c = divide(R, stabilise(z, eps, denom)) @ Wm
    return a * c if times_a else c


def mistakes(a, W, b, R, eps):
    v = {"stabiliser_sign": variant(a, W, b, R, eps, "minus"),
         "stabiliser_plus": variant(a, W, b, R, eps, "plus"),
         "missing_stabiliser": variant(a, W, b, R, eps, "none"),
         "np_sign": variant(a, W, b, R, eps, "npsign"),
         "bias_ignored": variant(a, W, b, R, eps, bias=False),
         "no_input_factor": variant(a, W, b, R, eps, times_a=False)}
    if W.shape[0] == W.shape[1]:
        v["weight_layout"] = variant(a, W, b, R, eps, wT=True)
    return v


def expected(a, W, b, R, eps):
    return Epsilon(eps).relevance(dense(W, b), a, R)[0]


def add(book, cid, title, a, W, b, R, eps, **extra):
    book.case(cid, title, "epsilon_dense", [("a", a), ("weight", W), ("bias", b), ("R", R), ("epsilon", eps)],
              expected(a, W, b, R, eps), mistakes(a, W, b, R, eps), **{**COMMON, **extra})


def chain(book, cid, title, net, x, eps, **extra):
    """The student's rule on every Dense layer of ``net``, from the output back."""
    by_layer = relevance_by_layer(net, x, Epsilon(eps))
    steps = []
    for i in reversed(range(len(net.layers))):
        layer = net.layers[i]
        if type(layer).__name__ != "Dense":
            continue
        R_enter, R_in = by_layer[i]
        a, W, b = layer.a, layer.weight, layer.bias
        steps.append((i, f"layer {i} {layer!r}", [("a", a), ("weight", W), ("bias", b), ("R", R_enter), ("epsilon", eps)],
                      R_in, mistakes(a, W, b, R_enter, eps)))
    book.chain(cid, title, "epsilon_dense", steps, **{**COMMON, **extra})


def committed(book):
    """The checks worked by hand (exercises/epsilon_dense.npz)."""
    W = np.array([[1.0, -1.0], [2.0, 1.0]])
    b = np.array([0.5, -1.0])
    a = np.array([[1.0, 2.0]])
    R = np.array([[1.0, 2.0]])
    add(book, "hand_lrp0", "LRP-0 (epsilon = 0) on a 2 -> 2 layer worked by hand", a, W, b, R, 0.0)
    add(book, "hand_epsilon", "epsilon = 0.25 on the same layer (one output has z < 0)", a, W, b, R, 0.25)
    add(book, "zero_z", "an output with z = 0 exactly, epsilon = 0.1: sign0(0) = +1", np.array([[1.0, 1.0]]),
        np.array([[1.0, -1.0], [1.0, 1.0]]), None, np.array([[1.0, 1.0]]), 0.1,
        nan_hint="a division by zero where z = 0 exactly: np.sign(0) = 0 leaves the denominator "
                 "at 0; minilrp's sign0 takes +1 there, so the denominator is eps")
    add(book, "zero_z_lrp0", "z = 0 exactly with epsilon = 0: that output's relevance is dropped",
        np.array([[1.0, 1.0]]), np.array([[1.0, -1.0], [1.0, 1.0]]), None, np.array([[1.0, 1.0]]), 0.0,
        nan_hint="a division by zero: with epsilon = 0 a denominator can be exactly 0; the "
                 "convention is to drop that output's relevance (it contributes 0), never NaN")


def fresh(book, rng):
    """Random layers and networks, drawn at check time: rng(case id) -> Generator."""
    g = rng("no_bias")
    add(book, "no_bias", "a random 6 -> 4 layer without bias (bias=None), epsilon = 0.1",
        g.uniform(0, 2, (3, 6)), g.standard_normal((4, 6)), None, g.standard_normal((3, 4)), 0.1)
    g = rng("random")
    add(book, "random", "a random 7 -> 5 layer, 3 examples, mixed signs, epsilon = 0.3",
        g.standard_normal((3, 7)), g.standard_normal((5, 7)), g.standard_normal(5), g.standard_normal((3, 5)), 0.3)
    g = rng("square")
    add(book, "square", "a random square 5 -> 5 layer (weight[k, j]: output k, input j), epsilon = 0.2",
        g.uniform(0, 1, (2, 5)), g.standard_normal((5, 5)), g.standard_normal(5) * 0.3, g.standard_normal((2, 5)), 0.2)
    g = rng("chain_random")
    chain(book, "chain_random", "a random 12-8-6-3 MLP: your rule on every Dense layer, from the "
          "output back", random_mlp(g), g.standard_normal((3, 12)), 0.25)
    net = bundled("fmnist-mlp")
    if net is not None:
        x, idx = sample_inputs(net, rng("bundled_mlp"), 2)
        chain(book, "bundled_mlp", f"the bundled fmnist-mlp on test images {idx.tolist()}, every Dense layer",
              net, x, 0.25, only_here="the smaller checks pass but the bundled model does not: look at "
                                      "what is larger here (784 inputs, several examples, many zero activations)")
