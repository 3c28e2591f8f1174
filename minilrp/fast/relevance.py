"""The fast path's driver: ``Network.relevance(..., fast=True)``.

The same loop as the reference in Network.relevance, with three differences: the forward
also computes the products the fast twins want (P = a w+ and Q = a w- from the same im2col
columns, while the layer's input is at hand); each layer runs its rule's twin from
fast/rules.py where there is one (else the rule itself, so a rule of your own works here
too); and what is worth keeping between calls (a preset's rule list, rule-modified weights,
window counts) lives in the network's own ``State``, never in a module.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from ..engine import kernels
from ..engine.layers import Dense
from ..explain.composites import get_composite
from ..explain.ledger import Ledger
from .rules import TWINS, product_weights

PRODUCT_BUDGET = 8 << 20  # bytes: the largest product the forward computes and keeps


class State:
    """What the fast path keeps for one network between calls (``net._fast``)."""

    def __init__(self):
        self.rules_key = self.rules = self.layers = None  # the last preset's rules and layers
        self.kept = {}  # id(layer) -> rule-modified weights and the weight they came from
        self.counts = {}  # geometry -> flat's channel of ones and window counts
        self.bounds = {}  # (z^B rule, channels, default range) -> per-channel bounds and limits

    def rules_for(self, net, composite, params):
        """The rule of every layer; a preset's list is kept for its name, parameters and
        layers (rules are immutable, and building one costs as much as a small layer's step)."""
        if not isinstance(composite, str):
            return get_composite(composite, **params).rules(net)
        key = (composite.lower(), tuple(sorted(params.items())), tuple(map(id, net.layers)))
        try:
            hash(key)
        except TypeError:  # unhashable parameters (array bounds): not kept
            return get_composite(composite, **params).rules(net)
        if key != self.rules_key:
            self.rules, self.rules_key = get_composite(composite, **params).rules(net), key
            self.layers = net.layers[:]  # keeps the layers alive, so their ids stay theirs
        return self.rules


def forward_with(layer, a, W):
    """layer.forward(a) (caching a, as it does) and a's product with the stacked weights W
    (k, Co, ...) from the same im2col columns: -> (output bit for bit as forward's, (N, k Co, ...))."""
    layer.a = a
    W2 = W.reshape(-1, math.prod(W.shape[2:]))
    if isinstance(layer, Dense):
        return layer.linear(a, layer.weight, layer.bias), a @ W2.T
    N, w = len(a), layer.weight
    out = np.empty((N, len(w)) + tuple(layer.output_shape(a.shape[1:])[1:]), a.dtype)
    prod = np.empty((N, len(W2)) + out.shape[2:], a.dtype)

    wb = kernels.with_bias(w, layer.bias)  # as kernels.conv2d: the bias on a row of ones

    def both(n0, m, cols):
        kernels.gemm_into(wb, cols, out.reshape(N, len(w), -1), n0, m)
        kernels.gemm_into(W2, cols[:W2.shape[1]], prod.reshape(N, len(W2), -1), n0, m)
    kernels.conv_chunks(a, layer.kernel_size, layer.stride, layer.padding, both, ones=layer.bias is not None)
    return out, prod


def forward(net, x, rules, ctx):
    """net.forward(x) for a checked input x, also computing the products the twins ask for
    where they are small (they are kept until the rule runs). -> logits, {layer index: product}."""
    a = x
    products = {}
    for i, (layer, rule) in enumerate(zip(net.layers, rules)):
        W = None if rule is None else product_weights(rule, layer, a, ctx)
        if W is not None and len(W) * a.itemsize * len(a) * math.prod(net.shapes[i + 1]) <= PRODUCT_BUDGET:
            a, products[i] = forward_with(layer, a, W)
        else:
            a = layer.forward(a)
    net._forward_thread = threading.get_ident()  # the caches are this thread's (Network.backward)
    return net.check_logits(a), products


def relevance(net, x, composite, params, target, start, keep):
    """Network.relevance with fast=True, for one chunk (see there). -> (R, ledger, targets)."""
    state = net.__dict__.setdefault("_fast", State())
    rules = state.rules_for(net, composite, params)
    call = object()  # marks this call: kept weights are compared with the weight once per call
    base = {"state": state, "call": call}
    logits, products = forward(net, x, rules, base)
    targets = net.targets(target, logits)
    R = net.initial_relevance(logits, targets, start)
    ledger = Ledger()
    for i in reversed(range(len(net.layers))):
        layer, rule = net.layers[i], rules[i]
        a = layer.a
        if rule is None:  # ReLU passes relevance on, Flatten reshapes it
            R_in, shares = R.reshape(a.shape), {}
        else:
            ctx = net.context(i)
            twin = TWINS.get(type(rule))  # exactly the rule a twin was proven equal to
            z = net.layers[i + 1].a if i + 1 < len(net.layers) else logits
            out = None if twin is None else twin(rule, layer, a, R, {**base, **ctx, "z": z, "PQ": products.pop(i, None)})
            R_in, shares = out if out is not None else rule.relevance(layer, a, R, ctx)
        ledger.add(i, layer, rule, R, R_in, shares, keep)
        R = R_in
    return R, ledger, targets
