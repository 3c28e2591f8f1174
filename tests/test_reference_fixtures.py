"""Regression guard: the current engine reproduces the committed float64 reference outputs.

tests/fixtures/minilrp_reference_<model>.npz hold, for a few sample images per model (bundled CNN, MLP,
VGG and a seeded synthetic CNN), the logits, layer outputs, the relevance leaving every layer for
every preset of minilrp.composites.PRESETS plus Flat and proportional max pooling, the ledger sums
and every sensitivity method (see tools/make_reference_fixtures.py for the layout and
conventions, stored in each file's ``meta`` record). Regenerate after an intended change:

    .venv/bin/python tools/make_reference_fixtures.py

Tolerance (float64): arrays agree per image to max|new - ref| <= 1e-9 x max|ref|; fingerprints
to 1e-9 x sum|v| of the array; ledger sums to 1e-9 x the largest |ledger entry| of that image
and method. Float64 rounding alone (summation order, thread count) stays near 1e-15 relative.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import make_reference_fixtures as ref  # noqa: E402

FILES = sorted((REPO / "tests" / "fixtures").glob("minilrp_reference_*.npz"))
RTOL = ref.RTOL


def _meta(path):
    with np.load(path, allow_pickle=False) as f:
        return json.loads(f["meta"].tobytes().decode("utf-8"))


def _cases():
    """(path, group, fast): LRP methods on both the fast and the reference path."""
    out = []
    for path in FILES:
        meta = _meta(path)
        for group in ["forward", "sensitivity"]:
            out.append(pytest.param(path, group, True, id=f"{meta['model']}-{group}"))
        for group in meta["methods"]:
            for fast in (True, False):
                out.append(pytest.param(path, group, fast, id=f"{meta['model']}-{group}-{'fast' if fast else 'reference'}"))
    return out


_NETS = {}


def _setup(path):
    """(meta, stored arrays, float64 net) for a fixture file, cached per file."""
    if path not in _NETS:
        with np.load(path, allow_pickle=False) as f:  # plain arrays only: no pickles
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        spec = ref.MODELS[meta["model"]]
        net, wpath = ref.load_network(meta["model"], spec)
        if ref.sha256(wpath) != meta["weights_sha256"]:
            pytest.fail(f"{meta['weights']} is not the weight file {path.name} was made from; if the "
                        f"change is intended, regenerate: {meta['command']}")
        _NETS[path] = (meta, arrays, net)
    return _NETS[path]


def assert_array(name, new, old):
    """Per image (axis 0): max|new - old| <= RTOL * max|old| (old all 0: new must be 0)."""
    new = np.asarray(new, np.float64).reshape(len(old), -1)
    old = np.asarray(old, np.float64).reshape(len(old), -1)
    assert new.shape == old.shape, f"{name}: shape {new.shape} != {old.shape}"
    assert np.all(np.isfinite(new)), f"{name}: NaN/inf"
    err = np.abs(new - old).max(1)
    scale = np.abs(old).max(1)
    bad = err > RTOL * scale
    assert not bad.any(), (f"{name}: image {np.flatnonzero(bad)[0]}: max|new - ref| = {err[bad][0]:.3g} "
                           f"> {RTOL:g} x max|ref| = {scale[bad][0]:.3g}")


def assert_fingerprint(name, new, old):
    """(..., N, 6) fingerprints: each entry within RTOL x sum|v| (column 1) of its array."""
    tol = RTOL * np.abs(old[..., 1:2]) + 1e-300
    bad = np.abs(new - old) > tol
    assert not bad.any(), f"{name}: fingerprint entries {np.argwhere(bad)[:3].tolist()} differ " \
                          f"(max excess {np.max(np.abs(new - old) - tol):.3g})"


def assert_ledger(name, new, old):
    """(L, 7, N): per image within RTOL x the largest |entry| of that image."""
    scale = np.abs(old).max(axis=(0, 1))
    bad = np.abs(new - old) > RTOL * scale
    assert not bad.any(), f"{name}: ledger entries (layer, column, image) {np.argwhere(bad)[:3].tolist()} differ"


def test_fixtures_exist_and_cover_every_preset():
    from minilrp import PRESETS
    names = {_meta(p)["model"] for p in FILES}
    assert "synthetic-cnn" in names, "tests/fixtures/minilrp_reference_synthetic-cnn.npz is missing"
    bundled = {m for m, s in ref.MODELS.items() if "indices" in s and (REPO / s["weights"]).is_file()}
    assert bundled <= names, f"no reference fixtures for {sorted(bundled - names)}: run " \
                             ".venv/bin/python tools/make_reference_fixtures.py"
    for p in FILES:
        missing = set(PRESETS) - set(_meta(p)["methods"])
        assert not missing, f"{p.name} lacks presets {sorted(missing)}: regenerate the fixtures"


@pytest.mark.parametrize("path,group,fast", _cases())
def test_reference(path, group, fast):
    meta, arrays, net = _setup(path)
    x = arrays["inputs"]
    if group == "forward":
        if meta["indices"] is not None:  # the bundled sample images and preprocessing
            import minilrp
            images = minilrp.load_samples()[0][meta["indices"]]
            np.testing.assert_array_equal(images, arrays["images"])
            assert_array("inputs", net.preprocess(images), x)
        else:
            rng = np.random.default_rng(meta["random_inputs"]["seed"])
            pixels = rng.uniform(0, 1, (meta["random_inputs"]["n"],) + net.input_shape)
            assert_array("inputs", net.preprocess(pixels), x)
        new, _ = ref.compute(net, x, arrays["targets"], {}, meta["detail"], sa=False)
        np.testing.assert_array_equal(net.forward(x).argmax(1), arrays["targets"])
        for key in [k for k in arrays if k.startswith(("act.", "logits"))]:
            assert_array(key, new[key], arrays[key])
        for key in [k for k in arrays if k.startswith("actfp.")]:
            assert_fingerprint(key, new[key], arrays[key])
        return
    if group == "sensitivity":
        new, _ = ref.compute(net, x, arrays["targets"], {}, meta["detail"])
        for key in [k for k in arrays if k.startswith("sa.")]:
            assert_array(key, new[key], arrays[key])
        return
    methods = ref.lrp_methods(net)
    assert group in methods, f"method {group!r} no longer exists: regenerate the fixtures"
    new, rules = ref.compute(net, x, arrays["targets"], {group: methods[group]}, meta["detail"], sa=False, fast=fast)
    assert rules[group] == meta["methods"][group], \
        f"{group}: the rule of each layer changed:\n now {rules[group]}\n was {meta['methods'][group]}"
    assert_array(f"heatmap.{group}", new[f"heatmap.{group}"], arrays[f"heatmap.{group}"])
    stored = [k for k in arrays if k.startswith(f"R.{group}.")]
    assert len(stored) == len(meta["stored_layers"])
    for key in stored:
        assert_array(key, new[key], arrays[key])
    assert_fingerprint(f"Rfp.{group}", new[f"Rfp.{group}"], arrays[f"Rfp.{group}"])
    assert_ledger(f"ledger.{group}", new[f"ledger.{group}"], arrays[f"ledger.{group}"])


def test_load_reference_resolves_aliases():
    path = next(p for p in FILES if _meta(p)["model"] == "synthetic-cnn")
    meta, arrays = ref.load_reference(path)
    meta_, _, net = _setup(path)
    d = meta["detail"]
    net.relevance(arrays["inputs"][:d], "EpsilonPlus", target=arrays["targets"][:d], keep=True)
    for row in net.ledger.rows:
        assert_array(f"R.EpsilonPlus.{row['index']}", row["relevance"], arrays[f"R.EpsilonPlus.{row['index']}"])
