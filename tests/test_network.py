"""The sequential network: forward, predict, gradient of any output weighting, bad input."""
import numpy as np
import pytest

from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, MinilrpError, Network, ReLU
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
