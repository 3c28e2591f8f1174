#!/usr/bin/env python
"""Regenerate the committed reference files of the course exercises.

    .venv/bin/python tools/make_exercise_references.py              # every exercise
    .venv/bin/python tools/make_exercise_references.py sa aopc      # some
    .venv/bin/python tools/make_exercise_references.py --check      # compare, write nothing

Writes ``minilrp/teaching/exercises/<name>.npz`` (float64 arrays, ``allow_pickle=False``): a JSON
record ``meta`` (uint8 bytes) naming every check of the exercise, its arguments, the right
output and the outputs of typical mistakes, plus the arrays themselves. The right outputs come
from minilrp's own implementations (``minilrp.rules``, ``minilrp.kernels``,
``minilrp.sensitivity``, ``minilrp.perturbation``); the mistakes are written out below, one
small function per wrong convention, so that ``python -m minilrp.check`` can name the mistake
a student made. A mistake whose output equals the right one on a check (it makes no
difference there) is not stored for that check.

Checks on a bundled model (``weights/fmnist-*.npz``) store the model's name and a fingerprint
of its parameters, never the weights: when the bundled models are retrained, rerun this tool
(``tests/test_check.py`` fails until then). Models that are not installed are left out, with
a note.

To add an exercise: write its skeleton ``minilrp/teaching/exercises/skeletons/<name>.py``, a builder
function here (see ``build_epsilon_dense``), add it to ``BUILDERS``, run this tool, and add a
reference solution and broken variants to ``tests/`` (see docs/instructors.md).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from minilrp import kernels, perturbation, sensitivity  # noqa: E402
from minilrp.teaching.checker import META_FORMAT, fingerprint  # noqa: E402
from minilrp import Composite  # noqa: E402
from minilrp import available_models, load_model, load_samples  # noqa: E402
from minilrp.models.io import architecture  # noqa: E402
from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU  # noqa: E402
from minilrp import Network  # noqa: E402
from minilrp import AlphaBeta, Epsilon, WinnerTakeAll, ZBox  # noqa: E402

OUT = REPO / "minilrp" / "teaching" / "exercises"
MISTAKE_RTOL = 1e-6  # a mistake this close to the right answer is no mistake on that check
BUNDLED_MISTAKES_MAX = 600  # store mistakes for bundled checks only when this small


# ======================================================================================
# The file being built
# ======================================================================================
class Ref:
    def __init__(self, name, title, functions, summary, hints, usual_causes):
        self.name = name
        self.meta = {"format": META_FORMAT, "exercise": name, "title": title,
                     "functions": functions, "summary": summary, "hints": hints,
                     "usual_causes": usual_causes, "cases": []}
        self.arrays = {}

    def put(self, key, value):
        a = np.asarray(value)
        if a.dtype.kind == "f":
            a = a.astype(np.float64)
        elif a.dtype.kind in "iu":
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{key}: unsupported dtype {a.dtype}")
        if key in self.arrays:
            raise KeyError(f"duplicate array {key}")
        self.arrays[key] = np.ascontiguousarray(a)
        return key

    def mistakes(self, cid, expected, variants):
        """Store the variants that differ from ``expected``; returns {mistake: key}."""
        out = {}
        for m, v in variants.items():
            if m not in self.meta["hints"]:
                raise KeyError(f"{self.name}: mistake {m!r} has no hint")
            v = np.asarray(v, dtype=np.float64)
            if v.shape != expected.shape or not np.all(np.isfinite(v)):
                continue
            scale = np.max(np.abs(expected)) if expected.size else 1.0
            if np.allclose(v, expected, rtol=MISTAKE_RTOL, atol=1e-8 * scale):
                continue
            out[m] = self.put(f"{cid}.mistake.{m}", v)
        return out

    def case(self, cid, title, function, args, expected, variants=None, net=None, **extra):
        """args: list of (name, value): arrays are stored, ("tuple", t), ("param", (i, name)),
        ("net",) are references, anything else a JSON value."""
        spec_args = []
        for name, v in args:
            if isinstance(v, np.ndarray):
                spec_args.append({"name": name, "array": self.put(f"{cid}.{name}", v)})
            elif isinstance(v, tuple) and v and v[0] == "tuple":
                spec_args.append({"name": name, "tuple": list(v[1])})
            elif isinstance(v, tuple) and v and v[0] == "param":
                spec_args.append({"name": name, "param": list(v[1])})
            elif isinstance(v, tuple) and v and v[0] == "net":
                spec_args.append({"name": name, "net": True})
            else:
                spec_args.append({"name": name, "value": v})
        expected = np.asarray(expected, dtype=np.float64)
        case = {"id": cid, "title": title, "kind": "call", "function": function, "args": spec_args,
                "expected": self.put(f"{cid}.expected", expected),
                "mistakes": self.mistakes(cid, expected, variants or {})}
        if net is not None:
            case["net"] = self.net_spec(cid, net)
        case.update(extra)
        self.meta["cases"].append(case)
        return case

    def net_spec(self, cid, net):
        if getattr(net, "_bundled", None):
            return {"bundled": net._bundled, "sha256": net._sha256}
        prefix = f"{cid}.net"
        record = json.dumps(architecture(net)).encode("utf-8")
        self.arrays[f"{prefix}.architecture"] = np.frombuffer(record, dtype=np.uint8).copy()
        for i, layer in enumerate(net.layers):
            for k, v in layer.params().items():
                self.put(f"{prefix}.layers.{i}.{k}", v)
        return {"arrays": prefix}

    def chain(self, cid, title, function, net, x, rows, layer_type, scalars, variants_fn, **extra):
        """The student's Dense rule on every layer of ``layer_type``, from the output back.
        rows: from relevance_with_entering(net, x, rule); variants_fn(a, W, b, R) ->
        {mistake: R_in} for one layer."""
        rows = {r["index"]: r for r in rows}
        layers = {}
        for i, layer in enumerate(net.layers):
            if type(layer).__name__ != layer_type:
                continue
            expected = rows[i]["relevance"]
            key = self.put(f"{cid}.layer{i}.expected", expected)
            entry = {"expected": key, "mistakes": {}}
            if expected.size <= BUNDLED_MISTAKES_MAX or not getattr(net, "_bundled", None):
                R_out = rows[i]["entering_R"]
                variants = variants_fn(layer.a, layer.weight, layer.bias, R_out)
                entry["mistakes"] = self.mistakes(f"{cid}.layer{i}", expected, variants)
            layers[str(i)] = entry
        args = [{"name": "a", "layer": "input"}, {"name": "weight", "layer": "weight"},
                {"name": "bias", "layer": "bias"}, {"name": "R", "layer": "R"}]
        args += [{"name": k, "value": v} for k, v in scalars]
        case = {"id": cid, "title": title, "kind": "chain", "function": function,
                "layer_type": layer_type, "x": self.put(f"{cid}.x", x), "args": args,
                "layers": layers, "net": self.net_spec(cid, net)}
        case.update(extra)
        self.meta["cases"].append(case)

    def save(self, folder=OUT):
        buf = io.BytesIO()
        arrays = dict(self.arrays)
        arrays["meta"] = np.frombuffer(json.dumps(self.meta, indent=0).encode("utf-8"), dtype=np.uint8)
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        (folder / f"{self.name}.npz").write_bytes(data)
        return len(data)


def relevance_with_entering(net, x, rule):
    """net.relevance with keep=True, also recording the relevance *entering* each layer."""
    net.relevance(x, Composite("exercise", default=rule), keep=True)
    rows = net.ledger.rows  # backward order
    logits = net.forward(x)
    t = logits.argmax(1)
    R = np.zeros_like(logits)
    R[np.arange(len(x)), t] = logits[np.arange(len(x)), t]
    for r in rows:
        r["entering_R"] = R
        R = r["relevance"]
    return rows


def bundled(name):
    """A bundled model in float64 with its fingerprint, or None when not installed."""
    if name not in available_models():
        print(f"  note: bundled model {name!r} is not installed: its checks are left out")
        return None
    net = load_model(name)
    sha = fingerprint(net)
    net = net.astype(np.float64)
    net._bundled, net._sha256 = name, sha
    return net


def sample_inputs(net, n, start=0):
    images, _, _ = load_samples()
    return net.preprocess(images[start:start + n]).astype(np.float64)


# ======================================================================================
# Shared pieces of the formulas (and of the mistakes)
# ======================================================================================
def sign0(z):
    return np.where(z >= 0, 1.0, -1.0)


def stabilise(z, eps, how="sign0"):
    return {"sign0": lambda: z + eps * sign0(z),
            "minus": lambda: z - eps * sign0(z),
            "plus": lambda: z + eps,
            "none": lambda: z,
            "npsign": lambda: z + eps * np.sign(z)}[how]()


def divide(R, d):
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


# ======================================================================================
# Exercise: epsilon_dense
# ======================================================================================
def eps_dense_variant(a, W, b, R, eps, denom="sign0", bias=True, times_a=True, wT=False):
    Wm = W.T if wT else W
    z = a @ Wm.T + (b if (bias and b is not None) else 0.0)
    s = divide(R, stabilise(z, eps, denom))
    c = s @ Wm
    return a * c if times_a else c


def eps_dense_mistakes(a, W, b, R, eps):
    v = {"stabiliser_sign": eps_dense_variant(a, W, b, R, eps, "minus"),
         "stabiliser_plus": eps_dense_variant(a, W, b, R, eps, "plus"),
         "missing_stabiliser": eps_dense_variant(a, W, b, R, eps, "none"),
         "np_sign": eps_dense_variant(a, W, b, R, eps, "npsign"),
         "bias_ignored": eps_dense_variant(a, W, b, R, eps, bias=False),
         "no_input_factor": eps_dense_variant(a, W, b, R, eps, times_a=False)}
    if W.shape[0] == W.shape[1]:
        v["weight_layout"] = eps_dense_variant(a, W, b, R, eps, wT=True)
    return v


def eps_dense_engine(a, W, b, R, eps):
    layer = Dense(W.shape[1], W.shape[0], weight=W, bias=b, use_bias=b is not None)
    return Epsilon(eps).relevance(layer, a, R)[0]


def build_epsilon_dense():
    ref = Ref("epsilon_dense", "LRP-epsilon through a Dense layer", ["epsilon_dense"],
              "R_in = a * ((R / (z + eps*sign0(z))) @ W), z = a @ W.T + b",
              hints={**STABILISER_HINTS,
                     "bias_ignored": "your denominator leaves the bias out: z_k = sum_j a_j w_kj + b_k "
                                     "includes it (the bias absorbs its share of relevance)",
                     "no_input_factor": "you returned (R / z) @ W without multiplying by the input a "
                                        "(step 4 of the rule: R_in = a * c)",
                     "weight_layout": "the weight is used transposed: minilrp stores it as PyTorch "
                                      "does, weight[k, j] = (output k, input j), so z = a @ weight.T"},
              usual_causes=["the sign convention of the stabiliser (z + eps * sign0(z), sign0(0) = +1)",
                            "the bias left out of (or added twice to) the denominator",
                            "the weight's layout: (out_features, in_features), z = a @ weight.T + bias",
                            "forgetting the final multiplication by the input a"])
    common = dict(output="R_in", show_sums=True, shape_doc="like a: (N, in_features)",
                  nan_hint="a division by zero: is every denominator stabilised (and where it is "
                           "exactly 0, is that output's relevance dropped)?")

    def add(cid, title, a, W, b, R, eps, **extra):
        exp = eps_dense_engine(a, W, b, R, eps)
        ref.case(cid, title, "epsilon_dense",
                 [("a", a), ("weight", W), ("bias", b), ("R", R), ("epsilon", eps)],
                 exp, eps_dense_mistakes(a, W, b, R, eps), **{**common, **extra})

    W = np.array([[1.0, -1.0], [2.0, 1.0]])
    b = np.array([0.5, -1.0])
    a = np.array([[1.0, 2.0]])
    R = np.array([[1.0, 2.0]])
    add("hand_lrp0", "LRP-0 (epsilon = 0) on a 2 -> 2 layer worked by hand", a, W, b, R, 0.0)
    add("hand_epsilon", "epsilon = 0.25 on the same layer (one output has z < 0)", a, W, b, R, 0.25)
    add("zero_z", "an output with z = 0 exactly, epsilon = 0.1: sign0(0) = +1", np.array([[1.0, 1.0]]),
        np.array([[1.0, -1.0], [1.0, 1.0]]), None, np.array([[1.0, 1.0]]), 0.1,
        nan_hint="a division by zero where z = 0 exactly: np.sign(0) = 0 leaves the denominator "
                 "at 0; minilrp's sign0 takes +1 there, so the denominator is eps")
    add("zero_z_lrp0", "z = 0 exactly with epsilon = 0: that output's relevance is dropped",
        np.array([[1.0, 1.0]]), np.array([[1.0, -1.0], [1.0, 1.0]]), None, np.array([[1.0, 1.0]]), 0.0,
        nan_hint="a division by zero: with epsilon = 0 a denominator can be exactly 0; the "
                 "convention is to drop that output's relevance (it contributes 0), never NaN")
    rng = np.random.default_rng(6001)
    a = rng.uniform(0, 2, (3, 6))
    W = rng.standard_normal((4, 6))
    add("no_bias", "a layer without bias (bias=None)", a, W, None, rng.standard_normal((3, 4)), 0.1)
    a = rng.standard_normal((3, 7))
    W = rng.standard_normal((5, 7))
    b = rng.standard_normal(5)
    add("random", "a random 7 -> 5 layer, 3 examples, mixed signs, epsilon = 0.3", a, W, b,
        rng.standard_normal((3, 5)), 0.3)

    chain_args = dict(layer_type="Dense", scalars=[("epsilon", 0.25)],
                      variants_fn=lambda a, W, b, R: eps_dense_mistakes(a, W, b, R, 0.25), **common)
    net = random_mlp(6002)
    x = np.random.default_rng(6003).standard_normal((3, 12))
    rows = relevance_with_entering(net, x, Epsilon(0.25))
    ref.chain("chain_random", "a random 12-8-6-3 MLP: your rule on every Dense layer, from the "
              "output back", "epsilon_dense", net, x, rows, **chain_args)
    net = bundled("fmnist-mlp")
    if net is not None:
        x = sample_inputs(net, 2)
        rows = relevance_with_entering(net, x, Epsilon(0.25))
        ref.chain("bundled_mlp", "the bundled fmnist-mlp on 2 test images, every Dense layer",
                  "epsilon_dense", net, x, rows, **chain_args,
                  only_here="the small checks pass but the bundled model does not: look at what is "
                            "larger here (784 inputs, several examples, many zero activations)")
    return ref


def random_mlp(seed):
    rng = np.random.default_rng(seed)
    layers = [Dense(12, 8, weight=rng.standard_normal((8, 12)) * 0.5, bias=rng.standard_normal(8) * 0.3),
              ReLU(), Dense(8, 6, weight=rng.standard_normal((6, 8)) * 0.5, bias=rng.standard_normal(6) * 0.3),
              ReLU(), Dense(6, 3, weight=rng.standard_normal((3, 6)), bias=rng.standard_normal(3) * 0.3)]
    return Network(layers, (12,), classes=["a", "b", "c"], name="random-mlp").astype(np.float64)


# ======================================================================================
# Exercise: alphabeta_dense
# ======================================================================================
def ab_variant(a, W, b, R, alpha, beta, eps, combine="minus", bias="split", neg_inputs=True,
               denom="parts", stab="sign0"):
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
    if combine == "minus":
        return alpha * Rp - beta * Rn
    if combine == "plus":
        return alpha * Rp + beta * Rn
    return (alpha * Rp - beta * Rn) / (alpha + beta)


def ab_mistakes(a, W, b, R, alpha, beta, eps):
    return {"alpha_plus_beta": ab_variant(a, W, b, R, alpha, beta, eps, combine="plus"),
            "alpha_beta_normalised": ab_variant(a, W, b, R, alpha, beta, eps, combine="normalised"),
            "bias_not_split": ab_variant(a, W, b, R, alpha, beta, eps, bias="whole"),
            "bias_ignored": ab_variant(a, W, b, R, alpha, beta, eps, bias="ignored"),
            "negative_inputs_ignored": ab_variant(a, W, b, R, alpha, beta, eps, neg_inputs=False),
            "full_denominator": ab_variant(a, W, b, R, alpha, beta, eps, denom="full"),
            "stabiliser_sign": ab_variant(a, W, b, R, alpha, beta, eps, stab="minus"),
            "stabiliser_plus": ab_variant(a, W, b, R, alpha, beta, eps, stab="plus")}


def ab_engine(a, W, b, R, alpha, beta, eps):
    layer = Dense(W.shape[1], W.shape[0], weight=W, bias=b, use_bias=b is not None)
    return AlphaBeta(alpha, beta, eps).relevance(layer, a, R)[0]


def build_alphabeta_dense():
    ref = Ref("alphabeta_dense", "LRP-alpha-beta (alpha - beta = 1) through a Dense layer",
              ["alphabeta_dense"],
              "R_in = alpha * R+ - beta * R-, positive and negative contributions normalised apart",
              hints={"alpha_plus_beta": "you *added* the negative part (alpha R+ + beta R-): that is the "
                                        "convention in which alpha + beta = 1 and beta carries its own "
                                        "sign. minilrp (like Zennit, iNNvestigate, Montavon et al.) uses "
                                        "alpha - beta = 1 and subtracts: R = alpha R+ - beta R-",
                     "alpha_beta_normalised": "your result is the right one divided by (alpha + beta): "
                                              "alpha and beta were rescaled to sum to 1; minilrp uses "
                                              "them as given, with alpha - beta = 1",
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
                     "stabiliser_plus": STABILISER_HINTS["stabiliser_plus"]},
              usual_causes=["the alpha/beta convention: R = alpha R+ - beta R-, alpha - beta = 1",
                            "the bias: b+ into z+, b- into z-",
                            "negative inputs: a- w- is positive, a- w+ negative",
                            "z+ and z- normalised separately, each stabilised with eps * sign0"])
    common = dict(output="R_in", show_sums=True, shape_doc="like a: (N, in_features)",
                  nan_hint="a division by zero: z+ or z- can be exactly 0 (e.g. no negative "
                           "weights); stabilise with eps * sign0, and drop where it is still 0")

    def add(cid, title, a, W, b, R, alpha, beta, eps):
        ref.case(cid, title, "alphabeta_dense",
                 [("a", a), ("weight", W), ("bias", b), ("R", R), ("alpha", alpha), ("beta", beta),
                  ("epsilon", eps)],
                 ab_engine(a, W, b, R, alpha, beta, eps), ab_mistakes(a, W, b, R, alpha, beta, eps),
                 **common)

    a = np.array([[1.0, 2.0, 0.5]])
    W = np.array([[1.0, -1.0, 2.0], [-0.5, 1.0, -1.0]])
    b = np.array([0.5, -0.25])
    R = np.array([[1.0, 2.0]])
    add("hand_a2b1", "alpha=2, beta=1 on a 3 -> 2 layer worked by hand", a, W, b, R, 2.0, 1.0, 1e-9)
    add("hand_zplus", "alpha=1, beta=0 (the z+ rule)", a, W, b, R, 1.0, 0.0, 1e-9)
    rng = np.random.default_rng(6101)
    a = rng.standard_normal((3, 6))
    W = rng.standard_normal((4, 6))
    b = rng.standard_normal(4)
    add("negative_inputs", "inputs of both signs (a layer fed by normalised pixels)", a, W, b,
        rng.standard_normal((3, 4)), 2.0, 1.0, 1e-6)
    a = rng.uniform(0, 2, (2, 8))
    W = rng.standard_normal((5, 8))
    add("random_a3b2", "a random 8 -> 5 layer after a ReLU, alpha=3, beta=2", a, W,
        rng.standard_normal(5), rng.standard_normal((2, 5)), 3.0, 2.0, 1e-6)
    add("no_bias", "no bias (bias=None), alpha=2, beta=1", a, W, None, rng.standard_normal((2, 5)),
        2.0, 1.0, 1e-6)
    net = random_mlp(6102)
    x = np.random.default_rng(6103).standard_normal((2, 12))
    rule = AlphaBeta(2.0, 1.0, 1e-6)
    rows = relevance_with_entering(net, x, rule)
    ref.chain("chain_random", "a random MLP, alpha=2 beta=1 on every Dense layer, from the output back",
              "alphabeta_dense", net, x, rows, layer_type="Dense",
              scalars=[("alpha", 2.0), ("beta", 1.0), ("epsilon", 1e-6)],
              variants_fn=lambda a, W, b, R: ab_mistakes(a, W, b, R, 2.0, 1.0, 1e-6), **common)
    net = bundled("fmnist-mlp")
    if net is not None:
        x = sample_inputs(net, 2, start=2)
        rows = relevance_with_entering(net, x, rule)
        ref.chain("bundled_mlp", "the bundled fmnist-mlp on 2 test images, every Dense layer",
                  "alphabeta_dense", net, x, rows, layer_type="Dense",
                  scalars=[("alpha", 2.0), ("beta", 1.0), ("epsilon", 1e-6)],
                  variants_fn=lambda a, W, b, R: ab_mistakes(a, W, b, R, 2.0, 1.0, 1e-6), **common)
    return ref


# ======================================================================================
# Exercise: conv_relevance
# ======================================================================================
def convT_variant(s, w, stride, pad, in_hw, flip=False, shift=0, swap=False):
    """Scatter form of the transposed convolution, with the typical mistakes as options."""
    if flip:
        w = w[:, :, ::-1, ::-1]
    if swap:
        w = w.transpose(1, 0, 2, 3)
    N, Co, Ho, Wo = s.shape
    _, C, K, _ = w.shape
    H, W = in_hw
    m = 2 + abs(shift)
    big = np.zeros((N, C, H + 2 * pad + 2 * m + K, W + 2 * pad + 2 * m + K))
    for oy in range(Ho):
        for ox in range(Wo):
            for i in range(K):
                for j in range(K):
                    big[:, :, m + oy * stride + i, m + ox * stride + j] += s[:, :, oy, ox] @ w[:, :, i, j]
    off = m + pad + shift
    return big[:, :, off:off + H, off:off + W]


def convT_mistakes(s, w, stride, pad, in_hw):
    v = {"flipped_kernel": convT_variant(s, w, stride, pad, in_hw, flip=True),
         "offset_plus_one": convT_variant(s, w, stride, pad, in_hw, shift=1),
         "offset_minus_one": convT_variant(s, w, stride, pad, in_hw, shift=-1)}
    if pad > 1:
        v["padding_not_removed"] = convT_variant(s, w, stride, pad, in_hw, shift=-pad)
    if w.shape[0] == w.shape[1]:
        v["channels_swapped"] = convT_variant(s, w, stride, pad, in_hw, swap=True)
    return v


def conv_eps_variant(a, w, b, R, stride, pad, eps, denom="sign0", bias=True, times_a=True, **convT):
    z = kernels.conv2d_ref(a, w, b if bias else None, stride, pad)
    s = divide(R, stabilise(z, eps, denom))
    c = convT_variant(s, w, stride, pad, a.shape[2:], **convT)
    return a * c if times_a else c


def conv_eps_mistakes(a, w, b, R, stride, pad, eps):
    v = {"stabiliser_sign": conv_eps_variant(a, w, b, R, stride, pad, eps, "minus"),
         "stabiliser_plus": conv_eps_variant(a, w, b, R, stride, pad, eps, "plus"),
         "missing_stabiliser": conv_eps_variant(a, w, b, R, stride, pad, eps, "none"),
         "bias_ignored": conv_eps_variant(a, w, b, R, stride, pad, eps, bias=False),
         "no_input_factor": conv_eps_variant(a, w, b, R, stride, pad, eps, times_a=False),
         "flipped_kernel": conv_eps_variant(a, w, b, R, stride, pad, eps, flip=True),
         "offset_plus_one": conv_eps_variant(a, w, b, R, stride, pad, eps, shift=1),
         "offset_minus_one": conv_eps_variant(a, w, b, R, stride, pad, eps, shift=-1)}
    return v


def build_conv_relevance():
    flipped = ("the kernel is flipped: the transposed convolution scatters s[o, y, x] * w[o, c, i, j] "
               "to input pixel (y*stride + i - padding, x*stride + j - padding) with the kernel as it "
               "is; a *true* convolution (which flips) is what you get when you write it as a gather "
               "and forget to undo the flip")
    ref = Ref("conv_relevance", "The relevance pass through Conv2d: the transposed convolution",
              ["conv2d_transpose", "epsilon_conv2d"],
              "conv2d_transpose: the adjoint of conv2d; epsilon_conv2d: LRP-epsilon with it",
              hints={"flipped_kernel": flipped,
                     "offset_plus_one": "off by one pixel: your result is the reference shifted by one "
                                        "row and column (up-left): output pixel (y, x) of the padded "
                                        "result belongs to input (y - padding, x - padding)",
                     "offset_minus_one": "off by one pixel: your result is the reference shifted by one "
                                         "row and column (down-right): crop the padded result from "
                                         "index padding, input pixel = y*stride + i - padding",
                     "padding_not_removed": "the padding was not cropped away: the scattered result has "
                                            "padding extra rows/columns on each side; crop [padding: "
                                            "padding + H]",
                     "channels_swapped": "input and output channels are swapped: weight is (C_out, C_in, "
                                         "K, K); the relevance of input channel c sums over output "
                                         "channels o of s[o] * weight[o, c]",
                     **STABILISER_HINTS,
                     "bias_ignored": "your denominator leaves the bias out: z = conv2d(a, weight, bias)",
                     "no_input_factor": "you returned the transposed convolution c without multiplying "
                                        "by the input a (R_in = a * c)"},
              usual_causes=["flipped kernel: the transposed convolution uses w[o, c, i, j] unflipped "
                            "in the scatter form",
                            "off-by-one: input pixel = output pixel * stride + kernel offset - padding",
                            "the output size: it is in_hw (rows no window reaches get 0)",
                            "the stabiliser's sign: z + eps * sign0(z)"])
    shape_hint = ("the output must have the input's size in_hw: when (H + 2*padding - K) is not a "
                  "multiple of the stride, the last rows/columns are reached by no window and get zero")

    def addT(cid, title, s, w, stride, pad, in_hw):
        exp = kernels.conv2d_transpose_ref(s, w, stride, pad, in_hw)
        N, Co, Ho, Wo = s.shape
        C, K = w.shape[1], w.shape[2]
        full = [N, C, (Ho - 1) * stride + K - 2 * pad, (Wo - 1) * stride + K - 2 * pad]
        hints = [{"shape": full, "hint": shape_hint}] if tuple(full[2:]) != tuple(in_hw) else []
        ref.case(cid, title, "conv2d_transpose",
                 [("s", s), ("weight", w), ("stride", stride), ("padding", pad), ("in_hw", ("tuple", in_hw))],
                 exp, convT_mistakes(s, w, stride, pad, in_hw), output="out",
                 shape_doc="(N, C_in, *in_hw)", shape_hint=hints)

    rng = np.random.default_rng(6201)
    s = np.zeros((1, 1, 2, 2))
    s[0, 0, 0, 0] = 1.0
    w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    addT("T_one_hot", "one output pixel set: the kernel lands unflipped in the input's top-left",
         s, w, 1, 0, (4, 4))
    addT("T_k3", "1 -> 1 channel, 3x3 kernel, stride 1, no padding, 4x4 input",
         np.arange(1.0, 5.0).reshape(1, 1, 2, 2), w, 1, 0, (4, 4))
    addT("T_padding", "padding 1, stride 1, 4x4 input", rng.standard_normal((1, 1, 4, 4)),
         rng.standard_normal((1, 1, 3, 3)), 1, 1, (4, 4))
    addT("T_stride", "3x3 kernel, stride 2, padding 1, 6x6 input: the last row/column is reached "
         "by no window", rng.standard_normal((2, 1, 3, 3)), rng.standard_normal((1, 1, 3, 3)), 2, 1, (6, 6))
    addT("T_channels", "2 -> 3 channels, 2x2 kernel, stride 2, 5x5 input",
         rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((3, 2, 2, 2)), 2, 0, (5, 5))
    addT("T_square", "2 -> 2 channels, 3x3 kernel, padding 2", rng.standard_normal((1, 2, 7, 7)),
         rng.standard_normal((2, 2, 3, 3)), 1, 2, (5, 5))

    def addE(cid, title, a, w, b, R, stride, pad, eps, net=None, weight=None, bias=None, **extra):
        layer = Conv2d(w.shape[1], w.shape[0], w.shape[2], stride, pad, weight=w, bias=b,
                       use_bias=b is not None).astype(np.float64)
        layer.forward(a)
        exp = Epsilon(eps).relevance(layer, a, R)[0]
        variants = conv_eps_mistakes(a, w, b, R, stride, pad, eps) if exp.size <= BUNDLED_MISTAKES_MAX else {}
        ref.case(cid, title, "epsilon_conv2d",
                 [("a", a), ("weight", w if weight is None else weight), ("bias", b if bias is None else bias),
                  ("R", R), ("stride", stride), ("padding", pad), ("epsilon", eps)],
                 exp, variants, net=net, output="R_in", show_sums=True, shape_doc="like a: (N, C_in, H, W)",
                 nan_hint="a division by zero: stabilise the denominator with eps * sign0(z)", **extra)

    a = rng.uniform(0, 1, (2, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3) * 0.2
    addE("E_random", "LRP-epsilon through a 2 -> 3 channel conv, 3x3, padding 1, epsilon 0.1",
         a, w, b, rng.standard_normal((2, 3, 5, 5)), 1, 1, 0.1)
    a = rng.uniform(0, 1, (1, 2, 6, 6))
    addE("E_stride", "stride 2, padding 1, 6x6 input", a, w, b, rng.standard_normal((1, 3, 3, 3)), 2, 1, 0.1)
    net = bundled("fmnist-cnn")
    if net is not None:
        x = sample_inputs(net, 1)
        net.relevance(x, Composite("exercise", default=Epsilon(0.25)), keep=True)
        convs = [i for i, layer in enumerate(net.layers) if isinstance(layer, Conv2d)]
        i = convs[1]
        layer = net.layers[i]
        # a 5x5 crop of the second conv's input (and a relevance for its output): a valid
        # conv layer of its own, small enough to commit
        a = layer.a[:, :, 5:10, 5:10].copy()
        R = np.random.default_rng(6202).standard_normal((1, layer.out_channels, 5, 5))
        addE("E_bundled", f"the bundled fmnist-cnn's layer {i} {layer!r} on a 5x5 crop of its "
             "activations", a, layer.weight, layer.bias, R, layer.stride, layer.padding, 0.25,
             net=net, weight=("param", (i, "weight")), bias=("param", (i, "bias")),
             only_here="the small checks pass but this one does not: here the kernel is 5x5 with "
                       "padding 2 and 32 -> 64 channels")
    return ref


# ======================================================================================
# Exercise: zbox
# ======================================================================================
def zbox_variant(x, W, low, high, R, eps, swap=False, bounds=True, high_term=True, stab="sign0"):
    low, high = np.broadcast_to(low, x.shape), np.broadcast_to(high, x.shape)
    if swap:
        low, high = high, low
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    lt = 1.0 if bounds else 0.0
    ht = 1.0 if (bounds and high_term) else 0.0
    z = x @ W.T - lt * (low @ Wp.T) - ht * (high @ Wn.T)
    s = divide(R, stabilise(z, eps, stab))
    return x * (s @ W) - lt * low * (s @ Wp) - ht * high * (s @ Wn)


def zbox_mistakes(x, W, low, high, R, eps):
    return {"bounds_swapped": zbox_variant(x, W, low, high, R, eps, swap=True),
            "bounds_ignored": zbox_variant(x, W, low, high, R, eps, bounds=False),
            "high_term_missing": zbox_variant(x, W, low, high, R, eps, high_term=False),
            "stabiliser_sign": zbox_variant(x, W, low, high, R, eps, stab="minus"),
            "stabiliser_plus": zbox_variant(x, W, low, high, R, eps, stab="plus"),
            "missing_stabiliser": zbox_variant(x, W, low, high, R, eps, stab="none")}


def zbox_engine(x, W, low, high, R, eps):
    layer = Dense(W.shape[1], W.shape[0], weight=W, use_bias=False)
    lo = np.ascontiguousarray(np.broadcast_to(low, x.shape), dtype=np.float64)
    hi = np.ascontiguousarray(np.broadcast_to(high, x.shape), dtype=np.float64)
    return ZBox(lo, hi, epsilon=eps).relevance(layer, x, R)[0]


def build_zbox():
    ref = Ref("zbox", "The z^B (box) rule for the pixel layer", ["zbox_dense"],
              "z_k = sum_j x_j w_kj - l_j w+_kj - h_j w-_kj; R_j = x_j (W^T s)_j - l_j (W+^T s)_j - h_j (W-^T s)_j",
              hints={"bounds_swapped": "low and high are swapped: the lower bound goes with the positive "
                                       "weights (l w+) and the upper bound with the negative ones (h w-)",
                     "bounds_ignored": "your result is plain LRP-epsilon: the box terms - l w+ - h w- are "
                                       "missing from both the denominator and the numerator",
                     "high_term_missing": "the upper-bound term - h_j w-_kj is missing (it matters "
                                          "wherever a weight is negative)",
                     "stabiliser_sign": STABILISER_HINTS["stabiliser_sign"],
                     "stabiliser_plus": STABILISER_HINTS["stabiliser_plus"],
                     "missing_stabiliser": STABILISER_HINTS["missing_stabiliser"]},
              usual_causes=["which bound pairs with which weights: l with w+ = max(w, 0), h with "
                            "w- = min(w, 0)",
                            "the bounds must appear in the denominator *and* in the numerator",
                            "low/high given as scalars or per-feature arrays: broadcast them to x's shape",
                            "no bias in z^B: the biases cancel"])
    common = dict(output="R_in", show_sums=True, shape_doc="like x: (N, in_features)",
                  nan_hint="a division by zero: stabilise the denominator with eps * sign0(z)")

    def add(cid, title, x, W, low, high, R, eps, net=None, weight=None, **extra):
        exp = zbox_engine(x, W, low, high, R, eps)
        ref.case(cid, title, "zbox_dense",
                 [("x", x), ("weight", W if weight is None else weight),
                  ("low", low if isinstance(low, np.ndarray) else float(low)),
                  ("high", high if isinstance(high, np.ndarray) else float(high)), ("R", R), ("epsilon", eps)],
                 exp, zbox_mistakes(x, W, low, high, R, eps) if exp.size <= BUNDLED_MISTAKES_MAX else {},
                 net=net, **{**common, **extra})

    W = np.array([[1.0, -2.0], [-1.0, 0.5]])
    add("hand", "two pixels in [0, 1], a 2 -> 2 layer worked by hand", np.array([[0.5, 0.25]]), W,
        0.0, 1.0, np.array([[1.0, 2.0]]), 1e-9)
    rng = np.random.default_rng(6301)
    x = rng.uniform(-0.42, 2.8, (3, 6))
    add("normalised", "normalised pixels in [-0.4242, 2.8215] (scalar bounds), a 6 -> 4 layer",
        x, rng.standard_normal((4, 6)), -0.4242, 2.8215, rng.standard_normal((3, 4)), 1e-6)
    low = rng.uniform(-1, 0, 5)
    high = low + rng.uniform(1, 2, 5)
    x = low + rng.uniform(0, 1, (2, 5)) * (high - low)
    add("per_feature", "a bound per input feature (arrays of shape (in_features,))", x,
        rng.standard_normal((3, 5)), low, high, rng.standard_normal((2, 3)), 1e-6)
    net = bundled("fmnist-mlp")
    if net is not None:
        x = sample_inputs(net, 2)
        rows = relevance_with_entering(net, x, Epsilon(0.25))
        first = [i for i, layer in enumerate(net.layers) if isinstance(layer, Dense)][0]
        row = next(r for r in rows if r["index"] == first)
        layer = net.layers[first]
        add("bundled_mlp", f"the first layer of the bundled fmnist-mlp ({layer!r}) on 2 test images",
            layer.a.copy(), layer.weight, float(net.input_low[0]), float(net.input_high[0]),
            row["entering_R"].copy(), 1e-6, net=net, weight=("param", (first, "weight")),
            only_here="the small checks pass but this one does not: here there are 784 pixels, "
                      "many of them exactly 0 (= low)")
    return ref


# ======================================================================================
# Exercise: maxpool_wta
# ======================================================================================
def wta_variant(a, R, K, s, ties="split", accumulate=True, pick="max"):
    out = np.zeros_like(a)
    N, C, H, W = a.shape
    Ho, Wo = (H - K) // s + 1, (W - K) // s + 1
    for n in range(N):
        for c in range(C):
            for oy in range(Ho):
                for ox in range(Wo):
                    win = a[n, c, oy * s:oy * s + K, ox * s:ox * s + K]
                    r = R[n, c, oy, ox]
                    if pick == "proportional":
                        tot = win.sum()
                        share = win * r / tot if tot != 0 else np.zeros_like(win)
                        pos = [(i, j) for i in range(K) for j in range(K)]
                        vals = [share[i, j] for i, j in pos]
                    else:
                        m = win.max() if pick == "max" else win.min()
                        pos = [(i, j) for i in range(K) for j in range(K) if win[i, j] == m]
                        if ties == "first":
                            pos = pos[:1]
                        elif ties == "last":
                            pos = pos[-1:]
                        vals = [r / len(pos) if ties == "split" else r] * len(pos)
                    for (i, j), v in zip(pos, vals):
                        if accumulate:
                            out[n, c, oy * s + i, ox * s + j] += v
                        else:
                            out[n, c, oy * s + i, ox * s + j] = v
    return out


def wta_mistakes(a, R, K, s):
    return {"ties_first": wta_variant(a, R, K, s, ties="first"),
            "ties_last": wta_variant(a, R, K, s, ties="last"),
            "ties_full": wta_variant(a, R, K, s, ties="full"),
            "overlap_overwritten": wta_variant(a, R, K, s, accumulate=False),
            "proportional": wta_variant(a, R, K, s, pick="proportional"),
            "minimum": wta_variant(a, R, K, s, pick="min")}


def build_maxpool_wta():
    ref = Ref("maxpool_wta", "Winner-take-all relevance through MaxPool2d", ["maxpool_wta"],
              "each window's relevance goes to its maximum; ties split evenly; overlapping windows add up",
              hints={"ties_first": "ties: you gave all of a window's relevance to the *first* maximum "
                                   "(what PyTorch's gradient does); minilrp splits it evenly among all "
                                   "tied maxima (after a ReLU, windows of zeros are common)",
                     "ties_last": "ties: you gave all of a window's relevance to the *last* maximum; "
                                  "split it evenly among all tied maxima",
                     "ties_full": "ties: every tied maximum received the window's full relevance, so "
                                  "relevance is created; split it evenly (R / number of maxima)",
                     "overlap_overwritten": "overlapping windows (stride < kernel): a pixel that is the "
                                            "maximum of two windows must receive both shares (+=), "
                                            "yours keeps only the last one (=)",
                     "proportional": "this is the proportional rule (R shared in proportion to the "
                                     "activations, as for a sum pool), not winner-take-all",
                     "minimum": "the relevance went to each window's minimum instead of its maximum"},
              usual_causes=["ties: split evenly among all maxima of a window",
                            "overlapping windows: accumulate (+=), do not overwrite",
                            "window (oy, ox) covers rows oy*stride .. oy*stride + K - 1",
                            "rows/columns no window covers (H - K not a multiple of stride) get 0"])
    common = dict(output="R_in", show_sums=True, shape_doc="like a: (N, C, H, W)",
                  nan_hint="NaN: a window with no maximum found, or a division by a tie count of 0?")

    def add(cid, title, a, R, K, s, net=None, **extra):
        layer = MaxPool2d(K, s)
        exp = WinnerTakeAll().relevance(layer, a, R)[0]
        ref.case(cid, title, "maxpool_wta", [("a", a), ("R", R), ("kernel_size", K), ("stride", s)],
                 exp, wta_mistakes(a, R, K, s) if exp.size <= BUNDLED_MISTAKES_MAX else {}, **{**common, **extra})

    a = np.array([[[[1.0, 3.0, 0.0, 2.0], [2.0, 0.5, 4.0, 1.0], [0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 2.0, 0.0]]]])
    add("hand", "2x2 windows, stride 2, distinct maxima (4x4 plane)", a,
        np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 2, 2)
    a = np.array([[[[0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 3.0, 0.5], [2.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]]])
    add("ties", "ties: a window of four zeros, windows with two equal maxima", a,
        np.array([[[[4.0, 2.0], [1.0, -2.0]]]]), 2, 2)
    a = np.array([[[[1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 2.0]]]])
    add("overlap", "3x3 windows, stride 2 (overlapping): the centre is the maximum of all four", a,
        np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 3, 2)
    rng = np.random.default_rng(6401)
    add("stride1", "2x2 windows, stride 1 (heavily overlapping), 2 channels",
        np.round(rng.uniform(0, 3, (1, 2, 4, 4)), 1), rng.standard_normal((1, 2, 3, 3)), 2, 1)
    add("remainder", "5x5 plane, 2x2 windows, stride 2: the last row and column are in no window",
        rng.standard_normal((2, 1, 5, 5)), rng.standard_normal((2, 1, 2, 2)), 2, 2)
    net = bundled("fmnist-cnn")
    if net is not None:
        x = sample_inputs(net, 1)
        net.forward(x)
        i = [j for j, layer in enumerate(net.layers) if isinstance(layer, MaxPool2d)][0]
        layer = net.layers[i]
        a = layer.a[:, :8, 6:14, 6:14].copy()
        K, s = layer.kernel_size, layer.stride
        Ho = (8 - K) // s + 1
        R = np.random.default_rng(6402).standard_normal((1, 8, Ho, Ho))
        add("bundled", f"the bundled fmnist-cnn's first max pool (layer {i}) on an 8-channel 8x8 crop "
            "of real post-ReLU activations (many all-zero windows)", a, R, K, s,
            only_here="the small checks pass but this one does not: real activations after a ReLU "
                      "have many all-zero windows (4-way ties)")
    return ref


# ======================================================================================
# Exercise: sa
# ======================================================================================
def sa_variants(net, x, target):
    logits = net.forward(x)
    t = net.targets(target, logits)
    onehot = np.zeros_like(logits)
    onehot[np.arange(len(x)), t] = 1
    g = net.backward(onehot)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g_prob = net.backward(p[np.arange(len(x)), t][:, None] * (onehot - p))
    g_logp = net.backward(onehot - p)
    v = {"abs_sum": np.abs(g).sum(1), "norm": np.sqrt((g * g).sum(1)),
         "square_of_sum": g.sum(1) ** 2, "not_squared": g.sum(1),
         "softmax_probability": (g_prob ** 2).sum(1), "log_softmax": (g_logp ** 2).sum(1),
         "max_over_channels": (g * g).max(1)}
    if target is not None:
        pred = logits.argmax(1)
        oh = np.zeros_like(logits)
        oh[np.arange(len(x)), pred] = 1
        v["target_ignored"] = (net.backward(oh) ** 2).sum(1)
    else:
        oh = np.zeros_like(logits)
        oh[:, 0] = 1
        v["target_zero"] = (net.backward(oh) ** 2).sum(1)
    return v


def build_sa():
    ref = Ref("sa", "Sensitivity analysis from the gradient", ["sa"],
              "SA_p = sum over channels c of (d f_t / d x_{c,p})^2, f_t the target logit",
              hints={"abs_sum": "you summed |gradient| over channels; SA sums the *squared* gradients",
                     "norm": "you took the Euclidean norm sqrt(sum_c g^2); SA is the squared norm, "
                             "sum_c g^2 (no square root)",
                     "square_of_sum": "you squared the channel *sum* (sum_c g)^2; SA sums the squares, "
                                      "sum_c g^2",
                     "not_squared": "the gradient was summed over channels without squaring",
                     "softmax_probability": "this is the gradient of the softmax *probability*; SA "
                                            "differentiates the target *logit* f_t (weight one-hot at "
                                            "the target in net.backward)",
                     "log_softmax": "this is the gradient of the log-softmax; SA differentiates the "
                                    "target *logit* (weight one-hot at the target in net.backward)",
                     "max_over_channels": "you took the maximum over channels; SA sums the squared "
                                          "gradients over channels",
                     "target_ignored": "the target argument was ignored (you explained the predicted "
                                       "class): use the class given in target",
                     "target_zero": "with target=None, explain each image's *predicted* class "
                                    "(argmax of the logits), not class 0"},
              usual_causes=["the output weighting: one-hot at the target class of each image",
                            "target=None means the predicted class, an int means that class for "
                            "every image, an array one class per image",
                            "square, then sum over the channel axis (axis 1)"])
    common = dict(output="SA", shape_doc="(N, H, W): summed over the channel axis",
                  forbid=[{"name": "minilrp.explain.sensitivity:gradient,sa,abs_gradient,gradient_x_input,"
                                   "smoothgrad,integrated_gradients",
                           "why": "compute the gradient yourself with net.forward and net.backward"}],
                  forbid_net_gradient="compute the gradient yourself with net.forward and net.backward",
                  nan_hint="NaN in the map: the gradient itself should be finite; check the output "
                           "weighting you pass to net.backward")

    def add(cid, title, net, x, target, **extra):
        exp = sensitivity.sa(net, x, target)
        tv = target if target is None or isinstance(target, int) else np.asarray(target, dtype=np.int64)
        ref.case(cid, title, "sa", [("net", ("net",)), ("x", x), ("target", tv)], exp,
                 sa_variants(net, x, target) if exp.size <= BUNDLED_MISTAKES_MAX else {}, net=net, **common,
                 shape_hint=[{"shape": list(x.shape), "hint": "not summed over channels: SA is "
                                                              "(N, H, W), the sum over axis 1"}],
                 **extra)

    rng = np.random.default_rng(6501)
    net1 = Network([Conv2d(1, 3, 3, padding=1, weight=rng.standard_normal((3, 1, 3, 3)), bias=rng.standard_normal(3) * 0.1),
                    ReLU(), MaxPool2d(2), Flatten(),
                    Dense(27, 4, weight=rng.standard_normal((4, 27)) * 0.3, bias=rng.standard_normal(4) * 0.1)],
                   (1, 6, 6), name="tiny-1ch").astype(np.float64)
    x1 = rng.uniform(0, 1, (3, 1, 6, 6))
    add("one_channel", "a tiny one-channel CNN, 3 images, target = the predicted class", net1, x1, None)
    net2 = Network([Conv2d(2, 3, 3, padding=1, weight=rng.standard_normal((3, 2, 3, 3)), bias=rng.standard_normal(3) * 0.1),
                    ReLU(), AvgPool2d(2), Flatten(),
                    Dense(12, 4, weight=rng.standard_normal((4, 12)) * 0.3, bias=rng.standard_normal(4) * 0.1)],
                   (2, 5, 5), name="tiny-2ch").astype(np.float64)
    x2 = rng.uniform(-1, 1, (2, 2, 5, 5))
    add("two_channels", "a two-channel input (squares summed over channels), predicted class", net2, x2, None)
    add("target_int", "target=2 for every image", net2, x2, 2)
    add("target_array", "one target per image (an int array)", net1, x1, [3, 0, 1])
    net = bundled("fmnist-cnn")
    if net is not None:
        add("bundled", "the bundled fmnist-cnn on 2 test images", net, sample_inputs(net, 2), None)
    return ref


# ======================================================================================
# Exercise: aopc
# ======================================================================================
def scores_variant(h, size, order="row", remainder="partial", reduce="sum", pool="sum"):
    h = np.asarray(h, dtype=np.float64)
    m = (np.abs(h).sum(1) if reduce == "abs" else h.sum(1)) if h.ndim == 4 else h
    N, H, W = m.shape
    nr, nc = (-(-H // size), -(-W // size)) if remainder == "partial" else (H // size, W // size)
    out = np.zeros((N, nr * nc))
    for r in range(nr):
        for c in range(nc):
            block = m[:, r * size:(r + 1) * size, c * size:(c + 1) * size]
            v = block.sum((1, 2)) if pool == "sum" else block.mean((1, 2))
            out[:, (r * nc + c) if order == "row" else (c * nr + r)] = v
    return out


def aopc_variants(c):
    drop = c[:, :1] - c
    L = c.shape[1] - 1
    return {"divide_by_L": drop.sum(1) / L,
            "sign_flipped": -drop.mean(1),
            "relative_drop": np.divide(drop.mean(1), c[:, 0], out=np.full(len(c), np.nan), where=c[:, 0] != 0),
            "trapezoid": np.trapezoid(drop, axis=1) / L,
            "last_step_only": drop[:, -1]}


def morf_zero_curves(net, x, heatmap, size=4):
    """MoRF curves written out plainly (deterministic: regions in decreasing score order, ties
    by index, each distorted region set to 0), so that these inputs do not depend on
    minilrp.perturbation's random streams. -> (N, R + 1) target logits."""
    scores = scores_variant(heatmap, size)
    order = np.argsort(-scores, axis=1, kind="stable")
    t = net.forward(x).argmax(1)
    N, R = scores.shape
    H, W = x.shape[2:]
    curves = np.zeros((N, R + 1))
    for n in range(N):
        xk = np.repeat(x[n:n + 1], R + 1, axis=0)
        for k in range(1, R + 1):
            xk[k] = xk[k - 1]
            r = order[n, k - 1]
            row, col = divmod(r, -(-W // size))
            xk[k, :, row * size:(row + 1) * size, col * size:(col + 1) * size] = 0.0
        curves[n] = net.forward(xk)[:, t[n]]
    return curves


def build_aopc():
    ref = Ref("aopc", "Region perturbation: region scores and AOPC", ["region_scores", "aopc"],
              "region_scores: sum a heatmap over s x s grid regions; aopc = 1/(L+1) sum_k (f(x_0) - f(x_k))",
              hints={"divide_by_L": "you divided by L (or skipped k = 0): AOPC = 1/(L+1) sum_{k=0..L} "
                                    "(f(x_0) - f(x_k)), the k = 0 term (0) included",
                     "sign_flipped": "the sign is flipped: AOPC averages f(x_0) - f(x_k) (the *drop* "
                                     "of the score), positive when the score falls",
                     "relative_drop": "you divided by f(x_0): AOPC is in score units, not relative",
                     "trapezoid": "this is a trapezoidal area; AOPC is the plain mean over the L+1 "
                                  "steps k = 0..L",
                     "last_step_only": "this is only the final drop f(x_0) - f(x_L); AOPC averages "
                                       "over every step",
                     "column_major": "regions are numbered column by column; number them row by row: "
                                     "region index = row * (number of region columns) + column",
                     "abs_channels": "you summed |heatmap| over channels; sum the signed values (the "
                                     "relevance of a pixel is the sum over its channels)",
                     "mean_not_sum": "you averaged over each region; the region score is the *sum* "
                                     "of the heatmap over it"},
              usual_causes=["AOPC: the mean over k = 0..L of f(x_0) - f(x_k), one value per image",
                            "regions: row-major numbering, the last row/column of regions partial "
                            "when s does not divide the image size",
                            "channels summed (signed) before the regions"])

    def addS(cid, title, h, size):
        exp = perturbation.region_scores(h, perturbation.grid(h.shape[-2:], size))
        H, W = h.shape[-2:]
        v = {"column_major": scores_variant(h, size, order="col"),
             "mean_not_sum": scores_variant(h, size, pool="mean")}
        if h.ndim == 4:
            v["abs_channels"] = scores_variant(h, size, reduce="abs")
        drop = [len(h), (H // size) * (W // size)]
        hint = [{"shape": drop, "hint": "the partial regions are missing: when s does not divide the "
                                        "image, the last row/column of regions is smaller but counts"}] \
            if drop[1] != exp.shape[1] else []
        ref.case(cid, title, "region_scores", [("heatmap", h), ("size", size)], exp, v,
                 output="scores", shape_doc="(N, R), R = ceil(H/s) * ceil(W/s)", shape_hint=hint,
                 nan_hint="NaN in the scores: the heatmap is finite, so a division crept in?")

    def addA(cid, title, c, **extra):
        ref.case(cid, title, "aopc", [("curves", c)], perturbation.aopc(c), aopc_variants(c),
                 output="aopc", shape_doc="(N,): one value per image",
                 shape_hint=[{"shape": [], "hint": "one AOPC per image (N,), not the mean over images"}],
                 nan_hint="NaN: AOPC needs no division by the data", **extra)

    addA("aopc_hand", "two curves worked by hand: falling [3, 2, 1, 0] and rising [0, 1, 1, 2]",
         np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 1.0, 2.0]]))
    rng = np.random.default_rng(6601)
    addA("aopc_random", "5 random curves of 13 steps", rng.standard_normal((5, 13)).cumsum(1) + 4)
    net = bundled("fmnist-cnn")
    if net is not None:
        x = sample_inputs(net, 6)
        R = net.relevance(x, "EpsilonGammaBox")
        addA("aopc_bundled", "MoRF curves measured on the bundled fmnist-cnn (6 images, 49 regions "
             "of 4x4, EpsilonGammaBox heatmaps, regions set to 0)", morf_zero_curves(net, x, R),
             measured_on="fmnist-cnn")
    h = np.arange(16.0).reshape(1, 4, 4)
    addS("scores_hand", "a 4x4 map, 2x2 regions, worked by hand", h, 2)
    addS("scores_channels", "two channels (summed first), 6x6, 3x3 regions", rng.standard_normal((2, 2, 6, 6)), 3)
    addS("scores_remainder", "5x7 map, 2x2 regions: partial regions at the border", rng.standard_normal((2, 5, 7)), 2)
    addS("scores_28", "28x28 heatmaps (N, 1, H, W), 4x4 regions (49 per image)", rng.standard_normal((2, 1, 28, 28)), 4)
    return ref


BUILDERS = {
    "epsilon_dense": build_epsilon_dense,
    "alphabeta_dense": build_alphabeta_dense,
    "conv_relevance": build_conv_relevance,
    "zbox": build_zbox,
    "maxpool_wta": build_maxpool_wta,
    "sa": build_sa,
    "aopc": build_aopc,
}


def build(name) -> Ref:
    return BUILDERS[name]()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"exercises (default all): {', '.join(BUILDERS)}")
    p.add_argument("--check", action="store_true",
                   help="rebuild in memory and compare with the committed files; write nothing")
    args = p.parse_args(argv)
    names = args.names or list(BUILDERS)
    bad = [n for n in names if n not in BUILDERS]
    if bad:
        p.error(f"unknown exercise(s) {bad}; known: {', '.join(BUILDERS)}")
    stale = []
    for name in names:
        print(f"{name}:")
        ref = build(name)
        if args.check:
            if not same_as_committed(ref):
                stale.append(name)
            continue
        size = ref.save()
        print(f"  wrote minilrp/teaching/exercises/{name}.npz: {len(ref.meta['cases'])} checks, {size / 1024:.1f} KB")
    if args.check:
        print("stale: " + ", ".join(stale) if stale else "all references up to date")
        return 1 if stale else 0
    return 0


def same_as_committed(ref) -> bool:
    path = OUT / f"{ref.name}.npz"
    if not path.exists():
        return False
    with np.load(path, allow_pickle=False) as f:
        old = {k: f[k] for k in f.files}
    meta = json.loads(old.pop("meta").tobytes().decode())
    # checks on a bundled model that is not installed here cannot be rebuilt: leave them out
    absent = [c["id"] for c in meta["cases"]
              if (c.get("net", {}).get("bundled") or c.get("measured_on", "")) not in ("", *available_models())]
    meta["cases"] = [c for c in meta["cases"] if c["id"] not in absent]
    old = {k: v for k, v in old.items() if k.split(".")[0] not in absent}
    if meta != json.loads(json.dumps(ref.meta)) or set(old) != set(ref.arrays):
        return False
    return all(old[k].dtype == v.dtype and old[k].shape == v.shape and
               (np.array_equal(old[k], v) if v.dtype.kind != "f" else
                np.allclose(old[k], v, rtol=1e-9, atol=1e-12 * max(1.0, float(np.max(np.abs(v))) if v.size else 1.0)))
               for k, v in ref.arrays.items())


if __name__ == "__main__":
    sys.exit(main())
