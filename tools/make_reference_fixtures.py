#!/usr/bin/env python
"""Regenerate minilrp's committed float64 reference outputs under tests/fixtures/.

    .venv/bin/python tools/make_reference_fixtures.py                 # every available model
    .venv/bin/python tools/make_reference_fixtures.py --models fmnist-cnn synthetic-cnn

One file per model, ``tests/fixtures/minilrp_reference_<model>.npz`` (load with ``allow_pickle=False``),
written by the current engine in float64: a regression guard (``tests/test_reference_fixtures.py``
recomputes everything and compares) and the answer key for course assignments. Use
:func:`load_reference` to read one back with the aliases resolved.

Also writes ``tests/fixtures/synthetic_cnn.npz`` (a seeded random network in minilrp's weight
format, float64) if it is missing: 3 channels with mean/std normalisation (so inputs and z^B
bounds are negative as well as positive), a stride-2 conv, an overlapping max pool and a padded
average pool -- the layer kinds and border cases the bundled models do not exercise.

Arrays in each file (N images; layer index i as in ``net.layers``; "method" as in meta.methods):

    meta                      uint8: UTF-8 JSON record (conventions, versions, layout, methods)
    images                    uint8 (N, 28, 28)  raw test images (bundled models only)
    inputs, targets, logits   float64 (N, C, H, W), int64 (N,), float64 (N, K)
    act.<i>                   output of layer i, float64 (n_detail, *shape): the first
                              n_detail images, layers with at most FULL_MAX values per image
    actfp.<i>                 fingerprint of the output of layer i, all N images (N, 6)
    heatmap.<method>          relevance at the input, all N images, float64 (N, C, H, W)
    R.<method>.<i>            relevance leaving layer i towards its input (ledger row of layer i,
                              ``net.relevance(x, method, keep=True)``), (n_detail, *input shape
                              of layer i), for the layers in meta.stored_layers: layers with a
                              rule above the first one (whose relevance is the heatmap), at most FULL_MAX values
                              per image. Pass layers (ReLU, Flatten) hand down what they get:
                              meta.aliases; load_reference() fills them in
    Rfp.<method>              fingerprints of every layer's relevance, (L, N, 6), all images
    ledger.<method>           per-layer sums (L, 7, N), rows by layer index ascending, columns
                              meta.ledger_columns (positive/negative 0 where the rule has none)
    sa.<name>                 sensitivity maps (minilrp.sensitivity.METHODS), all N images

A fingerprint of an array v (one image, flattened) is [sum v, sum |v|, sqrt(sum v^2),
<v, u1>, <v, u2>, <v, u3>] with u_k[j] = sin((k + 1) * 0.6180339887 * (j + 1) + k): a compact
check of per-layer arrays too big to commit for every image.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SYNTHETIC = FIXTURES / "synthetic_cnn.npz"

# model name -> where its weights are, which sample images, how many get full per-layer arrays
MODELS = {
    "fmnist-cnn": {"weights": "weights/fmnist-cnn.npz", "indices": [0, 1, 2], "detail": 1},
    "fmnist-mlp": {"weights": "weights/fmnist-mlp.npz", "indices": [0, 1], "detail": 2},
    "fmnist-vgg": {"weights": "weights/fmnist-vgg.npz", "indices": [0, 1], "detail": 1},
    "synthetic-cnn": {"weights": "tests/fixtures/synthetic_cnn.npz", "random": 2, "seed": 3, "detail": 1},
}

SA_PARAMS = {
    "gradient": {},
    "sa": {},
    "abs_gradient": {},
    "gradient_x_input": {},
    "smoothgrad": {"n_samples": 8, "noise": 0.15, "seed": 0},
    "integrated_gradients": {"steps": 16},
}

LEDGER_COLUMNS = ["entering", "leaving", "bias", "stabiliser", "dropped", "positive", "negative"]
TOLERANCE = ("float64; arrays: per image max|new - ref| <= 1e-9 * max|ref| (max|ref| = 0 "
             "requires new == 0); fingerprints and ledger sums: |new - ref| <= 1e-9 * scale, "
             "scale = sum|v| of the fingerprinted array / the largest |ledger entry| of that "
             "image and method")
RTOL = 1e-9
FULL_MAX = 4096  # per-image size up to which per-layer arrays are stored in full


# ------------------------------------------------------------------------------ synthetic model
def synthetic_network():
    """A small seeded random network (float64) with every layer kind and border case."""
    from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU

    rng = np.random.default_rng(20240601)

    def he(shape, fan_in):
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

    layers = [
        Conv2d(3, 6, 3, stride=1, padding=1, weight=he((6, 3, 3, 3), 27), bias=rng.normal(0, 0.1, 6)),
        ReLU(),
        MaxPool2d(3, stride=2),                                    # 12 -> 5, overlapping windows
        Conv2d(6, 8, 3, stride=2, padding=1, weight=he((8, 6, 3, 3), 54), bias=rng.normal(0, 0.1, 8)),
        ReLU(),                                                    # 5 -> 3
        AvgPool2d(2, stride=1, padding=1),                         # 3 -> 4, zero padding counted
        Flatten(),
        Dense(128, 16, weight=he((16, 128), 128), bias=rng.normal(0, 0.1, 16)),
        ReLU(),
        Dense(16, 5, weight=he((5, 16), 16), bias=rng.normal(0, 0.1, 5)),
    ]
    return Network(layers, (3, 12, 12), classes=[f"s{k}" for k in range(5)], name="synthetic-cnn",
                   mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.3],
                   provenance={"what": "seeded random weights for reference tests, not trained",
                               "command": "tools/make_reference_fixtures.py"}).astype(np.float64)


def ensure_synthetic():
    import minilrp
    if not SYNTHETIC.is_file():
        os.makedirs(FIXTURES, exist_ok=True)
        minilrp.save(SYNTHETIC, synthetic_network())
        print(f"wrote {SYNTHETIC.relative_to(REPO)}", file=sys.stderr)


# ------------------------------------------------------------------------------ shared helpers
def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprint(v):
    """(N, ...) -> (N, 6): [sum, sum|v|, sqrt(sum v^2), <v,u1>, <v,u2>, <v,u3>] per example."""
    v = np.asarray(v, np.float64).reshape(len(v), -1)
    j = np.arange(1, v.shape[1] + 1, dtype=np.float64)
    u = np.stack([np.sin((k + 1) * 0.6180339887 * j + k) for k in range(3)], axis=1)
    return np.concatenate([v.sum(1, keepdims=True), np.abs(v).sum(1, keepdims=True),
                           np.sqrt((v * v).sum(1, keepdims=True)), v @ u], axis=1)


def lrp_methods(net):
    """name -> composite spec: every preset of minilrp.composites.PRESETS (default
    parameters), the Flat rule on every linear layer, and (networks with max pooling)
    EpsilonGammaBox with the proportional max-pool rule."""
    from minilrp.explain.composites import PRESETS, Composite, epsilon_gamma_box
    from minilrp import MaxPool2d
    from minilrp import Flat, Proportional

    methods = {name: name for name in PRESETS}
    methods["Flat"] = Composite("Flat", default=Flat())
    if any(isinstance(layer, MaxPool2d) for layer in net.layers):
        c = epsilon_gamma_box()
        methods["EpsilonGammaBox-proportional"] = Composite(
            "EpsilonGammaBox-proportional", default=c.default, by_type=c.by_type, first=c.first,
            maxpool=Proportional())
    return methods


def load_network(name, spec):
    """The model as a float64 minilrp Network, and the path of its weight file."""
    import minilrp
    path = REPO / spec["weights"]
    if not path.is_file():
        raise FileNotFoundError(f"{spec['weights']} not found")
    return minilrp.load(path, dtype=np.float64), path


def model_inputs(net, spec):
    """(inputs float64, raw uint8 images or None)."""
    if "indices" in spec:
        import minilrp
        images = minilrp.load_samples()[0][spec["indices"]]
        return net.preprocess(images), images
    rng = np.random.default_rng(spec["seed"])
    pixels = rng.uniform(0, 1, (spec["random"],) + net.input_shape)
    return net.preprocess(pixels), None


def stored_layers(net):
    """Layer indices whose relevance R.<method>.<i> is stored in full."""
    from minilrp import get_composite
    rules = get_composite("LRP-0").rules(net)
    first = next(i for i, rule in enumerate(rules) if rule is not None)
    return [i for i, rule in enumerate(rules)
            if rule is not None and i > first and int(np.prod(net.shapes[i])) <= FULL_MAX]


def compute(net, x, targets, methods, detail, sa=True, fast=True):
    """Everything the fixture holds, recomputed with the current engine (also used by the
    test). targets: fixed classes (None: predicted); methods: {name: composite spec} for LRP;
    sa: also the sensitivity maps; fast: LRP on the fast path (False: the reference rules).
    -> (dict of arrays, {method: rule of each layer})."""
    from minilrp import sensitivity
    from minilrp import get_composite

    out = {}
    keep = set(stored_layers(net))
    logits = net.forward(x)
    if targets is None:
        targets = logits.argmax(1)
    out["targets"] = np.asarray(targets, np.int64)
    out["logits"] = logits.copy()
    L = len(net.layers)
    acts = [net.layers[i + 1].a for i in range(L - 1)] + [logits]
    for i, a in enumerate(acts):
        a = np.array(a, np.float64).reshape((len(x),) + net.shapes[i + 1])
        if a[0].size <= FULL_MAX:
            out[f"act.{i}"] = a[:detail].copy()
        out[f"actfp.{i}"] = fingerprint(a)
    rules = {}
    for name, spec in methods.items():
        R = net.relevance(x, spec, target=out["targets"], keep=True, fast=fast)
        rows = sorted(net.ledger.rows, key=lambda r: r["index"])
        rules[name] = ["pass" if r is None else repr(r) for r in get_composite(spec).rules(net)]
        out[f"heatmap.{name}"] = R.copy()
        fps, ledger = [], np.zeros((L, len(LEDGER_COLUMNS), len(x)))
        for r in rows:
            i = r["index"]
            rel = r["relevance"]
            if i in keep:
                out[f"R.{name}.{i}"] = np.array(rel[:detail], np.float64)
            fps.append(fingerprint(rel))
            for c, key in enumerate(LEDGER_COLUMNS):
                if key in r:
                    ledger[i, c] = r[key]
        out[f"Rfp.{name}"] = np.stack(fps)
        out[f"ledger.{name}"] = ledger
    for name, params in (SA_PARAMS.items() if sa else ()):
        out[f"sa.{name}"] = np.array(sensitivity.METHODS[name](net, x, target=out["targets"], **params))
    return out, rules


def aliases(net):
    """Relevance not stored twice: layer 0's is the heatmap; pass layers (ReLU, Flatten)
    hand down what they received, i.e. the relevance leaving the next layer with a rule
    above them ("initial": the initial relevance, target logit x one-hot)."""
    from minilrp import get_composite
    rules = get_composite("LRP-0").rules(net)
    first = next(i for i, rule in enumerate(rules) if rule is not None)
    out = {str(first): "heatmap"}  # only pass layers below it: its relevance is the heatmap
    for i, rule in enumerate(rules):
        if rule is None:
            j = i + 1
            while j < len(rules) and rules[j] is None:
                j += 1
            out[str(i)] = j if j < len(rules) else "initial"
    return out


def load_reference(path):
    """(meta, arrays) of a reference file, with every ``R.<method>.<i>`` that its aliases
    determine filled in (for the first meta["detail"] images)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    d = meta["detail"]
    for method in meta["methods"]:
        for i in sorted((int(k) for k in meta["aliases"]), reverse=True):
            src = meta["aliases"][str(i)]
            shape = (d,) + tuple(meta["layer_input_shapes"][i])
            if src == "initial":
                R = np.zeros((d, len(arrays["logits"][0])))
                t = arrays["targets"][:d]
                R[np.arange(d), t] = arrays["logits"][np.arange(d), t]
            elif src == "heatmap":
                R = arrays[f"heatmap.{method}"][:d]
            elif f"R.{method}.{src}" in arrays:
                R = arrays[f"R.{method}.{src}"]
            else:
                continue  # the layer above is too big to be stored
            arrays[f"R.{method}.{i}"] = R.reshape(shape)
    return meta, arrays


def make(name, spec):
    import minilrp
    from minilrp import composites

    net, path = load_network(name, spec)
    x, images = model_inputs(net, spec)
    methods = lrp_methods(net)
    detail = min(spec["detail"], len(x))
    out, rules = compute(net, x, None, methods, detail)
    arrays = {"inputs": x}
    if images is not None:
        arrays["images"] = images
    arrays.update(out)
    meta = {
        "what": f"minilrp float64 reference outputs for {name} (tools/make_reference_fixtures.py)",
        "command": f".venv/bin/python tools/make_reference_fixtures.py --models {name}",
        "model": name,
        "weights": spec["weights"],
        "weights_sha256": sha256(path),
        "indices": spec.get("indices"),
        "random_inputs": None if "indices" in spec else {"seed": spec["seed"], "n": spec["random"],
                                                         "how": "numpy default_rng(seed).uniform(0, 1, (n, C, H, W)) "
                                                                "pixels, then net.preprocess"},
        "detail": detail,
        "versions": {"minilrp": minilrp.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "dtype": "float64 (weights loaded with dtype=float64; inputs net.preprocess in float64)",
        "conventions": {
            "target": "the class the network predicts, stored in 'targets' and reused when recomputing",
            "initial_relevance": "target logit times one-hot (net.relevance start='logit')",
            "stabiliser": "denominator z + eps*sign0(z), sign0(0) = +1; where it is exactly 0 the "
                          "relevance is dropped (ledger column 'dropped')",
            "epsilons": "composites (Zennit-named presets, Gamma, AlphaBeta, ZPlus, WSquare, Flat, ZBox): "
                        "eps = 1e-6; preset 'Epsilon': eps = 0.25; 'LRP-0': eps = 0; Montavon: "
                        "eps = 0.25 x RMS of z per example on its middle band",
            "alpha_beta": "alpha - beta = 1 (alpha = 2, beta = 1 unless the method says otherwise)",
            "gamma": "0.25, sign-aware generalised gamma (Zennit 0.5.1)",
            "zbox_bounds": f"the weight file's input_range, per channel, in the network's input space: "
                           f"low = {net.input_low.tolist()}, high = {net.input_high.tolist()}; "
                           "zero-padded by the convolution like x",
            "maxpool": "winner-take-all: relevance follows the gradient, ties split evenly, overlapping "
                       "windows accumulate (method '...-proportional': as a sum pool)",
            "bias": "in the denominator (bias=True): the relevance it absorbs is ledger column 'bias'",
            "relu_flatten": "ReLU passes relevance unchanged, Flatten reshapes it",
            "sensitivity": SA_PARAMS,
        },
        "tolerance": TOLERANCE,
        "methods": {m: rules[m] for m in methods},
        "method_specs": {m: (s if isinstance(s, str) else repr(s)) for m, s in methods.items()},
        "preset_names": list(composites.PRESETS),
        "layers": [repr(layer) for layer in net.layers],
        "layer_input_shapes": [list(s) for s in net.shapes[:-1]],
        "aliases": aliases(net),
        "stored_layers": stored_layers(net),
        "full_max": FULL_MAX,
        "ledger_columns": LEDGER_COLUMNS,
        "fingerprint": "[sum v, sum |v|, sqrt(sum v^2), <v,u1>, <v,u2>, <v,u3>], u_k[j] = "
                       "sin((k + 1) * 0.6180339887 * (j + 1) + k), j = 0.. over the flattened image",
        "layout": __doc__.split("Arrays in each file")[1].split("A fingerprint")[0],
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, indent=1).encode("utf-8"), dtype=np.uint8)
    out_path = FIXTURES / f"minilrp_reference_{name}.npz"
    with open(out_path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return out_path


def main(argv=None):
    ap = argparse.ArgumentParser(description="Regenerate tests/fixtures/minilrp_reference_<model>.npz")
    ap.add_argument("--models", nargs="+", default=None,
                    help=f"default: those of {', '.join(MODELS)} whose weight file exists")
    args = ap.parse_args(argv)
    ensure_synthetic()
    names = args.models or [m for m, s in MODELS.items() if (REPO / s["weights"]).is_file()]
    for name in names:
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        path = make(name, MODELS[name])
        print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size / 1e3:.0f} kB)", file=sys.stderr)


if __name__ == "__main__":
    main()
