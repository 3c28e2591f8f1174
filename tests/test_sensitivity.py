"""Sensitivity analysis from the engine's backward pass, against finite differences and
the methods' defining properties."""
import numpy as np
import pytest

from minilrp import MinilrpError
from minilrp import sensitivity as S
from conftest import finite_difference
from test_lrp import images, relu_net


def test_gradient_and_sa_against_finite_differences(rng):
    net = relu_net(rng)
    x = images(rng, 2)
    t = net.targets(None, net.forward(x))
    num = np.stack([finite_difference(lambda v: float(net.forward(v)[0, t[n]]), x[n:n + 1].copy())[0]
                    for n in range(2)])
    np.testing.assert_allclose(S.gradient(net, x), num, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(S.sa(net, x), (num ** 2).sum(1), rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(S.abs_gradient(net, x), np.abs(num), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(S.gradient_x_input(net, x), x * num, rtol=1e-6, atol=1e-7)


def test_sa_sums_squares_over_channels(rng):
    from test_network import small_net
    net = small_net(rng)
    x = rng.standard_normal((2, 2, 9, 10))
    g = S.gradient(net, x, target=1)
    np.testing.assert_allclose(S.sa(net, x, target=1), g[:, 0] ** 2 + g[:, 1] ** 2)
    assert S.sa(net, x).shape == (2, 9, 10)


def test_smoothgrad(rng):
    net = relu_net(rng)
    x = images(rng, 3)
    a = S.smoothgrad(net, x, n_samples=8, noise=0.1, seed=3)
    np.testing.assert_array_equal(a, S.smoothgrad(net, x, n_samples=8, noise=0.1, seed=3))
    assert not np.allclose(a, S.smoothgrad(net, x, n_samples=8, noise=0.1, seed=4))
    # zero noise is the plain gradient
    np.testing.assert_allclose(S.smoothgrad(net, x, n_samples=2, noise=0.0), S.gradient(net, x))
    # explicit mean over the same noise draws, image by image with fixed targets
    t = net.targets(None, net.forward(x))
    streams = [np.random.default_rng([3, S.SMOOTHGRAD_STREAM, n]) for n in range(3)]  # one per image
    noise = np.stack([r.standard_normal((8,) + x.shape[1:]) for r in streams], axis=1)
    manual = np.mean([net.gradient(x + noise[i] * 0.1, target=t) for i in range(8)], axis=0)
    np.testing.assert_allclose(a, manual, rtol=1e-12)
    with pytest.raises(MinilrpError):
        S.smoothgrad(net, x, n_samples=0)


def test_integrated_gradients_completeness(rng):
    net = relu_net(rng)
    x = images(rng, 3)
    t = net.targets(None, net.forward(x))
    ig = S.integrated_gradients(net, x, steps=400)
    f = net.forward(x)[np.arange(3), t]
    f0 = net.forward(np.zeros_like(x))[np.arange(3), t]
    np.testing.assert_allclose(ig.sum((1, 2, 3)), f - f0, rtol=2e-2)
    # one step is gradient at the midpoint times (x - x0)
    np.testing.assert_allclose(S.integrated_gradients(net, x, steps=1),
                               x * net.gradient(x / 2, target=t), rtol=1e-12)
    with pytest.raises(MinilrpError, match="baseline"):
        S.integrated_gradients(net, x, baseline=np.zeros((2, 2)))


def test_smoothgrad_noise_is_keyed_by_image_not_by_batch(rng):
    """An image's SmoothGrad map is the same alone, in a batch, or in another batch at its
    data-set index: its noise stream is keyed by (seed, image index)."""
    net = relu_net(rng)
    x = images(rng, 5)
    whole = S.smoothgrad(net, x, n_samples=4, seed=3)
    for n in range(5):
        alone = S.smoothgrad(net, x[n:n + 1], n_samples=4, seed=3, index=[n])
        np.testing.assert_allclose(alone[0], whole[n], rtol=1e-12, atol=1e-14)
    reordered = S.smoothgrad(net, x[::-1], n_samples=4, seed=3, index=np.arange(5)[::-1])
    np.testing.assert_allclose(reordered[::-1], whole, rtol=1e-12, atol=1e-14)
    assert not np.allclose(S.smoothgrad(net, x, n_samples=4, seed=4), whole)
    with pytest.raises(MinilrpError, match="index must hold one non-negative int per image"):
        S.smoothgrad(net, x, index=[0, 1])
