#!/usr/bin/env python
"""Quantus' sanity checks on the bundled CNN, for minilrp's cross-check of its own.

A *tool*: it runs in the reference environment (torch 2.13 CPU, Zennit 0.5.1, Quantus 0.6,
``bash ../shared/reference-env/setup.sh``) and never imports minilrp. It builds the bundled
fmnist-cnn in float64 torch (tools/zennit_reference.py: the same weights, Zennit composites, a
tie-splitting max-pool hook so that LRP agrees with minilrp's default), runs

* ``quantus.MPRT`` (cascading, ``layer_order="top_down"``, ``normalise=False``) with Spearman
  (``abs`` False and True) and Quantus' SSIM (``abs=True``; Quantus flattens every map to 1-D
  before calling skimage, so the window slides along the flattened image; its batched ``ssim``
  returns a list that MPRT cannot ``.tolist()``, so it is wrapped in ``np.asarray``),
* ``quantus.RandomLogit`` with Spearman (``abs=False``),
* ``quantus.InputInvariance`` (shift -1) on fmnist-cnn: its first conv pads, and Quantus
  compensates each channel with the *smallest* response of the conv to the constant image,
  which is wrong at the border positions (and inside too when that smallest value comes from
  the border). The logits of Quantus' shifted model are recorded to show it. (On fmnist-mlp
  Quantus stops: its compensation reads ``out_channels`` of the first module, a Flatten.)

for gradient, gradient x input, EpsilonGammaBox and EpsilonAlpha2Beta1, and writes the scores,
the classes Quantus drew and fingerprints of the weights it randomised into
``tests/fixtures/quantus_sanity_reference.npz``; ``tests/test_sanity_quantus.py`` recomputes
the same scores with minilrp.

Quantus re-initialises each layer with ``torch.manual_seed(seed + 1); module.reset_parameters()``
and never restores it (cascading). The test regenerates those weights with torch itself and
checks them against the fingerprints (first values and sum of every randomised parameter), so
the fixture stays small.

    ~/.cache/minilrp-reference-venv/bin/python tools/quantus_sanity_reference.py
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zennit_reference import (REPO, SAMPLES, build_torch_model, explain,  # noqa: E402
                              read_weight_file, sha256, zennit_composite)

DEFAULT_OUT = REPO / "tests" / "fixtures" / "quantus_sanity_reference.npz"
N_IMAGES, SEED, SHIFT = 8, 42, -1.0
METHODS = ("gradient", "gradient_x_input", "EpsilonGammaBox", "EpsilonAlpha2Beta1")
N_FINGERPRINT = 16


def inputs(record, n):
    with np.load(SAMPLES, allow_pickle=False) as f:
        images = f["images"][:n]
    C = record["input_shape"][0]
    norm = record.get("normalization") or {}
    mean = np.asarray(norm.get("mean", [0.0] * C), np.float64).reshape(-1, 1, 1)
    std = np.asarray(norm.get("std", [1.0] * C), np.float64).reshape(-1, 1, 1)
    return (images.astype(np.float64)[:, None] / 255 - mean) / std


def explain_func(method, record, calls):
    """A Quantus explain_func: float64 maps (N, 1, H, W) of ``method`` for any torch model;
    every call records the model's parameters and the targets (for the fingerprints and the
    random-logit classes)."""
    def fn(model, inputs, targets, **kwargs):
        x = np.asarray(inputs, np.float64)
        calls.append(({k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
                      np.asarray(targets).copy()))
        if method == "gradient_x_input":
            _, g = explain(model, None, x, targets, "onehot")
            return x * g
        composite = zennit_composite(method, record, x, tie_split=method != "gradient")
        _, R = explain(model, composite, x, targets, "onehot" if method == "gradient" else "logit")
        return R
    return fn


def run(out_path):
    import quantus
    import torch
    from quantus.functions.similarity_func import correlation_spearman, ssim
    torch.set_num_threads(1)
    out, info = {}, {"seed": SEED, "n_images": N_IMAGES, "methods": list(METHODS), "shift": SHIFT}
    record, arrays = read_weight_file(REPO / "weights" / "fmnist-cnn.npz")
    info["fmnist-cnn sha256"] = sha256(REPO / "weights" / "fmnist-cnn.npz")
    model = build_torch_model(record, arrays)
    x = inputs(record, N_IMAGES)
    with torch.no_grad():
        targets = model(torch.from_numpy(x)).numpy().argmax(1)
    out["inputs"], out["targets"] = x, targets.astype(np.int64)
    original = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    def ssim_array(a, b, batched=False, **kwargs):  # Quantus' batched ssim returns a list, which
        return np.asarray(ssim(a, b, batched=batched, **kwargs))  # its MPRT cannot .tolist()

    configs = {"spearman": (correlation_spearman, False), "spearman_abs": (correlation_spearman, True),
               "ssim_abs": (ssim_array, True)}
    randomised = {}
    for method in METHODS:
        for cname, (sim, use_abs) in configs.items():
            calls = []
            metric = quantus.MPRT(similarity_func=sim, layer_order="top_down", seed=SEED, abs=use_abs,
                                  normalise=False, disable_warnings=True)
            scores = metric(model=model, x_batch=x, y_batch=targets, a_batch=None,
                            explain_func=explain_func(method, record, calls), batch_size=N_IMAGES,
                            device="cpu")
            names = list(scores)
            info["mprt layers"] = names
            out[f"mprt.{method}.{cname}"] = np.array([scores[k] for k in names], np.float64)
            # the parameters every randomised layer had (cascading: unchanged once drawn)
            for params, _ in calls:
                for k, v in params.items():
                    if not np.array_equal(v, original[k]):
                        if k in randomised and not np.array_equal(randomised[k], v):
                            raise SystemExit(f"{k}: Quantus drew different weights in two runs")
                        randomised[k] = v
        calls = []
        metric = quantus.RandomLogit(similarity_func=correlation_spearman, num_classes=10, seed=SEED,
                                     abs=False, normalise=False, disable_warnings=True)
        out[f"logit.{method}.spearman"] = np.asarray(
            metric(model=model, x_batch=x, y_batch=targets, a_batch=None,
                   explain_func=explain_func(method, record, calls), batch_size=N_IMAGES, device="cpu"),
            np.float64)
        others = [t for _, t in calls if not np.array_equal(t, targets)]
        out["logit.others"] = others[-1].astype(np.int64)
    for k, v in randomised.items():
        out[f"fingerprint.{k}"] = np.concatenate([v.reshape(-1)[:N_FINGERPRINT], [v.sum()]])
    info["randomised"] = sorted(randomised)
    # input invariance: booleans per image, and how far Quantus' shifted model moves the logits
    torch.set_default_dtype(torch.float64)  # Quantus' constant image is made in the default dtype
    for name in ("fmnist-cnn",):
        rec, arr = read_weight_file(REPO / "weights" / f"{name}.npz")
        net = build_torch_model(rec, arr)
        xs = inputs(rec, N_IMAGES)
        with torch.no_grad():
            t = net(torch.from_numpy(xs)).numpy().argmax(1)
        for method in ("gradient", "gradient_x_input"):
            metric = quantus.InputInvariance(input_shift=SHIFT, abs=False, normalise=False, disable_warnings=True)
            out[f"invariance.{name}.{method}"] = np.asarray(
                metric(model=net, x_batch=xs, y_batch=t, a_batch=None,
                       explain_func=explain_func(method, rec, []), batch_size=N_IMAGES, device="cpu"), bool)
        wrapped = quantus.helpers.model.pytorch_model.PyTorchModel(net, channel_first=True)
        shifted = wrapped.add_mean_shift_to_first_layer(SHIFT, xs[:1].shape)
        with torch.no_grad():
            change = (shifted(torch.from_numpy(xs + SHIFT)) - net(torch.from_numpy(xs))).abs().max()
        out[f"invariance.{name}.logit_change"] = np.float64(change)
    from importlib.metadata import version
    info["versions"] = {p: version(p) for p in ("quantus", "zennit", "torch", "numpy", "scikit-image", "scipy")}
    out["meta"] = np.frombuffer(json.dumps(info).encode(), np.uint8)
    np.savez_compressed(out_path, **out)
    return out, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    out, info = run(args.out)
    print(json.dumps(info, indent=1))
    for k, v in out.items():
        if k.startswith(("mprt", "logit", "invariance")):
            print(k, np.round(v, 4).tolist() if v.dtype != bool else v.tolist())


if __name__ == "__main__":
    main()
