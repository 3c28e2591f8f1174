"""Every layer's backward is the true gradient: central finite differences in float64."""
import numpy as np
import pytest

from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, MinilrpError, ReLU
from conftest import finite_difference


def check_backward(layer, x, rng, tol=1e-6):
    out = layer.forward(x.copy())
    g = rng.standard_normal(out.shape)
    analytic = layer.backward(g)
    numeric = finite_difference(lambda v: float(np.sum(g * layer.forward(v))), x.copy())
    np.testing.assert_allclose(analytic, numeric, rtol=tol, atol=tol)


def conv(rng, C, Co, K, s, p):
    return Conv2d(C, Co, K, stride=s, padding=p, weight=rng.standard_normal((Co, C, K, K)),
                  bias=rng.standard_normal(Co))


@pytest.mark.parametrize("C,Co,H,W,K,s,p", [(2, 3, 7, 5, 3, 1, 1), (1, 2, 9, 9, 3, 2, 0),
                                             (3, 2, 8, 7, 2, 2, 1), (2, 2, 5, 6, 5, 3, 2)])
def test_conv2d_backward(C, Co, H, W, K, s, p, rng):
    check_backward(conv(rng, C, Co, K, s, p), rng.standard_normal((2, C, H, W)), rng)


def test_dense_backward(rng):
    layer = Dense(7, 5, weight=rng.standard_normal((5, 7)), bias=rng.standard_normal(5))
    check_backward(layer, rng.standard_normal((3, 7)), rng)


@pytest.mark.parametrize("K,s,H,W", [(2, 2, 8, 8), (3, 1, 7, 6), (3, 2, 9, 7), (2, 1, 5, 5)])
def test_maxpool_backward(K, s, H, W, rng):
    # overlapping windows (s < K) route to the same pixel several times
    check_backward(MaxPool2d(K, s), rng.standard_normal((2, 3, H, W)), rng)


@pytest.mark.parametrize("K,s,p,H,W", [(2, 2, 0, 8, 8), (3, 1, 1, 7, 6), (3, 2, 1, 9, 7)])
def test_avgpool_backward(K, s, p, H, W, rng):
    check_backward(AvgPool2d(K, s, p), rng.standard_normal((2, 3, H, W)), rng)


def test_relu_and_flatten_backward(rng):
    check_backward(ReLU(), rng.standard_normal((2, 3, 4, 5)), rng)
    check_backward(Flatten(), rng.standard_normal((2, 3, 4, 5)), rng)


def test_forward_caches_input(rng):
    layer = conv(rng, 2, 3, 3, 1, 1)
    x = rng.standard_normal((1, 2, 5, 5))
    layer.forward(x)
    assert layer.a is x
    layer.clear()
    with pytest.raises(MinilrpError, match="before forward"):
        layer.backward(np.zeros((1, 3, 5, 5)))


def test_bad_hyperparameters():
    with pytest.raises(MinilrpError, match="kernel_size"):
        Conv2d(1, 2, 0)
    with pytest.raises(MinilrpError, match="shape"):
        Conv2d(1, 2, 3, weight=np.zeros((2, 1, 5, 5)))
    with pytest.raises(MinilrpError, match="floating"):
        Dense(2, 2, weight=np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(MinilrpError, match="stride"):
        MaxPool2d(2, stride=-1)
    with pytest.raises(MinilrpError, match="padding"):
        AvgPool2d(2, padding=2)
