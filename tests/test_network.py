"""The sequential network: forward, predict, gradient of any output weighting, bad input."""
import numpy as np
import pytest

from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, MinilrpError, Network, ReLU, load_model, load_samples
from conftest import finite_difference


def small_net(rng, dtype=np.float64):
    layers = [Conv2d(2, 4, 3, padding=1, weight=rng.standard_normal((4, 2, 3, 3)), bias=rng.standard_normal(4)),
              ReLU(), MaxPool2d(3, 2),
              Conv2d(4, 3, 3, stride=2, padding=1, weight=rng.standard_normal((3, 4, 3, 3)), bias=rng.standard_normal(3)),
              ReLU(), AvgPool2d(2, 1), Flatten(),
              Dense(3, 5, weight=rng.standard_normal((5, 3)), bias=rng.standard_normal(5))]
    return Network(layers, (2, 9, 10), name="small").astype(dtype)


def test_shapes_are_inferred(rng):
    net = small_net(rng)
    assert net.shapes == [(2, 9, 10), (4, 9, 10), (4, 9, 10), (4, 4, 4), (3, 2, 2), (3, 2, 2),
                          (3, 1, 1), (3,), (5,)]
    assert net.n_classes == 5 and net.classes == [f"class {k}" for k in range(5)]


def test_architecture_mismatch_is_named(rng):
    with pytest.raises(MinilrpError, match="Dense"):
        Network([Flatten(), Dense(10, 2)], (1, 3, 3))
    with pytest.raises(MinilrpError, match="C=3"):
        Network([Conv2d(3, 2, 3)], (1, 5, 5))


def test_network_gradient_finite_differences(rng):
    net = small_net(rng)
    x = rng.standard_normal((3, 2, 9, 10))
    w = rng.standard_normal((3, 5))
    grad = net.gradient(x, weights=w)
    numeric = finite_difference(lambda v: float(np.sum(w * net.forward(v))), x.copy())
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


def test_gradient_of_target_logit(rng):
    net = small_net(rng)
    x = rng.standard_normal((2, 2, 9, 10))
    t = np.array([3, 1])
    g = net.gradient(x, target=t)
    for n in range(2):
        numeric = finite_difference(lambda v: float(net.forward(v)[0, t[n]]), x[n:n + 1].copy())
        np.testing.assert_allclose(g[n:n + 1], numeric, rtol=1e-6, atol=1e-6)
    # default target: the predicted class
    logits = net.forward(x)
    np.testing.assert_allclose(net.gradient(x), net.gradient(x, target=logits.argmax(1)))


def test_predict(rng):
    net = small_net(rng)
    x = rng.standard_normal((4, 2, 9, 10))
    p, c = net.predict(x)
    logits = net.forward(x)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p, np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_array_equal(c, logits.argmax(1))


def test_batch_equals_one_by_one(rng):
    net = small_net(rng)
    x = rng.standard_normal((5, 2, 9, 10))
    whole = net.forward(x)
    for n in range(5):
        np.testing.assert_allclose(net.forward(x[n:n + 1])[0], whole[n], rtol=1e-12)


def test_float32_default_and_float64_on_request(rng):
    net = small_net(rng, np.float32)
    x = rng.standard_normal((2, 2, 9, 10))
    assert net.forward(x).dtype == np.float32
    assert all(layer.a.dtype == np.float32 for layer in net.layers)
    net.astype(np.float64)
    assert net.forward(x).dtype == np.float64
    with pytest.raises(MinilrpError, match="float32 or float64"):
        net.astype(np.float16)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 3, 9, 10)), r"input shape .* does not match"),
    (np.zeros((2, 2, 10, 9)), r"input shape .* does not match"),
    (np.zeros((2, 9, 10)), r"a single example|does not match"),
    (np.zeros((0, 2, 9, 10)), "empty batch"),
    (np.zeros((1, 2, 9, 10), dtype=np.uint8), "not floating point.*preprocess"),
    (np.array([["a"]]), "not floating point"),
    (np.full((1, 2, 9, 10), np.nan), "NaN or inf"),
    (np.full((1, 2, 9, 10), np.inf), "NaN or inf"),
])
def test_bad_input_is_named(bad, match, rng):
    with pytest.raises(MinilrpError, match=match):
        small_net(rng).forward(bad)


def test_single_example_hint(rng):
    with pytest.raises(MinilrpError, match=r"x\[None\]"):
        small_net(rng).forward(np.zeros((2, 9, 10)))


def test_bad_targets(rng):
    net = small_net(rng)
    x = rng.standard_normal((2, 2, 9, 10))
    with pytest.raises(MinilrpError, match="out of range"):
        net.gradient(x, target=5)
    with pytest.raises(MinilrpError, match="out of range"):
        net.gradient(x, target=[0, -1])
    with pytest.raises(MinilrpError, match="3 targets for a batch of 2"):
        net.gradient(x, target=[0, 1, 2])
    with pytest.raises(MinilrpError, match="int"):
        net.gradient(x, target=1.5)
    with pytest.raises(MinilrpError, match="shape"):
        net.gradient(x, weights=np.ones((2, 4)))


def test_preprocess(rng):
    layers = [Flatten(), Dense(4, 2, weight=rng.standard_normal((2, 4)))]
    net = Network(layers, (1, 2, 2), mean=[0.5], std=[0.25])
    raw = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = net.preprocess(raw)
    np.testing.assert_allclose(x, ((raw / 255 - 0.5) / 0.25)[:, None], rtol=1e-6)
    np.testing.assert_allclose(net.input_low, [-2.0])
    np.testing.assert_allclose(net.input_high, [2.0])
    with pytest.raises(MinilrpError, match="do not fit"):
        net.preprocess(np.zeros((1, 3, 3), np.uint8))


def test_forward_with_gives_the_output_and_the_rule_product(rng):
    """Network.relevance's forward also computes P = a w+ for z+/alpha-beta/gamma layers
    (from a conv's same im2col columns): the output is the plain forward's bit for bit, the
    product is a w+, and the heatmaps equal those with the product computed by the rule
    itself (budget 0)."""
    from minilrp import network
    net = Network([Conv2d(1, 3, 3, padding=1, weight=rng.standard_normal((3, 1, 3, 3))), ReLU(),
                   Conv2d(3, 4, 3, stride=2, weight=rng.standard_normal((4, 3, 3, 3)),
                          bias=rng.standard_normal(4)), ReLU(), Flatten(),
                   Dense(36, 5, weight=rng.standard_normal((5, 36)), bias=rng.standard_normal(5)), ReLU(),
                   Dense(5, 2, weight=rng.standard_normal((2, 5)))], (1, 8, 8), input_range=(-9, 9)).astype(np.float64)
    x = rng.standard_normal((3, 1, 8, 8))
    for i in (2, 5):
        layer = net.layers[i]
        a = np.maximum(rng.standard_normal((3,) + net.shapes[i]), 0)
        z, P = layer.forward_with(a, np.maximum(layer.weight, 0))
        assert layer.a is a
        np.testing.assert_array_equal(z, layer.forward(a))
        np.testing.assert_allclose(P, layer.linear(a, np.maximum(layer.weight, 0)), rtol=1e-13, atol=1e-13)
    f32 = load_model("fmnist-cnn")
    x32 = f32.preprocess(load_samples()[0][:3])
    for n in (1, 3):  # float32 BLAS: the same GEMM for the output, so the same logits
        f32.relevance(x32[:n], "EpsilonPlusFlat")
        top = f32.layers[-1]
        np.testing.assert_array_equal(top.linear(top.a, top.weight, top.bias), f32.forward(x32[:n]))
    from minilrp import AlphaBeta, Gamma
    net.forward(x)
    rules = net._rules(AlphaBeta(), {})
    asked = [i for i, r in enumerate(rules) if r is not None and r.forward_weights(net.layers[i], net.layers[i].a) is not None]
    assert asked == [2, 5, 7]  # the linear layers whose inputs are >= 0 (not the pixel layer)
    for preset in ("EpsilonGammaBox", "EpsilonPlus", AlphaBeta(), Gamma()):
        with_product = net.relevance(x, preset)
        top = net.layers[-1]
        np.testing.assert_array_equal(top.linear(top.a, top.weight), net.forward(x))
        old, network.PRODUCT_BUDGET = network.PRODUCT_BUDGET, 0
        try:
            without = net.relevance(x, preset)
        finally:
            network.PRODUCT_BUDGET = old
        np.testing.assert_allclose(with_product, without, rtol=1e-12, atol=1e-14)
