"""Inner loops of the engine: numba kernels, each beside a plain NumPy twin.

Convolution is BLAS-shaped: ``im2col`` gathers every receptive field of a chunk of images
into the columns of a matrix ``cols`` (C*K*K, nb*Ho*Wo), one sgemm multiplies it by the
weights (Co, C*K*K), and the transposed convolution (the input gradient, also the relevance
pass of every LRP rule) multiplies by the transposed weights and scatters back with
``col2im``. Chunks of images keep ``cols`` a few MB, so it stays in cache and the
batch size never multiplies the scratch memory.

The kernels write their output row by row in memory order (measured here: scattered
writes made the gather 5x slower) and run ``prange`` over input channels, so every thread
owns whole input planes: ``col2im`` scatters into overlapping windows without races.

Every numba kernel ``f`` has a twin ``f_ref`` written with NumPy slicing; tests check that
both give the same numbers. Kernels take C-contiguous float32 or float64 arrays.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, prange

__all__ = [
    "conv_output_size", "im2col", "im2col_ref", "col2im", "col2im_ref",
    "conv2d", "conv2d_ref", "conv2d_transpose", "conv2d_transpose_ref",
    "maxpool_forward", "maxpool_forward_ref", "maxpool_backward", "maxpool_backward_ref",
    "pool2d", "pool2d_ref", "pool2d_transpose", "pool2d_transpose_ref",
    "maxpool_relevance", "maxpool_relevance_ref",
]

# Scratch budget for one chunk of im2col columns (bytes): a few MB stays in the 32 MB L3.
COLS_BUDGET = 8 << 20
# Below this many elements a kernel runs on one thread: a parallel launch costs more than it
# saves, and stalls for a whole scheduler slice (measured: 8 ms instead of 8 us for a tiny
# max-pool) whenever another process holds the other core.
PARALLEL_MIN_WORK = 1 << 16


@contextmanager
def threads_for(work: int):
    """Run the numba kernels inside on one thread when ``work`` (elements) is small."""
    if work >= PARALLEL_MIN_WORK:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def kernel(fn):
    """Compile ``fn`` with numba (parallel, cached) and run it on as many threads as the
    size of its largest array argument deserves. ``f.compiled`` is the numba dispatcher."""
    compiled = njit(parallel=True, cache=True, nogil=True, boundscheck=False)(fn)

    @functools.wraps(fn)
    def run(*args):
        work = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
        with threads_for(work):
            return compiled(*args)

    run.compiled = compiled
    return run


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution/pool along one axis (floor mode, as PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


# --------------------------------------------------------------------------------------
# im2col / col2im
# --------------------------------------------------------------------------------------
@kernel
def im2col(x, n0, nb, K, stride, pad, Ho, Wo, cols):
    """Gather receptive fields: cols[(c*K+i)*K+j, b*Ho*Wo + oy*Wo + ox] =
    x[n0+b, c, oy*stride+i-pad, ox*stride+j-pad] (zero outside the image).

    x: (N, C, H, W); cols: (C*K*K, nb*Ho*Wo), written in memory order.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    L = Ho * Wo
    for c in prange(C):
        for i in range(K):
            for j in range(K):
                row = (c * K + i) * K + j
                # output columns whose input column ox*stride+j-pad lies inside [0, W)
                lo = max(0, (pad - j + stride - 1) // stride)
                hi = min(Wo, (W - 1 + pad - j) // stride + 1)
                hi = max(hi, lo)
                for b in range(nb):
                    for oy in range(Ho):
                        d = b * L + oy * Wo
                        iy = oy * stride + i - pad
                        if iy < 0 or iy >= H:
                            for ox in range(Wo):
                                cols[row, d + ox] = 0.0
                        else:
                            for ox in range(lo):
                                cols[row, d + ox] = 0.0
                            for ox in range(lo, hi):
                                cols[row, d + ox] = x[n0 + b, c, iy, ox * stride + j - pad]
                            for ox in range(hi, Wo):
                                cols[row, d + ox] = 0.0


def im2col_ref(x, n0, nb, K, stride, pad, Ho, Wo, cols):
    """NumPy twin of :func:`im2col`."""
    C = x.shape[1]
    xp = np.pad(x[n0:n0 + nb], ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    view = cols.reshape(C, K, K, nb, Ho, Wo)
    for i in range(K):
        for j in range(K):
            win = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            view[:, i, j] = win.transpose(1, 0, 2, 3)


@kernel
def col2im(cols, n0, nb, K, stride, pad, Ho, Wo, out):
    """Scatter-add columns back into images, the adjoint of :func:`im2col`:
    out[n0+b, c, oy*stride+i-pad, ox*stride+j-pad] += cols[(c*K+i)*K+j, b*Ho*Wo + oy*Wo + ox].

    out: (N, C, H, W), accumulated into (zero it first). prange over c: no two threads
    touch the same plane, so overlapping windows need no atomics.
    """
    C, H, W = out.shape[1], out.shape[2], out.shape[3]
    L = Ho * Wo
    for c in prange(C):
        for i in range(K):
            for j in range(K):
                row = (c * K + i) * K + j
                lo = max(0, (pad - j + stride - 1) // stride)
                hi = min(Wo, (W - 1 + pad - j) // stride + 1)
                for b in range(nb):
                    for oy in range(Ho):
                        iy = oy * stride + i - pad
                        if iy < 0 or iy >= H:
                            continue
                        d = b * L + oy * Wo
                        for ox in range(lo, hi):
                            out[n0 + b, c, iy, ox * stride + j - pad] += cols[row, d + ox]


def col2im_ref(cols, n0, nb, K, stride, pad, Ho, Wo, out):
    """NumPy twin of :func:`col2im`."""
    C, H, W = out.shape[1:]
    xp = np.zeros((nb, C, H + 2 * pad + stride, W + 2 * pad + stride), out.dtype)
    view = cols.reshape(C, K, K, nb, Ho, Wo)
    for i in range(K):
        for j in range(K):
            xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
                view[:, i, j].transpose(1, 0, 2, 3)
    out[n0:n0 + nb] += xp[:, :, pad:pad + H, pad:pad + W]


# --------------------------------------------------------------------------------------
# Convolution (forward) and transposed convolution (input gradient), chunked im2col + GEMM
# --------------------------------------------------------------------------------------
_scratch: dict = {}


def _buffer(key: str, size: int, dtype) -> np.ndarray:
    """A reusable flat scratch buffer: large temporaries that are freed and re-faulted on
    every call cost more than the work on these VMs (DESIGN.md), so keep them."""
    dtype = np.dtype(dtype)
    buf = _scratch.get((key, dtype))
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype)
        _scratch[(key, dtype)] = buf
    return buf[:size]


def _chunk(n: int, per_image: int, itemsize: int) -> int:
    return max(1, min(n, COLS_BUDGET // max(1, per_image * itemsize)))


def conv2d(x, w, b, stride=1, pad=0, im2col_fn=None):
    """Cross-correlation as in PyTorch's conv2d: out[n,o] = sum_c x[n,c] (*) w[o,c] + b[o].

    x: (N, C, H, W); w: (Co, C, K, K); b: (Co,) or None -> (N, Co, Ho, Wo).
    """
    im2col_fn = im2col if im2col_fn is None else im2col_fn
    N, C, H, W = x.shape
    Co, _, K, _ = w.shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    L, CKK = Ho * Wo, C * K * K
    w2 = w.reshape(Co, CKK)
    out = np.empty((N, Co, Ho, Wo), x.dtype)
    o3 = out.reshape(N, Co, L)
    nb = _chunk(N, CKK * L, x.itemsize)
    colbuf = _buffer("cols", CKK * nb * L, x.dtype)
    resbuf = _buffer("res", Co * nb * L, x.dtype)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        cols = colbuf[:CKK * m * L].reshape(CKK, m * L)
        res = resbuf[:Co * m * L].reshape(Co, m * L)
        im2col_fn(x, n0, m, K, stride, pad, Ho, Wo, cols)
        np.matmul(w2, cols, out=res)
        o3[n0:n0 + m] = res.reshape(Co, m, L).transpose(1, 0, 2)
    if b is not None:
        o3 += b[:, None]
    return out


def conv2d_transpose(g, w, stride, pad, in_hw, col2im_fn=None):
    """Adjoint of :func:`conv2d` in its input (the input gradient / transposed conv):
    returns dx with <conv2d(x, w), g> = <x, dx>.

    g: (N, Co, Ho, Wo); w: (Co, C, K, K); in_hw: (H, W) of the input -> (N, C, H, W).
    Input rows/columns no window reaches (stride remainder) get zero.
    """
    col2im_fn = col2im if col2im_fn is None else col2im_fn
    N, Co, Ho, Wo = g.shape
    _, C, K, _ = w.shape
    H, W = in_hw
    L, CKK = Ho * Wo, C * K * K
    wT = w.reshape(Co, CKK).T
    out = np.zeros((N, C, H, W), g.dtype)
    g3 = g.reshape(N, Co, L)
    nb = _chunk(N, CKK * L, g.itemsize)
    colbuf = _buffer("cols", CKK * nb * L, g.dtype)
    resbuf = _buffer("res", Co * nb * L, g.dtype)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        gt = resbuf[:Co * m * L].reshape(Co, m, L)
        gt[...] = g3[n0:n0 + m].transpose(1, 0, 2)
        cols = colbuf[:CKK * m * L].reshape(CKK, m * L)
        np.matmul(wT, gt.reshape(Co, m * L), out=cols)
        col2im_fn(cols, n0, m, K, stride, pad, Ho, Wo, out)
    return out


def conv2d_ref(x, w, b, stride=1, pad=0):
    """Plain NumPy twin of :func:`conv2d`: one tensordot per kernel offset."""
    N, C, H, W = x.shape
    Co, _, K, _ = w.shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, Co, Ho, Wo), x.dtype)
    for i in range(K):
        for j in range(K):
            win = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", win, w[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv2d_transpose_ref(g, w, stride, pad, in_hw):
    """Plain NumPy twin of :func:`conv2d_transpose`."""
    N, Co, Ho, Wo = g.shape
    _, C, K, _ = w.shape
    H, W = in_hw
    xp = np.zeros((N, C, H + 2 * pad + stride, W + 2 * pad + stride), g.dtype)
    for i in range(K):
        for j in range(K):
            xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
                np.einsum("nohw,oc->nchw", g, w[:, :, i, j])
    return np.ascontiguousarray(xp[:, :, pad:pad + H, pad:pad + W])


# --------------------------------------------------------------------------------------
# Max pooling: forward with argmax, backward routing
# --------------------------------------------------------------------------------------
@kernel
def maxpool_forward(x, K, stride, Ho, Wo):
    """out[n,c,oy,ox] = max of the K x K window at (oy*stride, ox*stride) (no padding);
    arg[n,c,oy,ox] = flat index y*W+x of the first maximum in row-major window order
    (PyTorch's choice on ties). x: (N, C, H, W) -> out (N, C, Ho, Wo), arg int64."""
    N, C, H, W = x.shape
    out = np.empty((N, C, Ho, Wo), x.dtype)
    arg = np.empty((N, C, Ho, Wo), np.int64)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oy in range(Ho):
            for ox in range(Wo):
                y0 = oy * stride
                x0 = ox * stride
                best = x[n, c, y0, x0]
                bi = y0 * W + x0
                for i in range(K):
                    for j in range(K):
                        v = x[n, c, y0 + i, x0 + j]
                        if v > best:
                            best = v
                            bi = (y0 + i) * W + x0 + j
                out[n, c, oy, ox] = best
                arg[n, c, oy, ox] = bi
    return out, arg


def maxpool_forward_ref(x, K, stride, Ho, Wo):
    """NumPy twin of :func:`maxpool_forward`."""
    N, C, H, W = x.shape
    wins = np.stack([x[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
                     for i in range(K) for j in range(K)], axis=-1)
    k = wins.argmax(axis=-1)  # first maximum in (i, j) row-major order
    i, j = k // K, k % K
    oy = np.arange(Ho)[:, None] * stride
    ox = np.arange(Wo)[None, :] * stride
    return wins.max(axis=-1), (oy + i) * W + ox + j


@kernel
def maxpool_backward(g, arg, H, W):
    """Route each output gradient to its window's argmax; overlapping windows accumulate.
    g, arg: (N, C, Ho, Wo) -> (N, C, H, W)."""
    N, C, Ho, Wo = g.shape
    out = np.zeros((N, C, H, W), g.dtype)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oy in range(Ho):
            for ox in range(Wo):
                k = arg[n, c, oy, ox]
                out[n, c, k // W, k % W] += g[n, c, oy, ox]
    return out


def maxpool_backward_ref(g, arg, H, W):
    """NumPy twin of :func:`maxpool_backward`."""
    N, C = g.shape[:2]
    out = np.zeros((N * C, H * W), g.dtype)
    rows = np.repeat(np.arange(N * C), g[0, 0].size)
    np.add.at(out, (rows, arg.reshape(-1)), g.reshape(-1))
    return out.reshape(N, C, H, W)


# --------------------------------------------------------------------------------------
# Depthwise pooling with a K x K kernel (average pooling, and LRP's rho-modified pools)
# --------------------------------------------------------------------------------------
@kernel
def pool2d(x, k, stride, pad, Ho, Wo):
    """out[n,c,oy,ox] = sum_ij k[i,j] x[n,c,oy*stride+i-pad, ox*stride+j-pad], zero padded.
    Average pooling is k = 1/K^2 (PyTorch's count_include_pad=True)."""
    N, C, H, W = x.shape
    K = k.shape[0]
    out = np.zeros((N, C, Ho, Wo), x.dtype)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oy in range(Ho):
            for ox in range(Wo):
                s = 0.0
                for i in range(K):
                    iy = oy * stride + i - pad
                    if iy < 0 or iy >= H:
                        continue
                    for j in range(K):
                        ix = ox * stride + j - pad
                        if ix >= 0 and ix < W:
                            s += k[i, j] * x[n, c, iy, ix]
                out[n, c, oy, ox] = s
    return out


@kernel
def pool2d_transpose(g, k, stride, pad, H, W):
    """Adjoint of :func:`pool2d` in x: scatter g[n,c,oy,ox]*k[i,j] back into the window."""
    N, C, Ho, Wo = g.shape
    K = k.shape[0]
    out = np.zeros((N, C, H, W), g.dtype)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oy in range(Ho):
            for ox in range(Wo):
                v = g[n, c, oy, ox]
                for i in range(K):
                    iy = oy * stride + i - pad
                    if iy < 0 or iy >= H:
                        continue
                    for j in range(K):
                        ix = ox * stride + j - pad
                        if ix >= 0 and ix < W:
                            out[n, c, iy, ix] += k[i, j] * v
    return out


def pool2d_ref(x, k, stride, pad, Ho, Wo):
    """NumPy twin of :func:`pool2d`: a depthwise conv2d_ref."""
    N, C, H, W = x.shape
    y = conv2d_ref(x.reshape(N * C, 1, H, W), k[None, None], None, stride, pad)
    return y.reshape(N, C, Ho, Wo)


def pool2d_transpose_ref(g, k, stride, pad, H, W):
    """NumPy twin of :func:`pool2d_transpose`."""
    N, C, Ho, Wo = g.shape
    y = conv2d_transpose_ref(g.reshape(N * C, 1, Ho, Wo), k[None, None], stride, pad, (H, W))
    return y.reshape(N, C, H, W)


# --------------------------------------------------------------------------------------
# Max-pool relevance: winner-take-all with ties split evenly
# --------------------------------------------------------------------------------------
@kernel
def maxpool_relevance(a, out, R, K, stride):
    """R_in[j] = sum over windows k holding j of R[k] * [a_j == out_k] / #ties_k.
    a: (N, C, H, W) pool input; out, R: (N, C, Ho, Wo). Overlapping windows accumulate."""
    N, C, H, W = a.shape
    Ho, Wo = R.shape[2], R.shape[3]
    res = np.zeros((N, C, H, W), R.dtype)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oy in range(Ho):
            for ox in range(Wo):
                m = out[n, c, oy, ox]
                y0 = oy * stride
                x0 = ox * stride
                count = 0
                for i in range(K):
                    for j in range(K):
                        if a[n, c, y0 + i, x0 + j] == m:
                            count += 1
                share = R[n, c, oy, ox] / count
                for i in range(K):
                    for j in range(K):
                        if a[n, c, y0 + i, x0 + j] == m:
                            res[n, c, y0 + i, x0 + j] += share
    return res


def maxpool_relevance_ref(a, out, R, K, stride):
    """NumPy twin of :func:`maxpool_relevance`."""
    N, C, H, W = a.shape
    Ho, Wo = R.shape[2:]
    res = np.zeros_like(a, dtype=R.dtype)
    ties = []
    for i in range(K):
        for j in range(K):
            win = a[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            ties.append(win == out)
    count = np.sum(ties, axis=0)
    for t, (i, j) in zip(ties, [(i, j) for i in range(K) for j in range(K)]):
        res[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += t * R / count
    return res
