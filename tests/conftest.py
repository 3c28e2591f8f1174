import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def torch():
    """PyTorch, seeded; the test skips where it is not installed (a tool dependency)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch


def rel_err(a, b):
    """max |a - b| relative to max |b|, in float64."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def finite_difference(f, x, h=1e-6):
    """Central differences of the scalar function f at every entry of x (float64)."""
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f(x)
        flat[i] = old - h
        down = f(x)
        flat[i] = old
        gf[i] = (up - down) / (2 * h)
    return g
