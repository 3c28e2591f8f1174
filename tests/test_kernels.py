"""numba kernels against their NumPy twins, and convolution/pooling against explicit loops
(an independent reference written here straight from the definitions)."""
import numpy as np
import pytest

from minilrp import kernels as k

CONV_CASES = [  # N, C, Co, H, W, K, stride, pad
    (2, 3, 4, 9, 7, 3, 2, 1),
    (3, 1, 5, 11, 11, 5, 1, 2),
    (1, 4, 2, 8, 8, 2, 2, 0),
    (2, 2, 3, 5, 6, 3, 3, 2),
    (1, 3, 2, 7, 5, 1, 1, 0),
    (2, 2, 2, 6, 9, 4, 1, 3),
]


def conv_loops(x, w, b, stride, pad):
    """out[n,o,y,x] = b[o] + sum_{c,i,j} x[n,c,y*s+i-p, x*s+j-p] w[o,c,i,j], zero outside."""
    N, C, H, W = x.shape
    Co, _, K, _ = w.shape
    Ho, Wo = (H + 2 * pad - K) // stride + 1, (W + 2 * pad - K) // stride + 1
    out = np.zeros((N, Co, Ho, Wo))
    for n in range(N):
        for o in range(Co):
            for oy in range(Ho):
                for ox in range(Wo):
                    s = b[o] if b is not None else 0.0
                    for c in range(C):
                        for i in range(K):
                            for j in range(K):
                                iy, ix = oy * stride + i - pad, ox * stride + j - pad
                                if 0 <= iy < H and 0 <= ix < W:
                                    s += x[n, c, iy, ix] * w[o, c, i, j]
                    out[n, o, oy, ox] = s
    return out


def conv_matrix(w, stride, pad, in_shape):
    """The dense matrix M of the conv (no bias): vec(out) = M vec(x), built column by column
    from unit inputs through the loop reference."""
    C, H, W = in_shape
    cols = []
    for e in np.eye(C * H * W):
        cols.append(conv_loops(e.reshape(1, C, H, W), w, None, stride, pad).reshape(-1))
    return np.array(cols).T


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_against_loops(case, rng):
    N, C, Co, H, W, K, s, p = case
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((Co, C, K, K)), rng.standard_normal(Co)
    ref = conv_loops(x, w, b, s, p)
    np.testing.assert_allclose(k.conv2d(x, w, b, s, p), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.conv2d_ref(x, w, b, s, p), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_transpose_is_the_adjoint(case, rng):
    """The transposed conv is M^T of the conv's dense matrix, for strides that leave a
    remainder too."""
    N, C, Co, H, W, K, s, p = case
    w = rng.standard_normal((Co, C, K, K))
    M = conv_matrix(w, s, p, (C, H, W))
    Ho, Wo = k.conv_output_size(H, K, s, p), k.conv_output_size(W, K, s, p)
    g = rng.standard_normal((N, Co, Ho, Wo))
    ref = (g.reshape(N, -1) @ M).reshape(N, C, H, W)
    np.testing.assert_allclose(k.conv2d_transpose(g, w, s, p, (H, W)), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.conv2d_transpose_ref(g, w, s, p, (H, W)), ref, rtol=1e-12, atol=1e-12)


def test_conv_against_scipy(rng):
    from scipy.signal import correlate
    x, w = rng.standard_normal((2, 3, 10, 9)), rng.standard_normal((4, 3, 3, 3))
    ref = np.stack([np.stack([sum(correlate(x[n, c], w[o, c], mode="valid") for c in range(3))
                              for o in range(4)]) for n in range(2)])
    np.testing.assert_allclose(k.conv2d(x, w, None, 1, 0), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im_twins(case, dtype, rng):
    N, C, Co, H, W, K, s, p = case
    Ho, Wo = k.conv_output_size(H, K, s, p), k.conv_output_size(W, K, s, p)
    x = rng.standard_normal((N + 2, C, H, W)).astype(dtype)
    n0, nb = 1, N
    a = np.full((C * K * K, nb * Ho * Wo), np.nan, dtype)
    b = np.full_like(a, np.nan)
    k.im2col(x, n0, nb, K, s, p, Ho, Wo, a)
    k.im2col_ref(x, n0, nb, K, s, p, Ho, Wo, b)
    np.testing.assert_array_equal(a, b)
    cols = rng.standard_normal(a.shape).astype(dtype)
    o1, o2 = np.ones_like(x), np.ones_like(x)
    k.col2im(cols, n0, nb, K, s, p, Ho, Wo, o1)
    k.col2im_ref(cols, n0, nb, K, s, p, Ho, Wo, o2)
    np.testing.assert_allclose(o1, o2, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12)
    assert np.all(o1[0] == 1) and np.all(o1[-1] == 1)  # images outside the chunk untouched


def test_chunking_does_not_change_results(rng, monkeypatch):
    x, w, b = rng.standard_normal((7, 3, 8, 8)), rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5)
    g = rng.standard_normal((7, 5, 8, 8))
    whole = k.conv2d(x, w, b, 1, 1), k.conv2d_transpose(g, w, 1, 1, (8, 8))
    monkeypatch.setattr(k, "COLS_BUDGET", 3 * 27 * 64 * 8)  # three images per chunk: 3+3+1
    np.testing.assert_allclose(k.conv2d(x, w, b, 1, 1), whole[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(k.conv2d_transpose(g, w, 1, 1, (8, 8)), whole[1], rtol=1e-13, atol=1e-13)


def maxpool_loops(x, K, s):
    N, C, H, W = x.shape
    Ho, Wo = (H - K) // s + 1, (W - K) // s + 1
    out = np.empty((N, C, Ho, Wo))
    for idx in np.ndindex(N, C, Ho, Wo):
        n, c, oy, ox = idx
        out[idx] = x[n, c, oy * s:oy * s + K, ox * s:ox * s + K].max()
    return out


@pytest.mark.parametrize("K,s", [(2, 2), (3, 1), (3, 2), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_against_twin_and_loops(K, s, dtype, ties, rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    if ties:  # rounded after a ReLU: many windows with tied maxima; arg = the first of them
        x = np.maximum(np.round(x), 0)
    out, arg = k.maxpool_forward(x, K, s)
    out2, arg2 = k.maxpool_forward_ref(x, K, s)
    np.testing.assert_array_equal(out, maxpool_loops(x, K, s).astype(dtype))
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(arg, arg2)


@pytest.mark.parametrize("K,s", [(2, 2), (3, 1), (3, 2)])
def test_maxpool_backward_routes_to_argmax(K, s, rng):
    x = rng.standard_normal((2, 3, 9, 8))
    out, arg = k.maxpool_forward(x, K, s)
    g = rng.standard_normal(out.shape)
    ref = np.zeros_like(x)
    for idx in np.ndindex(*out.shape):
        n, c, oy, ox = idx
        i, j = divmod(int(arg[idx]), K)
        assert x[n, c, oy * s + i, ox * s + j] == out[idx]
        ref[n, c, oy * s + i, ox * s + j] += g[idx]
    np.testing.assert_allclose(k.maxpool_backward(g, arg, K, s, x.shape), ref, rtol=1e-13)


def test_maxpool_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    out, arg = k.maxpool_forward(x, 2, 2)
    assert arg[0, 0, 0, 0] == 0
    x[0, 0, 1, 0] = x[0, 0, 1, 1] = 1.0
    out, arg = k.maxpool_forward(x, 2, 2)
    assert arg[0, 0, 0, 0] == 2 and out[0, 0, 0, 0] == 1.0


@pytest.mark.parametrize("K,s,p", [(2, 2, 0), (3, 1, 1), (3, 2, 1), (4, 3, 2)])
def test_pool2d_against_loops(K, s, p, rng):
    x = rng.standard_normal((2, 3, 9, 8))
    kern = rng.standard_normal((K, K))
    Ho, Wo = k.conv_output_size(9, K, s, p), k.conv_output_size(8, K, s, p)
    ref = conv_loops(x.reshape(6, 1, 9, 8), kern[None, None], None, s, p).reshape(2, 3, Ho, Wo)
    np.testing.assert_allclose(k.pool2d(x, kern, s, p), ref, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal((2, 3, Ho, Wo))
    M = conv_matrix(kern[None, None], s, p, (1, 9, 8))
    ref_T = (g.reshape(6, -1) @ M).reshape(2, 3, 9, 8)
    np.testing.assert_allclose(k.pool2d_transpose(g, kern, s, p, x.shape), ref_T, rtol=1e-12, atol=1e-12)


def test_threaded_split_equals_single_thread(rng, monkeypatch):
    """Kernels split across the thread pool give exactly the single-thread numbers."""
    x = rng.standard_normal((6, 5, 12, 11))
    w = rng.standard_normal((4, 5, 3, 3))
    g = rng.standard_normal((6, 4, 6, 6))
    monkeypatch.setattr(k, "PARALLEL_MIN_WORK", 1 << 40)
    single = k.conv2d(x, w, None, 2, 1), k.conv2d_transpose(g, w, 2, 1, (12, 11)), k.maxpool_forward(x, 3, 1)
    monkeypatch.setattr(k, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(k, "THREADS", 3)
    split = k.conv2d(x, w, None, 2, 1), k.conv2d_transpose(g, w, 2, 1, (12, 11)), k.maxpool_forward(x, 3, 1)
    np.testing.assert_array_equal(single[0], split[0])
    np.testing.assert_array_equal(single[1], split[1])
    np.testing.assert_array_equal(single[2][0], split[2][0])
    np.testing.assert_array_equal(single[2][1], split[2][1])


def test_maxpool_route_overwrites_the_planes_it_owns(rng):
    """maxpool_backward's output comes from np.empty: the routing kernel zeroes each plane it
    owns, so whatever the memory held never reaches the gradient."""
    x = rng.standard_normal((2, 3, 8, 8))
    out, arg = k.maxpool_forward(x, 2, 2)
    g = rng.standard_normal(out.shape)
    res = np.full((6, 8, 8), np.nan)
    k._maxpool_route(arg.reshape(6, 4, 4), g.reshape(6, 4, 4), 2, 2, res, 0, 1, 0, 6)
    ref = np.zeros_like(x)
    for idx in np.ndindex(*out.shape):
        n, c, oy, ox = idx
        i, j = divmod(int(arg[idx]), 2)
        ref[n, c, 2 * oy + i, 2 * ox + j] = g[idx]
    np.testing.assert_array_equal(res.reshape(x.shape), ref)


@pytest.mark.parametrize("size", [1, 1000, 10_007])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pieces", [True, False])
def test_elementwise_in_pieces_equals_whole_arrays(size, dtype, pieces, rng, monkeypatch):
    """Pieces (uneven, shared by three threads) or one call give exactly f of the whole
    arrays, in the first array's dtype; a non-contiguous input is read in its logical order."""
    if pieces:
        monkeypatch.setattr(k, "PARALLEL_MIN_WORK", 0)
        monkeypatch.setattr(k, "ELEMENTWISE_PIECE", 97)
        monkeypatch.setattr(k, "THREADS", 3)
    a = rng.standard_normal((size, 2)).astype(dtype).T  # (2, size), not C-contiguous
    g = rng.standard_normal((2, size)).astype(dtype)
    g[0, 0] = np.nan  # NaN * 0 stays NaN, as in NumPy
    relu = k.elementwise(lambda a, out: np.maximum(a, 0, out=out), a)
    grad = k.elementwise(lambda g, a, out: np.multiply(g, a > 0, out=out), g, a)
    assert relu.dtype == grad.dtype == dtype and relu.shape == grad.shape == (2, size)
    np.testing.assert_array_equal(relu, np.maximum(a, 0))
    np.testing.assert_array_equal(grad, g * (a > 0))
