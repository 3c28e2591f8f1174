"""Sanity checks: does a heatmap depend on the model, on the class it explains, and not on what
the model ignores? And where does the explained score go?

    mprt(net, x, methods)              model-parameter randomisation (Adebayo et al. 2018): the
                                       weights re-drawn layer by layer from the top, cascading or
                                       one layer alone; how similar does each map stay?
    random_logit(net, x, methods)      explain a random other class (Sixt et al. 2020): how
                                       similar is that map to the original one?
    input_invariance(net, x, methods)  x + c into a network whose first bias absorbs the shift,
                                       b' = b - W c (Kindermans et al. 2017): the same function;
                                       does the map change?
    conservation(net, x, methods)      sum of an attribution against the score it explains, and
                                       per layer from the LRP ledger (bias, stabiliser, dropped)

``methods`` are names ("sa", "gradient", "gradient_x_input", "smoothgrad",
"integrated_gradients", "input", or any LRP preset such as "EpsilonGammaBox"), Composite or Rule
objects, or :class:`Method` objects (any ``explain(net, x, target)``). Maps are compared per
image after summing channels, (N, H, W), with :func:`similarity.compare` (Spearman signed and
of |.|, SSIM of |.|, top-k intersection of |.|). The target is resolved once on the original
model (None = its predicted class) and kept for every randomised copy.

Randomness is keyed by (seed, purpose, layer index) for weights and (seed, purpose, image index)
for random classes and SmoothGrad's noise: results do not depend on the batch size or on which
other images are run (SmoothGrad sees the same noise for the original and every randomised
model: common random numbers).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import MinilrpError
from ..engine.layers import Conv2d, Dense, Flatten
from ..engine.network import Network
from ..explain import sensitivity
from ..explain.composites import Composite, get_composite
from ..explain.rules import Rule
from . import perturbation as P
from .similarity import DEFAULT_TOPK, MEASURES, compare

# stream tags of the seeded generators (one stream per purpose and layer / image)
_RANDOMIZE, _LOGIT = 11, 12
DEFAULT_CHUNK = 256  # images per explanation call for deterministic methods: bounds memory


# ============================================================================== methods

@dataclass(frozen=True)
class Method:
    """An explanation method under test.

    name: its label in reports; explain: (net, x (N, C, H, W), target (N,) ints) -> maps shaped
    like x or (N, H, W); sums_to: the score an attribution's sum should equal ("f(x)" for LRP
    started at the logit, "f(x) - f(x0)" for Integrated Gradients), None for maps that are not
    attributions (SA, gradients); stochastic: the map depends on seeded noise keyed by the
    image's index in x (explained in one call, so the index is the image's own); composite: the LRP composite (its ledger, its rules)."""

    name: str
    explain: Callable
    sums_to: str | None = None
    stochastic: bool = False
    composite: object = field(default=None, compare=False)

    def maps(self, net, x, target, chunk=DEFAULT_CHUNK) -> np.ndarray:
        """This method's maps of x (N, ...) for targets (N,), channels summed: (N, H, W)."""
        step = len(x) if self.stochastic else chunk
        out = [channel_sum(self.explain(net, x[i:i + step], target[i:i + step]))
               for i in range(0, len(x), step)]
        return np.concatenate(out)


def channel_sum(maps) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) (relevance adds up over channels); other shapes pass."""
    m = np.asarray(maps, dtype=np.float64)
    return m.sum(axis=1) if m.ndim == 4 else m


def _lrp(composite, label):
    return Method(f"LRP {label}", lambda net, x, t: net.relevance(x, composite, target=t),
                  sums_to="f(x)", composite=composite)


GRADIENT_METHODS = {
    "sa": Method("SA", lambda net, x, t: sensitivity.sa(net, x, t)),
    "gradient": Method("Gradient", lambda net, x, t: sensitivity.gradient(net, x, t)),
    "gradient_x_input": Method("Gradient x Input", lambda net, x, t: sensitivity.gradient_x_input(net, x, t),
                               sums_to="f(x)"),
    "smoothgrad": Method("SmoothGrad", lambda net, x, t: sensitivity.smoothgrad(net, x, t), stochastic=True),
    "integrated_gradients": Method("Integrated Gradients",
                                   lambda net, x, t: sensitivity.integrated_gradients(net, x, t),
                                   sums_to="f(x) - f(x0)"),
    # a control that ignores the model: the input itself as a "heatmap"; every sanity check
    # should flag it
    "input": Method("Input (control)", lambda net, x, t: np.array(x, dtype=np.float64)),
}


def method(spec) -> Method:
    """A :class:`Method` from a name (:data:`GRADIENT_METHODS` or an LRP preset, any case), a
    Composite, a Rule, or a Method (returned as is)."""
    if isinstance(spec, Method):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_").replace(" ", "_")
        if key in GRADIENT_METHODS:
            return GRADIENT_METHODS[key]
        try:
            composite = get_composite(spec.strip())
        except MinilrpError:
            raise MinilrpError(f"unknown method {spec!r}; methods: {', '.join(GRADIENT_METHODS)} "
                               "or an LRP preset (minilrp.PRESETS)") from None
        return _lrp(composite.name, composite.name)
    if isinstance(spec, (Composite, Rule)):
        composite = get_composite(spec)
        return _lrp(composite, composite.name)
    raise MinilrpError(f"a method is a name, a Composite, a Rule or a Method, got {spec!r}")


def methods_from(specs) -> list:
    out = [method(s) for s in specs]
    if not out:
        raise MinilrpError("no method to check")
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise MinilrpError(f"methods listed twice: {sorted({n for n in names if names.count(n) > 1})}")
    return out


def _setup(net, x, methods, target, chunk):
    if not isinstance(net, Network):
        raise MinilrpError(f"the sanity checks need a minilrp Network, got {type(net).__name__}")
    x = net.check_input(x)
    chunk = P._int(chunk, "chunk")
    t = net.targets(target, P.forward_batched(net, x, chunk))
    return x, t, methods_from(methods), chunk


# ============================================================================== randomisation

def parameter_layers(net) -> list:
    """Indices of the layers with weights (Dense, Conv2d), input side first."""
    return [i for i, layer in enumerate(net.layers) if isinstance(layer, (Dense, Conv2d))]


def layer_label(net, i) -> str:
    return f"{i} {net.layers[i].describe()}"


def copy_network(net) -> Network:
    """An independent copy: deep copies of the layers (weights, biases) with empty forward caches,
    in a new Network built by its public constructor, so that whatever else a network keeps
    (scratch buffers, a guard against use from two threads) is its own."""
    layers = copy.deepcopy(net.layers)
    for layer in layers:
        layer.clear()
    twin = Network(layers, net.input_shape, net.classes, net.name, net.mean, net.std,
                   (net.input_low, net.input_high), net.provenance)
    return twin.astype(net.dtype)


def randomized(net, layers, seed=0) -> Network:
    """A copy of ``net`` whose layers ``layers`` (indices) have new weights and biases, each
    drawn uniformly from [-1/sqrt(fan_in), 1/sqrt(fan_in)] (PyTorch's default initialisation,
    the re-initialisation Quantus' MPRT applies), fan_in = inputs per output unit. Layer i's
    draw comes from the stream (seed, layer i): the same whatever else is randomised."""
    seed = P._check_seed(seed)
    twin = copy_network(net)
    for i in layers:
        if i not in parameter_layers(net):
            raise MinilrpError(f"layer {i} has no weights to randomise (layers with weights: "
                               f"{parameter_layers(net)})")
        layer = twin.layers[i]
        w = layer.weight
        bound = 1.0 / np.sqrt(w[0].size)
        rng = np.random.default_rng([seed, _RANDOMIZE, i])
        layer.weight = rng.uniform(-bound, bound, w.shape).astype(twin.dtype)
        if layer.bias is not None:
            layer.bias = rng.uniform(-bound, bound, layer.bias.shape).astype(twin.dtype)
    return twin


def randomization_steps(net, order="cascading") -> list:
    """The layer sets of each step, top layer first: "cascading" = the top k parameter layers
    (k = 1, 2, ..., all: Adebayo et al.'s cascading randomisation); "independent" = each
    parameter layer alone. -> [(layer index of the step, tuple of randomised layers)]."""
    top_down = parameter_layers(net)[::-1]
    if order == "cascading":
        return [(i, tuple(top_down[:k + 1])) for k, i in enumerate(top_down)]
    if order == "independent":
        return [(i, (i,)) for i in top_down]
    raise MinilrpError(f"order must be 'cascading' or 'independent', got {order!r}")


@dataclass
class Randomisation:
    """What :func:`mprt` measured. steps: [(layer index, randomised layers)], top first;
    similarity[method][measure]: (S, N), step s against the original map; chance[method][measure]:
    (N,), image n's original map against image n+1's (what "unrelated" looks like for that
    method on these images); maps[method]: (S + 1, n_keep, H, W), the original then each step's
    maps of the first ``keep`` images; targets (N,)."""

    order: str
    steps: list
    labels: list
    targets: np.ndarray
    similarity: dict
    chance: dict
    maps: dict


def mprt(net, x, methods, order="cascading", *, target=None, seed=0, k=DEFAULT_TOPK, keep=0,
         chunk=DEFAULT_CHUNK, originals=None, progress=None) -> Randomisation:
    """Model-parameter randomisation test (Adebayo et al. 2018) of every method on images x
    (N, C, H, W): for each step of :func:`randomization_steps` (top layer first), the maps of
    the randomised copy (:func:`randomized`, seed) against the original maps, per image and
    measure (:func:`similarity.compare`, top-k share k). A method whose maps stay similar while
    the model's weights are replaced by noise does not explain the model.

    originals: {method name: (N, H, W)} maps of the original model, if already computed;
    progress: optional callable(label) after each step."""
    x, t, methods, chunk = _setup(net, x, methods, target, chunk)
    steps = randomization_steps(net, order)
    if originals is None:
        originals = {m.name: m.maps(net, x, t, chunk) for m in methods}
    sim = {m.name: {s: np.empty((len(steps), len(x))) for s in MEASURES} for m in methods}
    maps = {m.name: [originals[m.name][:keep]] for m in methods}
    for si, (i, layers) in enumerate(steps):
        twin = randomized(net, layers, seed)
        for m in methods:
            a = m.maps(twin, x, t, chunk)
            for s, v in compare(originals[m.name], a, k).items():
                sim[m.name][s][si] = v
            maps[m.name].append(a[:keep])
        if progress is not None:
            progress(f"{order}: layer {layer_label(net, i)}")
    chance = {m.name: _chance(originals[m.name], k) for m in methods}
    return Randomisation(order, steps, [layer_label(net, i) for i, _ in steps], t, sim, chance,
                         {n: np.stack(v) for n, v in maps.items()})


def _chance(original, k):
    """Image n's map against image n+1's (cyclically): the similarity of unrelated maps of the
    same method on these images. NaN for a single image."""
    if len(original) < 2:
        return {s: np.full(len(original), np.nan) for s in MEASURES}
    return compare(original, np.roll(original, -1, axis=0), k)


# ============================================================================== random logit

def off_targets(targets, n_classes, seed=0) -> np.ndarray:
    """For each image n, a class drawn uniformly from the classes other than targets[n], from
    the stream (seed, image n). (N,) -> (N,)."""
    seed = P._check_seed(seed)
    out = np.empty(len(targets), np.int64)
    for n, t in enumerate(np.asarray(targets)):
        r = int(np.random.default_rng([seed, _LOGIT, n]).integers(n_classes - 1))
        out[n] = r + (r >= t)
    return out


def random_logit(net, x, methods, *, target=None, seed=0, others=None, k=DEFAULT_TOPK,
                 chunk=DEFAULT_CHUNK, originals=None) -> dict:
    """Random-logit test (Sixt et al. 2020): each image's map for a random other class
    (:func:`off_targets`; or ``others`` (N,) given) against its map for the target.
    -> {"targets", "others", "similarity": {method: {measure: (N,)}}}. A method whose map barely
    changes with the class explains the image, not the class."""
    x, t, methods, chunk = _setup(net, x, methods, target, chunk)
    if net.n_classes < 2:
        raise MinilrpError("the random-logit test needs a model with at least 2 classes")
    o = off_targets(t, net.n_classes, seed) if others is None else net.targets(others, np.zeros((len(x), net.n_classes)))
    if np.any(o == t):
        raise MinilrpError("a random-logit class equals the explained class")
    sim = {}
    for m in methods:
        a = originals[m.name] if originals is not None else m.maps(net, x, t, chunk)
        sim[m.name] = compare(a, m.maps(net, x, o, chunk), k)
    return {"targets": t, "others": o, "similarity": sim}


# ============================================================================== input invariance

def explicit_padding(net) -> tuple:
    """The same function with the first layer's zero padding made part of the input: when the
    first linear layer is a Conv2d with padding p, a copy whose input is the image padded by p
    pixels of 0 on each side and whose first conv has padding 0 (the other layers shared by
    copy). A constant shift then reaches the padding too, as it must for b' = b - W c to be
    exact at the border. -> (network, p); p = 0 returns a plain copy."""
    i = _first_linear(net)
    layer = net.layers[i]
    p = layer.padding if isinstance(layer, Conv2d) else 0
    twin = copy_network(net)
    if p == 0:
        return twin, 0
    twin.layers[i] = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, 0,
                            weight=layer.weight.copy(),
                            bias=None if layer.bias is None else layer.bias.copy(),
                            use_bias=layer.bias is not None)
    C, H, W = net.input_shape
    padded = Network(twin.layers, (C, H + 2 * p, W + 2 * p), twin.classes, twin.name, twin.mean,
                     twin.std, (twin.input_low, twin.input_high), twin.provenance)
    return padded.astype(net.dtype), p


def _first_linear(net):
    for i, layer in enumerate(net.layers):
        if isinstance(layer, (Dense, Conv2d)):
            return i
        if not isinstance(layer, Flatten):
            break
    raise MinilrpError("input invariance needs a network that starts with a Dense or Conv2d layer "
                       f"(after an optional Flatten); this one starts with {net.layers[0]!r}")


def shifted_network(net, shift) -> Network:
    """Kindermans et al. (2017)'s compensated network: a copy whose first linear layer's bias is
    b' = b - W c (c = ``shift`` added to every input value), so g(x + c) = f(x) exactly; its
    valid input range (the z^B bounds) moves by c. The first layer must not pad (see
    :func:`explicit_padding`): zero padding does not move with the input."""
    c = float(shift)
    if not np.isfinite(c):
        raise MinilrpError(f"the input shift must be a finite number, got {shift!r}")
    i = _first_linear(net)
    layer = net.layers[i]
    if isinstance(layer, Conv2d) and layer.padding:
        raise MinilrpError("the first conv pads with zeros, which a shift of the input does not "
                           "move: use explicit_padding(net) first")
    twin = copy_network(net)
    first = twin.layers[i]
    w = first.weight.astype(np.float64)
    Wc = c * w.reshape(w.shape[0], -1).sum(axis=1)  # W applied to a constant c, per output unit
    b = np.zeros(w.shape[0]) if first.bias is None else first.bias.astype(np.float64)
    if first.bias is None:  # the compensation needs a bias: add one
        if isinstance(first, Conv2d):
            twin.layers[i] = first = Conv2d(first.in_channels, first.out_channels, first.kernel_size,
                                            first.stride, first.padding, weight=first.weight.copy())
        else:
            twin.layers[i] = first = Dense(first.in_features, first.out_features, weight=first.weight.copy())
    first.bias = (b - Wc).astype(twin.dtype)
    moved = Network(twin.layers, twin.input_shape, twin.classes, twin.name,
                    twin.mean - c * twin.std, twin.std, (twin.input_low + c, twin.input_high + c),
                    twin.provenance)
    return moved.astype(net.dtype)


def input_invariance(net, x, methods, shift=-1.0, *, target=None, tol=1e-6, k=DEFAULT_TOPK,
                     chunk=DEFAULT_CHUNK, dtype="float64") -> dict:
    """Input invariance (Kindermans et al. 2017): every map of x against the map of x + c
    (c = ``shift``) in :func:`shifted_network`, which computes the same logits. Computed in
    ``dtype`` (float64: the two logits agree to ~1e-13, so any change is the method's).
    The first conv's padding is made explicit first (:func:`explicit_padding`) and the maps are
    compared on the image pixels.

    -> {"shift", "padding", "logit_change": (N,) max |g(x + c) - f(x)| over classes,
        "difference": {method: (N,)} max |A' - A| / max |A| per image (max |A'| where A = 0),
        "invariant": {method: (N,) bool, difference <= tol},
        "similarity": {method: {measure: (N,)}}, "targets"}."""
    x, t, methods, chunk = _setup(net, x, methods, target, chunk)
    base = copy_network(net).astype(dtype)
    padded, p = explicit_padding(base)
    moved = shifted_network(padded, shift)
    x0 = np.pad(x.astype(padded.dtype), ((0, 0), (0, 0), (p, p), (p, p))) if p else x.astype(padded.dtype)
    x1 = x0 + np.asarray(shift, padded.dtype)
    f = P.forward_batched(base, x.astype(base.dtype), chunk)
    logit_change = np.abs(P.forward_batched(moved, x1, chunk) - f).max(axis=1)
    inner = (Ellipsis, slice(p, -p), slice(p, -p)) if p else (Ellipsis,)
    out = {"shift": float(shift), "padding": p, "logit_change": logit_change, "targets": t,
           "difference": {}, "invariant": {}, "similarity": {}}
    for m in methods:
        a0 = m.maps(padded, x0, t, chunk)[inner]
        a1 = m.maps(moved, x1, t, chunk)[inner]
        scale = np.abs(a0).reshape(len(a0), -1).max(axis=1)
        diff = np.abs(a1 - a0).reshape(len(a0), -1).max(axis=1)
        out["difference"][m.name] = np.where(scale > 0, diff / np.where(scale > 0, scale, 1), diff)
        out["invariant"][m.name] = out["difference"][m.name] <= tol
        out["similarity"][m.name] = compare(a0, a1, k)
    return out


# ============================================================================== conservation

def conservation(net, x, methods, *, target=None, chunk=DEFAULT_CHUNK) -> dict:
    """Where the explained score goes, per method that is an attribution (``sums_to`` not None):

    {method: {"score": (N,) the score the sum should equal (f(x), or f(x) - f(x0) for
              Integrated Gradients), "total": (N,) the map's sum,
              "layers": [per LRP layer, backward order: {"index", "layer", "rule",
                         "entering", "leaving", "bias", "stabiliser", "dropped", "residual"}
                         each (N,)]  (LRP only, from net.ledger)}}

    LRP started at the target logit conserves it except for what biases, stabilisers and
    dropped units absorb (the ledger's columns; "residual" is what no column explains, ~0).
    Methods that are not attributions (SA, gradients) are left out."""
    x, t, methods, chunk = _setup(net, x, methods, target, chunk)
    logits = P.forward_batched(net, x, chunk)
    f = logits[np.arange(len(x)), t].astype(np.float64)
    out = {}
    for m in methods:
        if m.sums_to is None:
            continue
        score = f
        if m.sums_to == "f(x) - f(x0)":  # Integrated Gradients from the lower end of the range
            low = net.input_low.reshape((-1,) + (1,) * (x.ndim - 2)) if x.ndim == 4 else net.input_low[0]
            x0 = np.broadcast_to(low, x.shape).astype(x.dtype)
            score = f - P.forward_batched(net, x0, chunk)[np.arange(len(x)), t]
        rows = []
        totals = []
        step = len(x) if m.stochastic else chunk
        for i in range(0, len(x), step):
            a = m.explain(net, x[i:i + step], t[i:i + step])
            totals.append(np.asarray(a, np.float64).reshape(len(a), -1).sum(axis=1))
            if m.composite is not None:
                rows.append((net.ledger.rows, net.ledger.residual()))
        entry = {"score": score, "total": np.concatenate(totals)}
        if rows:
            entry["layers"] = [
                {"index": r0["index"], "layer": r0["layer"], "rule": r0["rule"],
                 **{key: np.concatenate([np.asarray(rs[j][key], np.float64) for rs, _ in rows])
                    for key in ("entering", "leaving", "bias", "stabiliser", "dropped")},
                 "residual": np.concatenate([res[j] for _, res in rows])}
                for j, r0 in enumerate(rows[0][0])]
        out[m.name] = entry
    return out


# ============================================================================== summaries

def interval(values) -> dict:
    """Mean and 95% interval over the finite values (perturbation.summarize), with the count of
    undefined ones (e.g. Spearman of a constant map): {"mean", "se", "low", "high", "n",
    "undefined"}; all NaN when no value is finite."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = np.isfinite(v)
    if not ok.any():
        return {"mean": np.nan, "se": np.nan, "low": np.nan, "high": np.nan, "n": 0,
                "undefined": int(v.size)}
    s = P.summarize(v[ok])
    if s["n"] < 2:  # one value: no interval
        s["low"] = s["high"] = s["mean"]
    return {**s, "undefined": int((~ok).sum())}


def similarity_verdict(summary, threshold=0.5) -> str:
    """"changed" when the 95% interval of the mean similarity lies below ``threshold``,
    "unchanged" when it lies above, "inconclusive" otherwise (or when undefined)."""
    if not np.isfinite(summary["mean"]):
        return "inconclusive"
    if summary["high"] < threshold:
        return "changed"
    if summary["low"] > threshold:
        return "unchanged"
    return "inconclusive"
