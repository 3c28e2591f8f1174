"""Each reference LRP rule (minilrp/explain/rules.py) against its formula-literal twin
(tests/slow_rules.py), in float64, on random small Dense, Conv2d (stride, padding) and
AvgPool2d layers with negative and non-negative inputs; plus the rules' parameter checks.
(The fast path is held equal to these rules by tests/test_fast_path.py.)"""
import numpy as np
import pytest

import slow_rules as slow
from minilrp import AvgPool2d, Conv2d, Dense, MaxPool2d, MinilrpError
from minilrp.explain.rules import (LRP0, AlphaBeta, Epsilon, Flat, Gamma, Proportional, WinnerTakeAll,
                           WSquare, ZBox, ZPlus)

TOL = dict(rtol=1e-10, atol=1e-12)


def layers(rng):
    yield Dense(7, 5, weight=rng.standard_normal((5, 7)), bias=rng.standard_normal(5)), (7,)
    yield Conv2d(2, 3, 3, stride=2, padding=1, weight=rng.standard_normal((3, 2, 3, 3)),
                 bias=rng.standard_normal(3)), (2, 5, 6)
    yield Conv2d(1, 2, 2, stride=1, padding=0, weight=rng.standard_normal((2, 1, 2, 2)),
                 bias=rng.standard_normal(2)), (1, 4, 3)
    yield Conv2d(2, 3, 3, stride=1, padding=1, weight=rng.standard_normal((3, 2, 3, 3)),
                 bias=rng.standard_normal(3)), (2, 4, 5)
    yield AvgPool2d(3, 2, 1), (2, 5, 5)


def cases(rng):
    for layer, shape in layers(rng):
        for nonneg in (False, True):
            a = rng.standard_normal((2,) + shape)
            if nonneg:
                a = np.maximum(a, 0)
            out_shape = layer.output_shape(shape)
            R = rng.standard_normal((2,) + out_shape)
            yield layer, a, R


def run(rule, layer, a, R):
    """The rule on one layer, after the layer's forward (a conv's transposed conv takes the
    input's size from its cache)."""
    layer.forward(a)
    return rule.relevance(layer, a, R)


def check_against_slow(rule, fn_slow, rng):
    n = 0
    for layer, a, R in cases(rng):
        W, b, T = slow.dense_form(layer, a.shape[1:])
        b = b if getattr(rule, "bias", True) else None
        fast, shares = run(rule, layer, a, R)
        for e in range(len(a)):
            ref = fn_slow(a[e].reshape(-1), W, b, T, R[e].reshape(-1))
            np.testing.assert_allclose(fast[e].reshape(-1), ref, **TOL)
        # the shares account for everything that did not arrive
        missing = R.reshape(2, -1).sum(1) - fast.reshape(2, -1).sum(1)
        np.testing.assert_allclose(missing, shares["bias"] + shares["stabiliser"] + shares["dropped"],
                                   rtol=1e-9, atol=1e-9)
        n += 1
    assert n == 10


@pytest.mark.parametrize("eps,bias", [(0.0, True), (1e-6, True), (0.3, True), (0.3, False)])
def test_epsilon(eps, bias, rng):
    check_against_slow(Epsilon(eps, bias=bias),
                       lambda a, W, b, T, R: slow.epsilon(a, W, b, R, eps), rng)


def test_relative_epsilon(rng):
    for layer, a, R in cases(rng):
        W, b, _ = slow.dense_form(layer, a.shape[1:])
        fast, _ = run(Epsilon(0.25, relative=True), layer, a, R)
        for e in range(2):
            z = W @ a[e].reshape(-1) + (b if b is not None else 0)
            eps = 0.25 * np.sqrt(np.mean(z ** 2))
            np.testing.assert_allclose(fast[e].reshape(-1), slow.epsilon(a[e].reshape(-1), W, b, R[e].reshape(-1), eps), **TOL)


@pytest.mark.parametrize("g,bias", [(0.25, True), (1.0, True), (0.0, True), (0.25, False)])
def test_gamma(g, bias, rng):
    check_against_slow(Gamma(g, bias=bias), lambda a, W, b, T, R: slow.gamma(a, W, b, R, g, 1e-6), rng)


@pytest.mark.parametrize("alpha,beta,bias", [(2, 1, True), (1, 0, True), (3, 2, False)])
def test_alpha_beta(alpha, beta, bias, rng):
    check_against_slow(AlphaBeta(alpha, beta, bias=bias),
                       lambda a, W, b, T, R: slow.alpha_beta(a, W, b, R, alpha, beta, 1e-6), rng)


def test_zplus_is_alpha1_beta0():
    assert ZPlus() == AlphaBeta(1, 0)


def test_wsquare(rng):
    check_against_slow(WSquare(), lambda a, W, b, T, R: slow.wsquare(W, b, R, 1e-6), rng)
    check_against_slow(WSquare(bias=False), lambda a, W, b, T, R: slow.wsquare(W, None, R, 1e-6), rng)


def test_flat(rng):
    check_against_slow(Flat(), lambda a, W, b, T, R: slow.flat(T, R, 1e-6), rng)


@pytest.mark.parametrize("kind", ["per image", "per channel", "number"])
def test_zbox(kind, rng):
    for layer, a, R in cases(rng):
        if kind == "per image":
            low = np.full_like(a, -5.0) + 0.1 * rng.standard_normal(a.shape)
            high = np.full_like(a, 5.5) + 0.1 * rng.standard_normal(a.shape)
            rule = ZBox(low, high)
        elif kind == "per channel" and a.ndim == 4:
            C = a.shape[1]
            l, h = -5.0 + 0.1 * rng.standard_normal(C), 5.5 + 0.1 * rng.standard_normal(C)
            low, high = (np.broadcast_to(v.reshape(1, C, 1, 1), a.shape) for v in (l, h))
            rule = ZBox(l, h)
        else:
            low, high = np.full_like(a, -5.0), np.full_like(a, 5.5)
            rule = ZBox(-5.0, 5.5)
        W, _, _ = slow.dense_form(layer, a.shape[1:])
        fast, shares = run(rule, layer, a, R)
        for e in range(2):
            ref = slow.zbox(a[e].reshape(-1), low[e].reshape(-1), high[e].reshape(-1), W, R[e].reshape(-1), 1e-6)
            np.testing.assert_allclose(fast[e].reshape(-1), ref, **TOL)
        np.testing.assert_allclose(R.reshape(2, -1).sum(1) - fast.reshape(2, -1).sum(1), shares["stabiliser"], atol=1e-9)


def test_zbox_bounds_are_checked(rng):
    layer = Dense(4, 2, weight=rng.standard_normal((2, 4)))
    a, R = rng.uniform(0, 1, (3, 4)), rng.standard_normal((3, 2))
    layer.forward(a)
    with pytest.raises(MinilrpError, match="ZBox needs bounds"):
        ZBox().relevance(layer, a, R)
    with pytest.raises(MinilrpError, match="do not contain the input"):
        ZBox(0.5, 1.0).relevance(layer, a, R)
    with pytest.raises(MinilrpError, match="does not fit"):
        ZBox(np.zeros(3), np.ones(3)).relevance(layer, a, R)
    with pytest.raises(MinilrpError, match="finite"):
        ZBox(float("nan"), 1.0).relevance(layer, a, R)


@pytest.mark.parametrize("K,s", [(2, 2), (3, 1), (3, 2)])
def test_maxpool_rules(K, s, rng):
    a = rng.standard_normal((2, 3, 7, 8))
    a[0, 0, :2, :2] = 0.7  # ties inside a window
    layer = MaxPool2d(K, s)
    out = layer.forward(a)
    R = rng.standard_normal(out.shape)
    wta, _ = WinnerTakeAll().relevance(layer, a, R)
    prop, _ = Proportional().relevance(layer, a, R)
    for n in range(2):
        for c in range(3):
            np.testing.assert_allclose(wta[n, c], slow.maxpool_wta(a[n, c], K, s)(R[n, c]), **TOL)
            np.testing.assert_allclose(prop[n, c], slow.maxpool_proportional(a[n, c], K, s, 1e-6)(R[n, c]), **TOL)
    np.testing.assert_allclose(wta.sum((1, 2, 3)), R.sum((1, 2, 3)), rtol=1e-12)


def test_wta_splits_ties_evenly():
    a = np.zeros((1, 1, 2, 2))
    a[0, 0, 0, 1] = a[0, 0, 1, 0] = 3.0
    layer = MaxPool2d(2)
    layer.forward(a)
    R_in, _ = WinnerTakeAll().relevance(layer, a, np.array([[[[4.0]]]]))
    np.testing.assert_array_equal(R_in[0, 0], [[0, 2], [2, 0]])


def test_parameter_checks():
    with pytest.raises(MinilrpError, match="gamma must be >= 0"):
        Gamma(-0.1)
    with pytest.raises(MinilrpError, match="epsilon must be >= 0"):
        Epsilon(-1e-3)
    for bad in (float("nan"), float("inf"), "0.1", None):
        with pytest.raises(MinilrpError, match="epsilon must be >= 0 \\(a finite number\\)"):
            Epsilon(bad)
    with pytest.raises(MinilrpError, match="alpha \\+ beta = 1.*alpha - beta = 1"):
        AlphaBeta(0.7, 0.3)
    with pytest.raises(MinilrpError, match="alpha - beta must equal 1"):
        AlphaBeta(3, 1)
    with pytest.raises(MinilrpError, match="beta must be >= 0"):
        AlphaBeta(0.5, -0.5)
    with pytest.raises(MinilrpError, match="cannot serve"):
        WinnerTakeAll().check_layer(Dense(2, 2))
    with pytest.raises(MinilrpError, match="cannot serve"):
        Epsilon().check_layer(MaxPool2d(2))
    assert LRP0() == Epsilon(0.0)


def test_no_nan_where_denominator_vanishes():
    """LRP-0 on an all-zero input with zero bias: z = 0 exactly; relevance is dropped, not NaN."""
    layer = Dense(3, 2, weight=np.ones((2, 3)), bias=np.zeros(2))
    a = np.zeros((1, 3))
    layer.forward(a)
    R_in, shares = LRP0().relevance(layer, a, np.array([[1.0, 2.0]]))
    assert np.all(np.isfinite(R_in)) and np.all(R_in == 0)
    assert shares["dropped"][0] == 3.0


def test_wta_first_tie_routes_like_the_gradient():
    a = np.zeros((1, 1, 2, 2))
    a[0, 0, 0, 1] = a[0, 0, 1, 0] = 3.0
    layer = MaxPool2d(2)
    layer.forward(a)
    R_in, _ = WinnerTakeAll(ties="first").relevance(layer, a, np.array([[[[4.0]]]]))
    np.testing.assert_array_equal(R_in[0, 0], [[0, 4], [0, 0]])
    np.testing.assert_array_equal(R_in, layer.backward(np.array([[[[4.0]]]])))
    with pytest.raises(MinilrpError, match="ties must be"):
        WinnerTakeAll(ties="last")


def test_label_of_a_users_own_rule():
    class Mine(Epsilon.__mro__[1]):  # a plain subclass of Rule, not a dataclass
        def relevance(self, layer, a, R, ctx=None):
            return Epsilon(0.0).relevance(layer, a, R, ctx)
    assert "Mine" in Mine().label()
    assert AlphaBeta(2, 1).label() == "AlphaBeta(alpha=2, beta=1)"
    assert WinnerTakeAll().label() == "WinnerTakeAll(ties=split)"
