"""Pieces the exercises share: minilrp's reference outputs, the formulas' building blocks (and
their usual mistakes), random layers and networks, the bundled models and sample images.

The expected outputs of every check come from minilrp's readable reference path: per layer
the rule objects themselves (``Epsilon(eps).relevance(layer, a, R)``), for a whole network
:func:`reference_relevance`, the one place the exercises run network-level LRP.
"""
from __future__ import annotations

import numpy as np

from ...engine.layers import Dense, ReLU
from ...engine.network import Network
from ...explain.composites import Composite
from ...explain.rules import Rule, ZBox
from ...models.data import available_models, load_model, load_samples


# ======================================================================================
# minilrp's reference outputs
# ======================================================================================
def reference_relevance(net, x, composite, target=None):
    """LRP through the whole network on minilrp's reference path, every layer's relevance
    kept: -> (R at the input, the ledger's rows in backward order, each with "relevance").
    composite: a Rule (on every linear layer), a preset name or a Composite."""
    if isinstance(composite, Rule):
        composite = Composite("exercise", default=composite)
    R = net.relevance(x, composite, target=target, keep=True, fast=False)
    return R, net.ledger.rows


def relevance_by_layer(net, x, rule):
    """{layer index: (relevance entering the layer from above, relevance leaving to its
    input)} for LRP with ``rule`` on every linear layer, target = the predicted class,
    initial relevance = the target logit."""
    _, rows = reference_relevance(net, x, rule)
    logits = net.forward(x)
    t = logits.argmax(1)
    R = np.zeros_like(logits)
    R[np.arange(len(x)), t] = logits[np.arange(len(x)), t]
    out = {}
    for row in rows:  # backward order
        out[row["index"]] = (R, row["relevance"])
        R = row["relevance"]
    return out


def dense(W, b=None):
    """A float64 Dense layer holding W (out, in) and b (out,) or no bias."""
    return Dense(W.shape[1], W.shape[0], weight=W, bias=b, use_bias=b is not None).astype(np.float64)


def zbox_reference(layer, x, low, high, R, epsilon):
    """z^B relevance of ``layer``'s input x with explicit bounds (floats or arrays
    broadcastable to x)."""
    lo = np.ascontiguousarray(np.broadcast_to(np.asarray(low, dtype=np.float64), x.shape))
    hi = np.ascontiguousarray(np.broadcast_to(np.asarray(high, dtype=np.float64), x.shape))
    return ZBox(low=lo, high=hi, epsilon=epsilon).relevance(layer, x, R)[0]


# ======================================================================================
# The formulas' pieces, and their usual mistakes
# ======================================================================================
def sign0(z):
    return np.where(z >= 0, 1.0, -1.0)


def stabilise(z, eps, how="sign0"):
    """The stabilised denominator, the right way (sign0) and the usual wrong ones."""
    return {"sign0": lambda: z + eps * sign0(z),
            "minus": lambda: z - eps * sign0(z),
            "plus": lambda: z + eps,
            "none": lambda: z,
            "npsign": lambda: z + eps * np.sign(z)}[how]()


def divide(R, d):
    """R / d, 0 where d == 0 (the convention: that relevance is dropped)."""
    s = np.zeros_like(R)
    np.divide(R, d, out=s, where=d != 0)
    return s


STABILISER_HINTS = {
    "stabiliser_sign": "the stabiliser has the wrong sign: the denominator must move *away* from "
                       "zero, z + eps * sign0(z) (for negative z that is z - eps), not z - eps * sign(z)",
    "stabiliser_plus": "you added +eps whatever the sign of z: for negative z that pulls the "
                       "denominator towards zero (and can flip its sign); use z + eps * sign0(z)",
    "missing_stabiliser": "the result is what you get with no stabiliser at all (R / z): add eps "
                          "* sign0(z) to the denominator",
    "np_sign": "where z is exactly 0, np.sign(z) is 0, so the stabiliser vanishes there; minilrp's "
               "sign0 takes +1 at 0: sign0(z) = np.where(z >= 0, 1.0, -1.0)",
}

NUMPY_ONLY = {"allowed": "NumPy and Python's standard library (no part of minilrp)",
              "hint": "write it yourself from the formula in the skeleton"}


# ======================================================================================
# Random layers and networks, bundled models, sample images
# ======================================================================================
def random_mlp(rng, sizes=(12, 8, 6, 3)):
    """A float64 ReLU MLP with the given layer sizes, weights ~ N(0, 0.5^2), biases ~ N(0, 0.3^2)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        scale = 1.0 if i == len(sizes) - 2 else 0.5
        layers.append(Dense(n_in, n_out, weight=rng.standard_normal((n_out, n_in)) * scale,
                            bias=rng.standard_normal(n_out) * 0.3))
        layers.append(ReLU())
    return Network(layers[:-1], (sizes[0],), name=f"random-mlp-{'-'.join(map(str, sizes))}").astype(np.float64)


def bundled(name):
    """A bundled model in float64, or None when it is not installed."""
    return load_model(name).astype(np.float64) if name in available_models() else None


def sample_inputs(net, rng, n):
    """n bundled test images drawn at random (without replacement), preprocessed, float64;
    -> (x, their indices)."""
    images, _, _ = load_samples()
    idx = np.sort(rng.choice(len(images), n, replace=False))
    return net.preprocess(images[idx]).astype(np.float64), idx
