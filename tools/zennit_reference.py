#!/usr/bin/env python
"""Independent LRP / gradient references from Zennit 0.5.1 + PyTorch, for minilrp's cross-check.

This is a *tool*: it runs in the reference environment (torch 2.13 CPU + zennit 0.5.1, built by
``bash ../shared/reference-env/setup.sh``), never in minilrp's runtime. It does NOT import
minilrp: it reads minilrp weight files with numpy alone (the format of minilrp/io.py: a JSON
record as uint8 bytes in ``architecture`` plus ``layers.<i>.weight`` / ``layers.<i>.bias``),
builds the same network as a ``torch.nn.Sequential`` in float64 (``model.double()``) and asks
Zennit for the explanations. The result is committed as ``tests/fixtures/zennit_reference.npz``;
``tests/test_zennit_agreement.py`` compares minilrp to it without torch or zennit, and
``tools/agreement_report.py`` prints the agreement table.

    ~/.cache/minilrp-reference-venv/bin/python tools/zennit_reference.py          # all models
    ~/.cache/minilrp-reference-venv/bin/python tools/zennit_reference.py --models synthetic-cnn

Conventions, identical on both sides (also stored in the file's ``meta`` record):

* float64 throughout; torch uses 1 thread (``--threads``) so the run is light and repeatable.
* Target = the class torch predicts; initial relevance = target logit x one-hot, passed to
  Zennit as the output gradient (``attr_output=lambda out: out * onehot``, so the logit is
  torch's own). The ``gradient`` entry is plain autograd of the target logit (one-hot output
  gradient, no composite).
* Stabiliser: Zennit's ``z + eps * sign(z)`` with sign(0) = +1 (minilrp's sign0). eps = 1e-6 in
  every composite; "Epsilon" is eps = 0.25 on both sides. LRP-0 is eps = 0 on both sides:
  minilrp's ``Epsilon(0.0)`` against ``zennit.rules.Epsilon(epsilon=lrp0_stabilizer)``, which
  leaves every denominator unchanged except an exact 0, set to 1. Plain ``Epsilon(epsilon=0.0)``
  divides 0 by 0 there (NaN over the whole heatmap) where minilrp drops that relevance; the two
  agree exactly whenever the relevance reaching a z = 0 unit is 0 (always the case for a unit
  whose input activations are all 0: an average pool over dead ReLUs, a bias-free conv over a
  blank patch), and minilrp's ledger column "dropped" shows any case where it is not.
* z^B bounds (ZBox): the weight file's ``input_range`` (per channel, in the network's input
  space), passed to Zennit as float64 tensors shaped like the input batch.
* Single-rule methods (LRP-0, Epsilon, Gamma, AlphaBeta, ZPlus, WSquare, Flat) put the rule on
  every Conv2d, Linear *and* AvgPool2d, as minilrp's single-rule composites do; ReLU gets
  ``Pass``, Flatten the plain gradient.
* Max pooling: stock Zennit has no max-pool rule, so the gradient routes each window's
  relevance to its first maximum (PyTorch's max_pool2d backward): ``heatmap.<method>``. minilrp
  splits ties evenly, and ties do carry relevance on Fashion-MNIST (blank background and
  uniform pixel runs make bit-identical conv outputs), so for networks with max pooling the
  file also holds ``heatmap_tiesplit.<method>``: the same composite plus
  :func:`tie_split_maxpool`, an independent torch implementation of minilrp's tie splitting.

Output arrays, per model M: ``M.inputs`` (float64 network inputs), ``M.images`` (uint8, bundled
models), ``M.targets``, ``M.logits`` (torch), ``M.heatmap.<method>``, ``M.heatmap_tiesplit.<method>``;
and ``meta``: a JSON record (uint8 bytes) with versions, conventions, weight-file SHA-256s.
* The Zennit-named composites are Zennit's own classes with their default epsilon and
  stabiliser (1e-6) and gamma (0.25); Montavon is built from Zennit rules by layer name
  (z^B on the first linear layer, Gamma(0.25) on the lower half of the other convs,
  Epsilon(0.25 x RMS of z, ``Stabilizer(norm_scale=True)``) on the upper convs and hidden dense
  layers, Epsilon(0) on the output layer), the definition of minilrp's ``DepthBanded``.
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
DEFAULT_OUT = REPO / "tests" / "fixtures" / "zennit_reference.npz"
SAMPLES = REPO / "weights" / "fashion_mnist_test_1000.npz"
SYNTHETIC = REPO / "tests" / "fixtures" / "synthetic_cnn.npz"

# Which images: indices into weights/fashion_mnist_test_1000.npz (the first three test images,
# as in tests/fixtures/minilrp_reference_fmnist-cnn.npz), or for the synthetic model a seeded uniform
# draw in pixel space.
MODELS = {
    "fmnist-mlp": {"weights": "weights/fmnist-mlp.npz", "indices": [0, 1, 2]},
    "fmnist-cnn": {"weights": "weights/fmnist-cnn.npz", "indices": [0, 1, 2]},
    "fmnist-vgg": {"weights": "weights/fmnist-vgg.npz", "indices": [0, 1, 2]},
    "synthetic-cnn": {"weights": "tests/fixtures/synthetic_cnn.npz", "random": 2, "seed": 7},
}

# name -> what it is. minilrp's side of each name: tools/agreement_report.py (MINILRP_SPECS).
METHODS = {
    "LRP-0": "Epsilon(eps=0) on every Conv2d/Linear/AvgPool2d (exact-0 denominators -> 1, see lrp0_stabilizer)",
    "Epsilon": "Epsilon(eps=0.25) on every Conv2d/Linear/AvgPool2d",
    "Gamma": "Gamma(gamma=0.25, stabilizer=1e-6) on every Conv2d/Linear/AvgPool2d",
    "AlphaBeta": "AlphaBeta(alpha=2, beta=1, stabilizer=1e-6) on every Conv2d/Linear/AvgPool2d",
    "ZPlus": "ZPlus(stabilizer=1e-6) on every Conv2d/Linear/AvgPool2d",
    "WSquare": "WSquare(stabilizer=1e-6) on every Conv2d/Linear/AvgPool2d",
    "Flat": "Flat(stabilizer=1e-6) on every Conv2d/Linear/AvgPool2d",
    "EpsilonGammaBox": "zennit.composites.EpsilonGammaBox(low, high) (eps 1e-6, gamma 0.25)",
    "EpsilonPlus": "zennit.composites.EpsilonPlus() (eps 1e-6)",
    "EpsilonPlusFlat": "zennit.composites.EpsilonPlusFlat() (eps 1e-6)",
    "EpsilonAlpha2Beta1": "zennit.composites.EpsilonAlpha2Beta1() (eps 1e-6)",
    "EpsilonAlpha2Beta1Flat": "zennit.composites.EpsilonAlpha2Beta1Flat() (eps 1e-6)",
    "Montavon": "by layer: ZBox first linear, Gamma(0.25) lower convs, Epsilon(0.25*RMS(z)) "
                "upper convs + hidden dense, Epsilon(0) output",
    "gradient": "torch autograd: d logit_target / d x (one-hot output gradient, no composite)",
}


# ------------------------------------------------------------------------------ weight files
def read_weight_file(path):
    """(record, arrays) of a minilrp .npz, with numpy only (allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    record = json.loads(arrays.pop("architecture").tobytes().decode("utf-8"))
    if record.get("format") != "minilrp" or record.get("format_version") != 1:
        raise SystemExit(f"{path}: not a minilrp format-1 weight file")
    return record, arrays


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_torch_model(record, arrays):
    """The record's layers as a float64 torch.nn.Sequential (module names "0", "1", ...)."""
    import torch
    from torch import nn

    mods = []
    for i, spec in enumerate(record["layers"]):
        kind = spec["type"]
        if kind == "Conv2d":
            m = nn.Conv2d(spec["in_channels"], spec["out_channels"], spec["kernel_size"],
                          stride=spec["stride"], padding=spec["padding"], bias=spec.get("bias", True))
        elif kind == "Dense":
            m = nn.Linear(spec["in_features"], spec["out_features"], bias=spec.get("bias", True))
        elif kind == "ReLU":
            m = nn.ReLU()
        elif kind == "MaxPool2d":
            m = nn.MaxPool2d(spec["kernel_size"], stride=spec["stride"])
        elif kind == "AvgPool2d":
            m = nn.AvgPool2d(spec["kernel_size"], stride=spec["stride"], padding=spec.get("padding", 0),
                             count_include_pad=True)
        elif kind == "Flatten":
            m = nn.Flatten()
        else:
            raise SystemExit(f"layer {i}: no torch counterpart for {kind!r}")
        m = m.double()  # float64 parameters *before* the copy: never round through float32
        with torch.no_grad():
            for pname in ("weight", "bias"):
                key = f"layers.{i}.{pname}"
                if key in arrays:
                    src = torch.from_numpy(arrays[key].astype(np.float64))
                    getattr(m, pname).copy_(src)
                    assert getattr(m, pname).dtype == torch.float64
        mods.append(m)
    model = nn.Sequential(*mods).double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def model_inputs(name, record, spec):
    """(float64 network inputs (N, C, H, W), raw uint8 images or None, indices or None)."""
    C, H, W = record["input_shape"]
    norm = record.get("normalization") or {}
    mean = np.asarray(norm.get("mean", [0.0] * C), np.float64).reshape(-1, 1, 1)
    std = np.asarray(norm.get("std", [1.0] * C), np.float64).reshape(-1, 1, 1)
    if "indices" in spec:
        with np.load(SAMPLES, allow_pickle=False) as f:
            images = f["images"][spec["indices"]]
        pixels = images.astype(np.float64)[:, None] / 255  # minilrp's preprocess, in float64
        return (pixels - mean) / std, images, list(spec["indices"])
    rng = np.random.default_rng(spec["seed"])
    pixels = rng.uniform(0, 1, (spec["random"], C, H, W))
    return (pixels - mean) / std, None, None


def input_bounds(record, x):
    """z^B low/high: the record's per-channel input_range, broadcast like the input batch."""
    C = record["input_shape"][0]
    rng = record.get("input_range")
    if rng is None:  # minilrp's default: the image of [0, 1] under the normalisation
        norm = record.get("normalization") or {}
        mean = np.asarray(norm.get("mean", [0.0] * C), np.float64)
        std = np.asarray(norm.get("std", [1.0] * C), np.float64)
        low, high = (0 - mean) / std, (1 - mean) / std
    else:
        low, high = np.asarray(rng["low"], np.float64), np.asarray(rng["high"], np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    low = np.broadcast_to(np.broadcast_to(low, (C,)).reshape(shape), x.shape).copy()
    high = np.broadcast_to(np.broadcast_to(high, (C,)).reshape(shape), x.shape).copy()
    return low, high


# ------------------------------------------------------------------------------ composites
def lrp0_stabilizer(z):
    """LRP-0's denominator: z itself, except an exact 0 -> 1 (so 0/0 gives 0, not NaN)."""
    return z + (z == 0).to(z)


def linear_indices(record):
    return [i for i, s in enumerate(record["layers"]) if s["type"] in ("Conv2d", "Dense")]


def montavon_rules(record, low, high):
    """{module name: rule} for the depth-banded composite of Montavon et al. (2019)."""
    from zennit.core import Stabilizer
    from zennit.rules import Epsilon, Gamma, ZBox

    types = [s["type"] for s in record["layers"]]
    lin = linear_indices(record)
    convs = [i for i in lin[1:] if types[i] == "Conv2d"]
    lower = set(convs[:(len(convs) + 1) // 2])
    middle = Epsilon(epsilon=Stabilizer(epsilon=0.25, norm_scale=True))
    rules = {i: (Gamma(gamma=0.25) if i in lower else middle) for i in lin[1:-1]}
    if lin[0] != 0 and any(t != "Flatten" for t in types[:lin[0]]):
        raise SystemExit("Montavon: the first linear layer is not fed by the input")
    rules[lin[0]] = ZBox(low=low, high=high)
    if len(lin) > 1:
        rules[lin[-1]] = Epsilon(epsilon=lrp0_stabilizer)
    # minilrp's default rule for any other linear layer (AvgPool2d) is the middle band
    for i, t in enumerate(types):
        if t == "AvgPool2d":
            rules[i] = middle
    return rules


def tie_split_maxpool():
    """A Zennit hook for MaxPool2d with minilrp's default semantics, written independently in
    torch (unfold/fold): each window's relevance split evenly over its tied maxima,
    overlapping windows accumulating. Stock Zennit has no max-pool rule (the gradient sends
    everything to the first maximum)."""
    import torch.nn.functional as F
    from zennit.core import Hook

    class TieSplitMaxPool(Hook):
        def forward(self, module, input, output):
            self.stored_tensors["input"] = input

        def backward(self, module, grad_input, grad_output):
            a = self.stored_tensors["input"][0]
            R = grad_output[0]
            N, C, H, W = a.shape
            K, S = module.kernel_size, module.stride
            out = F.max_pool2d(a, K, S)
            cols = F.unfold(a.reshape(N * C, 1, H, W), K, stride=S)       # (N*C, K*K, windows)
            tied = (cols == out.reshape(N * C, 1, -1)).to(a)
            share = tied * (R.reshape(N * C, 1, -1) / tied.sum(1, keepdim=True))
            return (F.fold(share, (H, W), K, stride=S).reshape(N, C, H, W),)

        def copy(self):
            return TieSplitMaxPool()

    return TieSplitMaxPool()


def zennit_composite(method, record, x, tie_split=False):
    """The Zennit composite for ``method`` (None for the plain gradient). ``tie_split``: add
    :func:`tie_split_maxpool` for the max pools (else they keep the plain gradient)."""
    import torch
    from zennit import composites as zc
    from zennit import rules as zr
    from zennit.types import Activation, AvgPool, Convolution

    if method == "gradient":
        return None
    extra = [(torch.nn.MaxPool2d, tie_split_maxpool())] if tie_split else []
    low, high = (torch.from_numpy(b) for b in input_bounds(record, x))
    single = {
        "LRP-0": lambda: zr.Epsilon(epsilon=lrp0_stabilizer),
        "Epsilon": lambda: zr.Epsilon(epsilon=0.25),
        "Gamma": lambda: zr.Gamma(gamma=0.25, stabilizer=1e-6),
        "AlphaBeta": lambda: zr.AlphaBeta(alpha=2.0, beta=1.0, stabilizer=1e-6),
        "ZPlus": lambda: zr.ZPlus(stabilizer=1e-6),
        "WSquare": lambda: zr.WSquare(stabilizer=1e-6),
        "Flat": lambda: zr.Flat(stabilizer=1e-6),
    }
    if method in single:
        rule = single[method]()
        return zc.LayerMapComposite(layer_map=extra + [
            (Activation, zr.Pass()),
            (Convolution, rule), (torch.nn.Linear, rule), (AvgPool, rule)])
    if method == "EpsilonGammaBox":
        return zc.EpsilonGammaBox(low=low, high=high, layer_map=extra)
    if method == "EpsilonPlus":
        return zc.EpsilonPlus(layer_map=extra)
    if method == "EpsilonPlusFlat":
        return zc.EpsilonPlusFlat(layer_map=extra)
    if method == "EpsilonAlpha2Beta1":
        return zc.EpsilonAlpha2Beta1(layer_map=extra)
    if method == "EpsilonAlpha2Beta1Flat":
        return zc.EpsilonAlpha2Beta1Flat(layer_map=extra)
    if method == "Montavon":
        first = linear_indices(record)[0]
        if any(s["type"] == "Flatten" for s in record["layers"][:first]):  # MLP: bounds flattened like its input
            low, high = low.reshape(len(x), -1), high.reshape(len(x), -1)
        by_index = montavon_rules(record, low, high)
        return zc.MixedComposite([
            zc.NameMapComposite(name_map=[((str(i),), rule) for i, rule in by_index.items()]),
            zc.LayerMapComposite(layer_map=extra + [(Activation, zr.Pass())]),
        ])
    raise SystemExit(f"unknown method {method!r}")


def explain(model, composite, x, targets, start="logit"):
    """(logits, heatmap) with Zennit: the output gradient is target logit x one-hot."""
    import torch
    from zennit.attribution import Gradient

    xt = torch.from_numpy(np.ascontiguousarray(x, np.float64)).clone().requires_grad_(True)
    onehot = torch.zeros(len(x), model[-1].out_features, dtype=torch.float64)
    onehot[torch.arange(len(x)), torch.as_tensor(targets)] = 1.0
    if start == "logit":
        def attr_output(out):
            return out.detach() * onehot
    else:
        def attr_output(out):
            return onehot
    with Gradient(model=model, composite=composite) as attributor:
        out, R = attributor(xt, attr_output)
    return out.detach().numpy().copy(), R.detach().numpy().copy()


def compute_model(name, spec, methods=None):
    """Everything stored for one model: inputs, targets, logits, heatmaps by method."""
    import torch

    path = REPO / spec["weights"]
    record, arrays = read_weight_file(path)
    model = build_torch_model(record, arrays)
    x, images, indices = model_inputs(name, record, spec)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    targets = logits.argmax(axis=1)
    out = {"inputs": x, "targets": targets.astype(np.int64), "logits": logits}
    if images is not None:
        out["images"] = images
    # the output gradient of the plain-gradient entry is one-hot (the gradient of the logit)
    for method in (methods or METHODS):
        composite = zennit_composite(method, record, x)
        start = "onehot" if method == "gradient" else "logit"
        logits_m, R = explain(model, composite, x, targets, start)
        if not np.array_equal(logits_m, logits):
            # the hooked forward must reproduce the plain forward bit for bit
            raise SystemExit(f"{name} {method}: Zennit's hooked forward changed the logits")
        if not np.all(np.isfinite(R)):
            raise SystemExit(f"{name} {method}: Zennit returned NaN/inf")
        out[f"heatmap.{method}"] = R
        if composite is not None and "MaxPool2d" in [s["type"] for s in record["layers"]]:
            _, R2 = explain(model, zennit_composite(method, record, x, tie_split=True), x, targets, start)
            if not np.all(np.isfinite(R2)):
                raise SystemExit(f"{name} {method} (ties split): NaN/inf")
            out[f"heatmap_tiesplit.{method}"] = R2
    info = {"weights": spec["weights"], "weights_sha256": sha256(path), "indices": indices,
            "seed": spec.get("seed"), "n": int(len(x)), "layers": [s["type"] for s in record["layers"]],
            "input_range": record.get("input_range"), "methods": list(methods or METHODS)}
    return out, info


def versions():
    import torch
    import zennit  # noqa: F401
    from importlib.metadata import version
    return {"zennit": version("zennit"), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=None,
                    help=f"models to include (default: those of {', '.join(MODELS)} whose weight file exists)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    names = args.models or [m for m, s in MODELS.items() if (REPO / s["weights"]).is_file()]
    arrays, meta_models = {}, {}
    for name in names:
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        if not (REPO / MODELS[name]["weights"]).is_file():
            raise SystemExit(f"{MODELS[name]['weights']} not found" +
                             (" (run tools/make_reference_fixtures.py first)" if name == "synthetic-cnn" else ""))
        out, info = compute_model(name, MODELS[name])
        for k, v in out.items():
            arrays[f"{name}.{k}"] = v
        meta_models[name] = info
        print(f"{name}: {info['n']} inputs, {len(info['methods'])} methods", file=sys.stderr)
    meta = {
        "what": "Zennit 0.5.1 / torch autograd references for minilrp (tools/zennit_reference.py)",
        "command": "~/.cache/minilrp-reference-venv/bin/python tools/zennit_reference.py",
        "versions": versions(),
        "dtype": "float64",
        "initial_relevance": "target logit x one-hot, passed as Zennit's output gradient; "
                             "target = torch's predicted class; 'gradient' uses one-hot",
        "stabiliser": "z + eps*sign0(z), sign0(0)=+1; eps=1e-6 in composites, 0.25 for Epsilon, 0 for LRP-0 "
                      "(Zennit: denominator z, exact 0 -> 1, so 0/0 = 0; minilrp drops relevance at z = 0)",
        "zbox_bounds": "the weight file's input_range per channel, as tensors shaped like the input",
        "maxpool": "heatmap.<method>: stock Zennit, no max-pool rule (the gradient routes each window's "
                   "relevance to its first argmax); heatmap_tiesplit.<method> (networks with max pooling): "
                   "the same with tie_split_maxpool() on MaxPool2d (ties split evenly, minilrp's default)",
        "avgpool": "single-rule methods apply the rule to AvgPool2d; Zennit composites use Norm (= Epsilon 1e-6)",
        "methods": METHODS,
        "models": meta_models,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, indent=1).encode("utf-8"), dtype=np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        np.savez_compressed(f, **arrays)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB)", file=sys.stderr)


if __name__ == "__main__":
    main()
