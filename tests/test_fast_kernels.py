"""The fast path's numba kernels (minilrp/fast/kernels.py) against their NumPy twins."""
import numpy as np
import pytest

from minilrp.engine.kernels import maxpool_forward
from minilrp.fast import kernels as k


@pytest.mark.parametrize("two,gamma", [(True, True), (True, False), (False, False), (False, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(4, 3), (17, 19)])  # the second runs the vectorised loop body
def test_two_term_ratios_against_twin(two, gamma, dtype, hw, rng):
    N, Co = 3, 5
    P = rng.standard_normal((N, Co) + hw).astype(dtype)
    Q = rng.standard_normal((N, Co) + hw).astype(dtype) if two else None
    R = rng.standard_normal((N, Co) + hw).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    P[0, :, 0, 0] = 0
    if two:
        Q[0, :, 0, 0] = 0
    b[0] = 0  # z == 0 exactly at one place: dropped
    args = (P, Q, R, b, b + 0.25 * np.maximum(b, 0), b + 0.25 * np.minimum(b, 0), 1.25, 1.0, 1.0, 1.25, 2.0, -1.0,
            1e-6 if gamma else 0.0, gamma)
    S, sh = k.two_term_ratios(*args)
    S2, sh2 = k.two_term_ratios_ref(*args)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(S, S2, rtol=tol, atol=tol)
    np.testing.assert_allclose(sh, sh2, rtol=tol, atol=tol * 100)
    assert np.all(np.isfinite(S))


@pytest.mark.parametrize("K,s", [(2, 2), (3, 1), (3, 2), (3, 3)])  # stride = K: the tiled kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_relevance_against_twin(K, s, dtype, rng):
    a = np.round(rng.standard_normal((2, 3, 9, 8)), 1).astype(dtype)  # rounding makes ties common
    out, _ = maxpool_forward(a, K, s)
    R = rng.standard_normal(out.shape).astype(dtype)
    R[0, 0, 0, 0] = 0
    got = k.maxpool_relevance(a, out, R, K, s)
    assert got.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, k.maxpool_relevance_ref(a, out, R, K, s), rtol=tol, atol=tol)
