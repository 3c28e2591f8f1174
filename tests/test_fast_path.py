"""The fast path (minilrp/fast/) is held equal to the readable reference rules
(minilrp/explain/rules.py): every rule and preset, every layer type a rule serves (Dense,
Conv2d with stride and padding, AvgPool2d, non-overlapping and overlapping max pools), signed
and non-negative inputs, float64 to 1e-12 and float32 to 1e-5 (relative to the largest value
compared), the heatmap, every layer's relevance and every ledger column."""
import numpy as np
import pytest

import minilrp
from minilrp import (AlphaBeta, AvgPool2d, Composite, Conv2d, Dense, Epsilon, Flat, Flatten, Gamma,
                     MaxPool2d, Network, Proportional, Rule, WinnerTakeAll, WSquare, ZBox)
from test_lrp import images, relu_net

TOL = {np.float64: 1e-12, np.float32: 1e-5}

LINEAR_RULES = [Epsilon(0.0), Epsilon(0.3), Epsilon(1e-6, bias=False), Epsilon(0.25, relative=True),
                Gamma(0.25), Gamma(1.0, epsilon=0.0), Gamma(0.5, bias=False), AlphaBeta(2, 1), AlphaBeta(1, 0),
                AlphaBeta(3, 2, bias=False), ZBox(-4.0, 4.5), ZBox([-4.0, -3.5], [4.5, 5.0]), WSquare(),
                WSquare(bias=False), Flat()]
POOL_RULES = [WinnerTakeAll(), WinnerTakeAll(ties="first"), Proportional(), Proportional(0.0)]


def layer_cases(rng):
    """(layer, input shape per example): the layer types the rules serve."""
    yield Dense(8, 5, weight=rng.standard_normal((5, 8)), bias=rng.standard_normal(5)), (2, 2, 2)
    yield Conv2d(2, 3, 3, stride=2, padding=1, weight=rng.standard_normal((3, 2, 3, 3)), bias=rng.standard_normal(3)), (2, 7, 6)
    yield Conv2d(2, 4, 3, stride=1, padding=1, weight=rng.standard_normal((4, 2, 3, 3)), bias=rng.standard_normal(4)), (2, 5, 6)
    yield Conv2d(2, 2, 2, stride=1, padding=0, weight=rng.standard_normal((2, 2, 2, 2)), use_bias=False), (2, 5, 4)
    yield AvgPool2d(3, 2, 1), (2, 6, 5)


def pool_cases():
    yield MaxPool2d(2), (2, 6, 7)     # non-overlapping (a row and column left over)
    yield MaxPool2d(3, 1), (2, 6, 5)  # overlapping
    yield MaxPool2d(3, 2), (2, 7, 7)  # overlapping, strided


def net_around(layer, shape, rng, dtype):
    """input -> layer -> Flatten -> Dense: the layer under test feeds a dense head."""
    inner = (int(np.prod(shape)),) if isinstance(layer, Dense) else shape
    out = int(np.prod(layer.output_shape(inner)))
    head = Dense(out, 3, weight=rng.standard_normal((3, out)), bias=rng.standard_normal(3))
    layers = [Flatten(), layer, head] if isinstance(layer, Dense) else [layer, Flatten(), head]
    return Network(layers, shape, input_range=(-4.0, 4.5)).astype(dtype)


def inputs(rng, shape, signed, dtype, n=3):
    x = rng.standard_normal((n,) + shape)
    if not signed:  # as after a ReLU: zeros (and tied maxima) included
        x = np.maximum(np.round(x * 2) / 2, 0)
    return np.clip(x, -3.5, 3.5).astype(dtype)


def assert_paths_equal(net, x, composite, tol, **kw):
    fast = net.relevance(x, composite, keep=True, **kw)
    rows_fast = net.ledger.rows
    ref = net.relevance(x, composite, keep=True, fast=False, **kw)
    rows_ref = net.ledger.rows
    assert fast.dtype == ref.dtype == net.dtype
    close(fast, ref, tol, "heatmap")
    assert [r["rule"] for r in rows_fast] == [r["rule"] for r in rows_ref]
    for rf, rr in zip(rows_fast, rows_ref):
        assert rf.keys() == rr.keys(), rr["rule"]
        scale = max(np.abs(rr["entering"]).max(), np.abs(rr["leaving"]).max())
        for key, value in rr.items():
            if isinstance(value, np.ndarray):
                close(rf[key], value, tol, f"{rr['layer']} {rr['rule']} {key}", scale)


def close(got, want, tol, what, scale=0.0):
    scale = max(scale, np.abs(want).max(), 1e-300)
    err = np.abs(got.astype(np.float64) - want).max() / scale
    assert err <= tol, f"{what}: fast and reference differ by {err:.2e} (relative), tolerance {tol:.0e}"


def rule_cases():
    for k, rule in enumerate(LINEAR_RULES):
        for j in range(5):
            yield pytest.param(rule, j, id=f"{rule.label()}-layer{j}")
    for rule in POOL_RULES:
        for j in range(3):
            yield pytest.param(rule, 5 + j, id=f"{rule.label()}-maxpool{j}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "nonnegative"])
@pytest.mark.parametrize("rule,case", list(rule_cases()))
def test_fast_equals_reference_for_every_rule_and_layer(rule, case, signed, dtype):
    rng = np.random.default_rng(1000 + case)
    layer, shape = (list(layer_cases(rng)) + list(pool_cases()))[case]
    if isinstance(rule, ZBox) and np.ndim(rule.low) == 1 and isinstance(layer, Dense):
        pytest.skip("per-channel bounds need a (C, H, W) input: the Dense case has one channel after Flatten")
    net = net_around(layer, shape, rng, dtype)
    index = 1 if isinstance(layer, Dense) else 0
    composite = Composite("case", default=Epsilon(0.0), by_index={index: rule})
    for seed in range(2):  # twice: the second call reuses what the fast path keeps
        x = inputs(np.random.default_rng(seed), shape, signed, dtype)
        assert_paths_equal(net, x, composite, TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("preset", list(minilrp.PRESETS))
def test_fast_equals_reference_for_every_preset(preset, dtype, rng):
    net = relu_net(rng).astype(dtype)
    x = images(rng, 5).astype(dtype)
    assert_paths_equal(net, x, preset, TOL[dtype])
    assert_paths_equal(net, x, preset, TOL[dtype], target=1, start="onehot")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fmnist-mlp", "fmnist-cnn", "fmnist-vgg"])
def test_fast_equals_reference_on_the_bundled_models(model):
    images_, _, _ = minilrp.load_samples()
    for dtype in (np.float64, np.float32):
        net = minilrp.load_model(model, dtype=dtype)
        x = net.preprocess(images_[:6])
        for preset in minilrp.PRESETS:
            assert_paths_equal(net, x, preset, TOL[dtype])


class HandWrittenLRP0(Rule):
    """A user's rule with only the reference method: LRP-0 written out for a Dense layer."""

    def relevance(self, layer, a, R, ctx=None):
        z = a @ layer.weight.T + layer.bias
        s = R / np.where(z == 0, 1, z)
        zero = np.zeros(len(R))
        return a * (s @ layer.weight), {"bias": (s * layer.bias).sum(1), "stabiliser": zero,
                                        "dropped": np.where(z == 0, R, 0).sum(1)}


class HalfEpsilon(Epsilon):
    """A subclass of a rule that has a fast twin, with its own relevance: the twin must not
    take its place."""

    def relevance(self, layer, a, R, ctx=None):
        R_in, shares = super().relevance(layer, a, R, ctx)
        return R_in / 2, shares


def test_users_own_rules_run_on_both_paths(rng):
    net = relu_net(rng)
    x = images(rng, 3)
    mine = Composite("mine", default=Epsilon(0.0), by_type={Dense: HandWrittenLRP0()})
    np.testing.assert_allclose(net.relevance(x, mine), net.relevance(x, "LRP-0"), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.relevance(x, mine, fast=False), net.relevance(x, "LRP-0"), rtol=1e-10, atol=1e-12)
    half = Composite("half", default=Epsilon(0.0), by_index={9: HalfEpsilon(0.0)})
    for fast in (True, False):
        np.testing.assert_allclose(net.relevance(x, half, fast=fast), net.relevance(x, "LRP-0") / 2,
                                   rtol=1e-10, atol=1e-12)


def test_logits_of_the_fast_forward_are_forwards_bit_for_bit():
    """The fast forward also computes the products a w+, a w- from the same im2col columns:
    the network's output must still be forward()'s, bit for bit (float32, where a different
    GEMM shape would round differently)."""
    net = minilrp.load_model("fmnist-cnn")
    x = net.preprocess(minilrp.load_samples()[0][:3])
    for n in (1, 3):
        net.relevance(x[:n], "EpsilonAlpha2Beta1")
        top = net.layers[-1]
        np.testing.assert_array_equal(top.linear(top.a, top.weight, top.bias), net.forward(x[:n]))


def test_products_from_the_forward_or_the_rule_agree(rng, monkeypatch):
    """Products too large for the forward to keep are computed by the twin itself."""
    from minilrp.fast import relevance as fast_relevance
    net = relu_net(rng)
    x = images(rng, 4)
    for preset in ("EpsilonGammaBox", "EpsilonPlus", "EpsilonAlpha2Beta1"):
        kept = net.relevance(x, preset)
        monkeypatch.setattr(fast_relevance, "PRODUCT_BUDGET", 0)
        np.testing.assert_allclose(net.relevance(x, preset), kept, rtol=1e-12, atol=1e-14)
        monkeypatch.undo()


def test_kept_zbox_bounds_follow_the_network_and_the_rule(rng):
    """The fast path keeps z^B's per-channel bounds between calls: a changed input range, or a
    rule with other bounds, must show in the next heatmap."""
    net = relu_net(rng)
    x = images(rng, 3)
    net.relevance(x, "EpsilonGammaBox")
    net.input_low, net.input_high = np.array([-0.5]), np.array([1.5])
    np.testing.assert_allclose(net.relevance(x, "EpsilonGammaBox"), net.relevance(x, "EpsilonGammaBox", fast=False),
                               rtol=1e-12, atol=1e-14)
    for low in (-1.0, [-2.0], np.array([-3.0])):
        np.testing.assert_allclose(net.relevance(x, "EpsilonGammaBox", low=low, high=2.0),
                                   net.relevance(x, "EpsilonGammaBox", low=low, high=2.0, fast=False), rtol=1e-12, atol=1e-14)
    with pytest.raises(minilrp.MinilrpError, match="do not contain the input"):
        net.relevance(x + 5, "EpsilonGammaBox")
