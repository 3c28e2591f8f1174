"""minilrp agrees with Zennit 0.5.1 (LRP) and torch autograd (gradients), an independent
implementation, to max relative error <= 1e-5 in float64.

The Zennit side is the committed tests/fixtures/zennit_reference.npz, written by
``~/.cache/minilrp-reference-venv/bin/python tools/zennit_reference.py``, so these tests need
neither torch nor zennit; ``test_live_zennit`` regenerates it when both are importable.
``.venv/bin/python tools/agreement_report.py`` prints the table.

Error of one image: max|minilrp - zennit| / max|zennit|; the gate is its maximum over images.

Two semantic differences are real, understood, and tested as such rather than hidden by a
looser tolerance (details in tools/agreement_report.py):

1. Max pooling: stock Zennit sends a window's relevance to its first maximum (PyTorch's
   max_pool2d backward); minilrp's WinnerTakeAll splits ties evenly. Ties carry relevance
   wherever a window's maxima are equal and relevance does not vanish with the activation
   (Flat/WSquare on every layer; z^B and Flat first layers over blank background, where a
   conv's outputs all equal its bias). So each method is gated twice, each time with equal
   semantics on both sides: minilrp with first-maximum routing vs stock Zennit, and minilrp's
   default vs Zennit with a tie-splitting max-pool hook (tools/zennit_reference.py).
   minilrp offers Zennit's routing as WinnerTakeAll(ties="first").
2. Single rules on AvgPool2d (synthetic network only; the bundled models have none): Zennit's
   rules modify *parameters*, and AvgPool2d has none, so its Gamma/AlphaBeta/ZPlus act there
   as Epsilon(1e-6) (as minilrp's composites give average pools) and WSquare/Flat as Flat
   with eps x K^2. WSquare/Flat are gated with Zennit's effective rule on minilrp's average
   pools; test_avgpool_gets_epsilon_like_zennit pins the rest.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import agreement_report as ar  # noqa: E402

REF = ar.DEFAULT_REF
GATE = ar.GATE  # 1e-5


def _meta():
    with np.load(REF, allow_pickle=False) as f:
        return json.loads(f["meta"].tobytes().decode("utf-8"))


def _cases():
    if not REF.is_file():
        return [pytest.param(None, None, id="missing")]
    return [pytest.param(model, method, id=f"{model}-{method}")
            for model, info in _meta()["models"].items() for method in info["methods"]]


_ROWS = {}


def _rows(model, fast=True):
    """The comparison rows of a model, on minilrp's fast path or its reference path."""
    if (model, fast) not in _ROWS:
        _, rows = ar.compare(REF, [model], fast=fast)
        _ROWS[model, fast] = {r["method"]: r for r in rows}
    return _ROWS[model, fast]


def test_reference_file_covers_the_bundled_models():
    assert REF.is_file(), f"{REF} missing: run tools/zennit_reference.py in the reference venv"
    meta = _meta()
    assert meta["versions"]["zennit"] == "0.5.1"
    with np.load(REF, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
    import minilrp
    for name in minilrp.available_models():
        assert name in meta["models"], f"no Zennit reference for bundled model {name}: regenerate it"
    for name, info in meta["models"].items():
        assert set(info["methods"]) == set(meta["methods"]), name


@pytest.mark.parametrize("model", sorted(_meta()["models"]) if REF.is_file() else [])
def test_forward_agrees_with_torch(model):
    row = _rows(model)["logits (forward)"]
    assert row["argmax_agrees"], f"{model}: minilrp and torch predict different classes"
    assert row["stock"][0].max() <= 1e-12, f"{model}: logits differ by {row['stock'][0].max():.3g} (relative)"


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("model,method", _cases())
def test_agrees_with_zennit(model, method, fast):
    assert model is not None, "zennit_reference.npz missing"
    row = _rows(model, fast)[method]
    errs = {k: row[k][0].max() for k in ("stock", "first_max", "tie_split") if row[k] is not None}
    gated = ar.consistent_errors(row)
    assert max(gated) <= GATE, f"{model} {method}: max relative error vs Zennit {errs} > {GATE:g}"
    if not row["avgpool"] and row["first_max"] is None:
        assert errs["stock"] <= GATE  # no pooling semantics involved: the plain comparison


def test_avgpool_gets_epsilon_like_zennit():
    """Composites give average pools Epsilon (fixed positive weights: alpha-beta there would
    keep alpha x the relevance, a rule meant for learned weights); Zennit leaves the
    parameter-less pool unmodified, i.e. Epsilon too, so single-rule AlphaBeta agrees."""
    rows = _rows("synthetic-cnn")
    assert rows["AlphaBeta"]["stock"][0].max() <= GATE
    from minilrp import AvgPool2d
    from minilrp import AlphaBeta, Epsilon
    import minilrp
    net = minilrp.load(REPO / "tests" / "fixtures" / "synthetic_cnn.npz", dtype=np.float64)
    pool = next(layer for layer in net.layers if isinstance(layer, AvgPool2d))
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (2,) + net.shapes[net.layers.index(pool)])
    out = pool.forward(a)
    R = rng.uniform(0, 1, out.shape)
    R_ab, shares = AlphaBeta(2, 1).relevance(pool, a, R)
    R_eps, _ = Epsilon(1e-6).relevance(pool, a, R)
    np.testing.assert_allclose(R_ab, 2 * R_eps, rtol=1e-9)  # why composites avoid it


def test_live_zennit():
    """Regenerate the Zennit side now and compare (needs torch and zennit in this interpreter)."""
    pytest.importorskip("torch")
    pytest.importorskip("zennit")
    import zennit_reference as zr
    meta = _meta()
    with np.load(REF, allow_pickle=False) as f:
        stored = {k: f[k] for k in f.files}
    for name, info in meta["models"].items():
        spec = zr.MODELS[name]
        live, live_info = zr.compute_model(name, spec, info["methods"])
        assert live_info["weights_sha256"] == info["weights_sha256"]
        net = ar.load_model(name, info)
        x, t = live["inputs"], live["targets"]
        np.testing.assert_array_equal(x, stored[f"{name}.inputs"])
        for method in info["methods"]:
            ref = live[f"heatmap.{method}"]
            # the committed file is what this environment computes (same torch/zennit)
            rel_file = ar.errors(ref, stored[f"{name}.heatmap.{method}"])[0].max()
            assert rel_file <= 1e-12, f"{name} {method}: live Zennit differs from the committed file by {rel_file:.3g}"
            avg = method in ar.ZENNIT_AVGPOOL and any(layer.kind == "AvgPool2d" for layer in net.layers)
            has_max = any(layer.kind == "MaxPool2d" for layer in net.layers)
            mine = ar.run_minilrp(net, x, t, method, first_max=has_max, zennit_avgpool=avg)
            rel = ar.errors(mine, ref)[0].max()
            assert rel <= GATE, f"{name} {method}: minilrp vs live Zennit {rel:.3g}"
            if has_max and method != "gradient":
                mine = ar.run_minilrp(net, x, t, method, first_max=False, zennit_avgpool=avg)
                rel = ar.errors(mine, live[f"heatmap_tiesplit.{method}"])[0].max()
                assert rel <= GATE, f"{name} {method} (ties split): minilrp vs live Zennit {rel:.3g}"
