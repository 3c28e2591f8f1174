"""Inner loops of the engine: numba kernels, each beside a plain NumPy twin.

Convolution is BLAS-shaped: ``im2col`` gathers every receptive field of a chunk of images
into the columns of a matrix ``cols`` (C*K*K, nb*Ho*Wo), one sgemm multiplies it by the
weights (Co, C*K*K), and the transposed convolution (the input gradient, also the relevance
pass of every LRP rule) multiplies by the transposed weights and scatters back with
``col2im``. Chunks of images keep ``cols`` a few MB, so it stays in cache and the batch
size never multiplies the scratch memory. Average pooling reuses the same two kernels on the
(N*C) planes as one-channel images (windows as columns); max pooling has its own (forward
max and argmax in one pass, gradient routing, ties-split relevance), and
``two_term_ratios`` fuses the element-wise steps of the LRP rules.

Why it looks like this (measured on these 2-core machines, see BENCHMARKS.md):
- the kernels write in memory order: scattered writes made the gather 5x slower;
- they are compiled serial (numba ``parallel=True`` compiles ~5x slower, and its OpenMP
  threads spin against OpenBLAS's) and are split across a small thread pool instead
  (``nogil``): im2col by rows, col2im and maxpool by whole planes, so overlapping windows
  scatter without races;
- small calls stay on one thread: a parallel launch costs more than it saves, and stalls
  for a scheduler slice whenever another process holds the other core.

Every kernel ``f`` has a twin ``f_ref`` written with NumPy slicing; tests check that both
give the same numbers. Kernels take C-contiguous float32 or float64 arrays.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

# Scratch budget for one chunk of im2col columns (bytes): a few MB stays in the 32 MB L3.
COLS_BUDGET = 8 << 20
# Below this many elements a kernel runs on the calling thread only: handing work to the
# pool costs about 0.2 ms here (measured), as much as an im2col of ~600k elements.
PARALLEL_MIN_WORK = 1 << 19
THREADS = int(os.environ.get("MINILRP_NUM_THREADS", 0)) or len(os.sched_getaffinity(0))
_pool = None


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution/pool along one axis (floor mode, as PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


def _split(kernel, args, n_c, n_b, work):
    """Run ``kernel(*args, c_lo, c_hi, b_lo, b_hi)`` over channels [0, n_c) x images [0, n_b),
    split across threads along the longer of the two when the work is large: each thread
    then owns whole (image, channel) planes, so scatters into them need no atomics."""
    global _pool
    n = max(n_c, n_b)
    parts = min(THREADS, n) if work >= PARALLEL_MIN_WORK else 1
    if parts <= 1:
        kernel(*args, 0, n_c, 0, n_b)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="minilrp")
    bounds = np.linspace(0, n, parts + 1).astype(int)
    ranges = [((lo, hi, 0, n_b) if n_c >= n_b else (0, n_c, lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    futures = [_pool.submit(kernel, *args, *r) for r in ranges[1:]]
    kernel(*args, *ranges[0])
    for f in futures:
        f.result()


# --------------------------------------------------------------------------------------
# The numba kernels (serial; the caller splits the work across threads). Every index is a
# sum of range() loop variables, so LLVM drops numba's negative-index checks and vectorises
# the inner loop (index arithmetic it cannot bound made the gather 3x slower).
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, boundscheck=False)
def _im2col(xp, stride, cols6, c_lo, c_hi, b_lo, b_hi):
    """cols6[c, i, j, b, oy, ox] = xp[b, c, oy*stride + i, ox*stride + j] for channels
    [c_lo, c_hi) and images [b_lo, b_hi). xp: zero-padded images (nb, C, Hp, Wp);
    cols6: (C, K, K, nb, Ho, Wo), written in memory order."""
    K, Ho, Wo = cols6.shape[1], cols6.shape[4], cols6.shape[5]
    for c in range(c_lo, c_hi):
        for i in range(K):
            for j in range(K):
                for b in range(b_lo, b_hi):
                    for oy in range(Ho):
                        if stride == 1:
                            for ox in range(Wo):
                                cols6[c, i, j, b, oy, ox] = xp[b, c, oy + i, ox + j]
                        else:
                            for ox in range(Wo):
                                cols6[c, i, j, b, oy, ox] = xp[b, c, oy * stride + i, ox * stride + j]


@njit(cache=True, nogil=True, boundscheck=False)
def _col2im(cols6, stride, outp, c_lo, c_hi, b_lo, b_hi):
    """The adjoint of _im2col: outp[b, c, oy*stride + i, ox*stride + j] += cols6[c, i, j, b, oy, ox],
    accumulated into the zero-padded outp (nb, C, Hp, Wp)."""
    K, Ho, Wo = cols6.shape[1], cols6.shape[4], cols6.shape[5]
    for c in range(c_lo, c_hi):
        for i in range(K):
            for j in range(K):
                for b in range(b_lo, b_hi):
                    for oy in range(Ho):
                        if stride == 1:
                            for ox in range(Wo):
                                outp[b, c, oy + i, ox + j] += cols6[c, i, j, b, oy, ox]
                        else:
                            for ox in range(Wo):
                                outp[b, c, oy * stride + i, ox * stride + j] += cols6[c, i, j, b, oy, ox]


@njit(cache=True, nogil=True, boundscheck=False)
def _maxpool(x, K, stride, out, arg, c_lo, c_hi, b_lo, b_hi):
    """Planes p in [b_lo, b_hi) of x (P, H, W): out (P, Ho, Wo) = window max, arg = offset
    i*K+j of the first maximum in row-major window order (PyTorch's choice on ties)."""
    Ho, Wo = out.shape[1], out.shape[2]
    if K == 2 and stride == 2:  # the common pool, unrolled with selects (3-5x faster)
        for p in range(b_lo, b_hi):
            for oy in range(Ho):
                for ox in range(Wo):
                    y0, x0 = 2 * oy, 2 * ox
                    best = x[p, y0, x0]
                    bi = 0
                    v = x[p, y0, x0 + 1]
                    c = v > best
                    best, bi = (v, 1) if c else (best, bi)
                    v = x[p, y0 + 1, x0]
                    c = v > best
                    best, bi = (v, 2) if c else (best, bi)
                    v = x[p, y0 + 1, x0 + 1]
                    c = v > best
                    best, bi = (v, 3) if c else (best, bi)
                    out[p, oy, ox] = best
                    arg[p, oy, ox] = bi
        return
    for p in range(b_lo, b_hi):
        for oy in range(Ho):
            for ox in range(Wo):
                y0 = oy * stride
                x0 = ox * stride
                best = x[p, y0, x0]
                bi = 0
                for i in range(K):
                    for j in range(K):
                        v = x[p, y0 + i, x0 + j]
                        if v > best:
                            best = v
                            bi = i * K + j
                out[p, oy, ox] = best
                arg[p, oy, ox] = bi


@njit(cache=True, nogil=True, boundscheck=False)
def _maxpool_route(x, out, arg, R, K, stride, split, res, c_lo, c_hi, b_lo, b_hi):
    """Max-pool routing for planes p in [b_lo, b_hi): res[p] += R[p, oy, ox] at the window's
    argmax ``arg`` (the gradient), or, with ``split``, shared evenly among all window
    entries equal to the maximum ``out`` (x: the pool input). res must be zeroed. Windows
    with R = 0 (common: relevance vanishes with the activation) are skipped."""
    Ho, Wo = R.shape[1], R.shape[2]
    for p in range(b_lo, b_hi):
        for oy in range(Ho):
            for ox in range(Wo):
                r = R[p, oy, ox]
                if r == 0:
                    continue
                y0 = oy * stride
                x0 = ox * stride
                k = arg[p, oy, ox]
                count = 1
                if split:
                    m = out[p, oy, ox]
                    count = 0
                    for i in range(K):
                        for j in range(K):
                            if x[p, y0 + i, x0 + j] == m:
                                count += 1
                if count == 1:
                    res[p, y0 + k // K, x0 + k % K] += r
                    continue
                share = r / count
                for i in range(K):
                    for j in range(K):
                        if x[p, y0 + i, x0 + j] == m:
                            res[p, y0 + i, x0 + j] += share


@njit(cache=True, nogil=True, boundscheck=False)
def _maxpool_split_tiled(x, out, R, K, res, c_lo, c_hi, b_lo, b_hi):
    """Ties-split routing for non-overlapping windows (stride = K), planes [b_lo, b_hi): every
    input a window covers is written exactly once, res = R / #ties where x equals the window
    maximum ``out``, else 0. No zeroing, no accumulation, no branches: 5x faster than
    :func:`_maxpool_route` on 2x2 pools. Rows/columns no window covers are left to the caller."""
    Ho, Wo = R.shape[1], R.shape[2]
    one, zero = res.dtype.type(1), res.dtype.type(0)
    if K == 2:  # the common pool, unrolled (the generic loops below run 4x slower)
        for p in range(b_lo, b_hi):
            for oy in range(Ho):
                for ox in range(Wo):
                    m = out[p, oy, ox]
                    y, x0 = 2 * oy, 2 * ox
                    v0 = one if x[p, y, x0] == m else zero
                    v1 = one if x[p, y, x0 + 1] == m else zero
                    v2 = one if x[p, y + 1, x0] == m else zero
                    v3 = one if x[p, y + 1, x0 + 1] == m else zero
                    share = R[p, oy, ox] / (v0 + v1 + v2 + v3)
                    res[p, y, x0] = share * v0
                    res[p, y, x0 + 1] = share * v1
                    res[p, y + 1, x0] = share * v2
                    res[p, y + 1, x0 + 1] = share * v3
        return
    for p in range(b_lo, b_hi):
        for oy in range(Ho):
            for ox in range(Wo):
                m = out[p, oy, ox]
                count = 0
                for i in range(K):
                    for j in range(K):
                        count += x[p, oy * K + i, ox * K + j] == m
                share = R[p, oy, ox] / res.dtype.type(count)
                for i in range(K):
                    for j in range(K):
                        res[p, oy * K + i, ox * K + j] = share * (x[p, oy * K + i, ox * K + j] == m)


@njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc"})
def _two_term_ratios(PQ, Qa, q0, R, B, C, gamma, S, shares, c_lo, c_hi, b_lo, b_hi):
    """The element-wise steps of the two-term LRP rules in one pass, for images [b_lo, b_hi).

    PQ (N, Co, L): P = a w+ in its first Co channels. B (4, Co): bias, bias_p, bias_n, qb;
    C: ap, bp, an, bn, cp, cn, eps, qp (packed: numba's dispatch costs ~0.2 us per argument).
    Q = a w- is read as Qa[n, q0 + k, l] - qp P - qb[k]: either stacked after P (Qa = PQ,
    q0 = Co, qp = 0, qb = 0) or recovered from the layer's output z = P + Q + b (Qa = z,
    q0 = 0, qp = 1, qb = b); Qa of 0 channels: one term (Q = 0). R (N, Co, L).
    Denominators d_p = ap P + bp Q + bias_p[k], d_n = an P + bn Q + bias_n[k], stabilised
    s(d) = d + eps sign0(d). gamma: use d_p only where z = P + Q + bias > 0 and d_n only
    where z < 0 (LRP-gamma); else both everywhere (alpha-beta). Writes
    S[:, :Co] = cp R / s(d_p), S[:, Co:] = cn R / s(d_n) (0 where unused or s(d) = 0), and
    per image into shares (N, 5): bias, stabiliser, dropped, positive (sum S_p P),
    negative (-sum S_n Q).

    Branch-free (selects instead of ifs) in the working dtype, with reassociation allowed only
    (fastmath "reassoc": no nnan/ninf around the division): the loop vectorises, 2-4x faster
    than with branches; a division by a zero denominator is computed and discarded."""
    Co, L = R.shape[1], R.shape[2]
    ap, bp, an, bn, cp, cn, eps, qp = C[0], C[1], C[2], C[3], C[4], C[5], C[6], C[7]
    two = Qa.shape[1] > 0
    zero, one = R.dtype.type(0), R.dtype.type(1)
    for n in range(b_lo, b_hi):
        sb = 0.0
        ss = 0.0
        sd = 0.0
        sp_sum = 0.0
        sn_sum = 0.0
        for k in range(Co):
            bk, bpk, bnk, qbk = B[0, k], B[1, k], B[2, k], B[3, k]
            # the one-term loop repeats the P half of the two-term loop below on purpose: merged
            # (Q = 0, the second half masked off), both run 1.3-2.7x slower (measured)
            if not two:  # one term (Q = 0): s = cp R / s(ap P + bias_p)
                for l in range(L):
                    r = R[n, k, l]
                    P = PQ[n, k, l]
                    z = P + bk
                    use_p = (z > 0) | (not gamma)
                    sd += r if (gamma & (z == 0)) else zero
                    d = ap * P + bpk
                    st = d + (eps if d >= 0 else -eps)
                    ok = use_p & (st != 0)
                    s_p = cp * r / (st if ok else one) if ok else zero
                    sd += cp * r if (use_p & (st == 0)) else zero
                    sb += s_p * bpk
                    ss += s_p * (st - d)
                    sp_sum += s_p * P
                    S[n, k, l] = s_p
                continue
            for l in range(L):
                r = R[n, k, l]
                P = PQ[n, k, l]
                Q = Qa[n, q0 + k, l] - qp * P - qbk
                z = P + Q + bk
                use_p = (z > 0) | (not gamma)
                use_n = (z < 0) | (not gamma)
                sd += r if (gamma & (z == 0)) else zero
                d = ap * P + bp * Q + bpk
                st = d + (eps if d >= 0 else -eps)
                ok = use_p & (st != 0)
                s_p = cp * r / (st if ok else one) if ok else zero
                sd += cp * r if (use_p & (st == 0)) else zero
                sb += s_p * bpk
                ss += s_p * (st - d)
                sp_sum += s_p * P
                S[n, k, l] = s_p
                d = an * P + bn * Q + bnk
                st = d + (eps if d >= 0 else -eps)
                ok = use_n & (st != 0)
                s_n = cn * r / (st if ok else one) if ok else zero
                sd += cn * r if (use_n & (st == 0)) else zero
                sb += s_n * bnk
                ss += s_n * (st - d)
                sn_sum -= s_n * Q
                S[n, Co + k, l] = s_n
        shares[n, 0] = sb
        shares[n, 1] = ss
        shares[n, 2] = sd
        shares[n, 3] = sp_sum
        shares[n, 4] = sn_sum


# --------------------------------------------------------------------------------------
# im2col / col2im and their twins
# --------------------------------------------------------------------------------------
def _padded(x, pad, key):
    """x (nb, C, H, W) zero-padded by ``pad`` on each side, in a reused scratch buffer."""
    if pad == 0:
        return np.ascontiguousarray(x)
    nb, C, H, W = x.shape
    xp = _buffer(key, nb * C * (H + 2 * pad) * (W + 2 * pad), x.dtype).reshape(nb, C, H + 2 * pad, W + 2 * pad)
    xp[:, :, :pad] = 0
    xp[:, :, H + pad:] = 0
    xp[:, :, pad:H + pad, :pad] = 0
    xp[:, :, pad:H + pad, W + pad:] = 0
    xp[:, :, pad:H + pad, pad:W + pad] = x
    return xp


def im2col(x, n0, nb, K, stride, pad, Ho, Wo, cols):
    """Receptive fields of images n0..n0+nb of x (N, C, H, W) as the columns of
    cols (C*K*K, nb*Ho*Wo): row (c, i, j), column (b, oy, ox)."""
    C = x.shape[1]
    xp = _padded(x[n0:n0 + nb], pad, "pad")
    _split(_im2col, (xp, stride, cols.reshape(C, K, K, nb, Ho, Wo)), C, nb, cols.size)


def col2im(cols, n0, nb, K, stride, pad, Ho, Wo, out):
    """Scatter-add columns back into images n0..n0+nb of out (N, C, H, W), the adjoint of
    :func:`im2col`; overlapping windows accumulate."""
    C, H, W = out.shape[1:]
    if pad == 0:  # accumulate in place
        outp = out[n0:n0 + nb]
    else:
        outp = _buffer("unpad", nb * C * (H + 2 * pad) * (W + 2 * pad), out.dtype).reshape(nb, C, H + 2 * pad, W + 2 * pad)
        outp[...] = 0
    _split(_col2im, (cols.reshape(C, K, K, nb, Ho, Wo), stride, outp), C, nb, cols.size)
    if pad:
        out[n0:n0 + nb] += outp[:, :, pad:pad + H, pad:pad + W]


def im2col_ref(x, n0, nb, K, stride, pad, Ho, Wo, cols):
    """NumPy twin of :func:`im2col`."""
    C = x.shape[1]
    xp = np.pad(x[n0:n0 + nb], ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    view = cols.reshape(C, K, K, nb, Ho, Wo)
    for i in range(K):
        for j in range(K):
            win = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            view[:, i, j] = win.transpose(1, 0, 2, 3)


def col2im_ref(cols, n0, nb, K, stride, pad, Ho, Wo, out):
    """NumPy twin of :func:`col2im`."""
    C, H, W = out.shape[1:]
    xp = np.zeros((nb, C, H + 2 * pad, W + 2 * pad), out.dtype)
    view = cols.reshape(C, K, K, nb, Ho, Wo)
    for i in range(K):
        for j in range(K):
            xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
                view[:, i, j].transpose(1, 0, 2, 3)
    out[n0:n0 + nb] += xp[:, :, pad:pad + H, pad:pad + W]


# --------------------------------------------------------------------------------------
# Convolution (forward) and transposed convolution (input gradient): chunked im2col + GEMM
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


def conv2d(x, w, b, stride=1, pad=0, im2col_fn=im2col, also=None):
    """Cross-correlation as PyTorch's conv2d: out[n,o] = sum_c x[n,c] (*) w[o,c] + b[o].

    x: (N, C, H, W); w: (Co, C, K, K); b: (Co,) or None -> (N, Co, Ho, Wo).
    also: more weights (Ce, C, K, K) to convolve x with (no bias) from the same im2col
    columns; then -> (out, out_also (N, Ce, Ho, Wo)). out is the same either way.
    """
    N, C, H, W = x.shape
    Co, _, K, _ = w.shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    L, CKK = Ho * Wo, C * K * K
    parts = [(w.reshape(Co, CKK), np.empty((N, Co, Ho, Wo), x.dtype), "res")]
    if also is not None:
        parts.append((also.reshape(len(also), CKK), np.empty((N, len(also), Ho, Wo), x.dtype), "res also"))
    nb = _chunk(N, CKK * L, x.itemsize)
    colbuf = _buffer("cols", CKK * nb * L, x.dtype)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        c = colbuf[:CKK * m * L].reshape(CKK, m * L)
        im2col_fn(x, n0, m, K, stride, pad, Ho, Wo, c)
        for w2, out, key in parts:
            o3 = out.reshape(N, -1, L)
            if m == 1:  # one image per chunk (large images): the GEMM writes the output directly
                np.matmul(w2, c, out=o3[n0])
            else:
                res = _buffer(key, len(w2) * m * L, x.dtype).reshape(len(w2), m * L)
                np.matmul(w2, c, out=res)
                o3[n0:n0 + m] = res.reshape(-1, m, L).transpose(1, 0, 2)
    out = parts[0][1]
    if b is not None:
        out += b.reshape(-1, 1, 1)
    return out if also is None else (out, parts[1][1])


def conv2d_transpose(g, w, stride, pad, in_hw, col2im_fn=col2im):
    """Adjoint of :func:`conv2d` in its input (the input gradient / transposed conv):
    returns dx with <conv2d(x, w), g> = <x, dx>.

    g: (N, Co, Ho, Wo); w: (Co, C, K, K); in_hw: (H, W) of the input -> (N, C, H, W).
    Input rows/columns no window reaches (stride remainder) get zero.
    """
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
        if m == 1:  # one image per chunk (large images): its gradient is already (Co, L)
            gt = g3[n0]
        else:
            gt = resbuf[:Co * m * L].reshape(Co, m, L)
            gt[...] = g3[n0:n0 + m].transpose(1, 0, 2)
        cols = colbuf[:CKK * m * L].reshape(CKK, m * L)
        if Co == 1:  # an outer product (LRP's flat rule): 2x faster than through BLAS
            np.multiply(wT, gt.reshape(1, m * L), out=cols)
        else:
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
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), g.dtype)
    for i in range(K):
        for j in range(K):
            xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
                np.einsum("nohw,oc->nchw", g, w[:, :, i, j])
    return np.ascontiguousarray(xp[:, :, pad:pad + H, pad:pad + W])


# --------------------------------------------------------------------------------------
# Pooling: every (n, c) plane as a one-channel image; windows are im2col columns
# --------------------------------------------------------------------------------------
def windows(x, K, stride, pad=0):
    """The K x K windows of x (N, C, H, W) as columns: (K*K, N*C*Ho*Wo)."""
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    cols = np.empty((K * K, N * C * Ho * Wo), x.dtype)
    im2col(np.ascontiguousarray(x).reshape(N * C, 1, H, W), 0, N * C, K, stride, pad, Ho, Wo, cols)
    return cols


def unwindows(cols, K, stride, pad, shape):
    """Adjoint of :func:`windows`: scatter-add columns back into an array of ``shape``."""
    N, C, H, W = shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    out = np.zeros((N * C, 1, H, W), cols.dtype)
    col2im(np.ascontiguousarray(cols), 0, N * C, K, stride, pad, Ho, Wo, out)
    return out.reshape(shape)


def maxpool_forward(x, K, stride):
    """Max over K x K windows (no padding). x: (N, C, H, W) -> out (N, C, Ho, Wo) and arg
    (uint8 or int32, same shape): the window offset i*K+j of the first maximum."""
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, K, stride, 0), conv_output_size(W, K, stride, 0)
    out = np.empty((N * C, Ho, Wo), x.dtype)
    arg = np.empty((N * C, Ho, Wo), np.uint8 if K * K <= 256 else np.int32)
    _split(_maxpool, (np.ascontiguousarray(x).reshape(N * C, H, W), K, stride, out, arg), 1, N * C, x.size)
    return out.reshape(N, C, Ho, Wo), arg.reshape(N, C, Ho, Wo)


def maxpool_forward_ref(x, K, stride):
    """NumPy twin of :func:`maxpool_forward`."""
    cols = windows(x, K, stride)
    N, C, H, W = x.shape
    shape = (N, C, conv_output_size(H, K, stride, 0), conv_output_size(W, K, stride, 0))
    return cols.max(axis=0).reshape(shape), cols.argmax(axis=0).reshape(shape)


def _route(x, out, arg, R, K, stride, in_shape, split):
    """Run _maxpool_route over every (n, c) plane (x and out are only read with ``split``)."""
    N, C, H, W = in_shape
    per_plane = (N * C,) + R.shape[2:]
    res = np.zeros((N * C, H, W), R.dtype)
    args = (np.ascontiguousarray(x).reshape(N * C, H, W) if split else res,
            np.ascontiguousarray(out).reshape(per_plane) if split else R.reshape(per_plane),
            np.ascontiguousarray(arg).reshape(per_plane),
            np.ascontiguousarray(R).reshape(per_plane), K, stride, split, res)
    _split(_maxpool_route, args, 1, N * C, res.size)
    return res.reshape(in_shape)


def maxpool_backward(g, arg, K, stride, in_shape):
    """Route each output gradient g (N, C, Ho, Wo) to its window's argmax; overlapping
    windows accumulate. -> in_shape."""
    return _route(None, None, arg, g, K, stride, in_shape, False)


def maxpool_relevance(a, out, arg, R, K, stride):
    """Winner-take-all relevance with ties split evenly: R_in[j] = sum over windows k
    holding j of R[k] [a_j == out_k] / #ties_k. a: (N, C, H, W); out, arg (from
    :func:`maxpool_forward`), R: (N, C, Ho, Wo)."""
    if stride != K:  # overlapping windows (or gaps): accumulate
        return _route(a, out, arg, R, K, stride, a.shape, True)
    N, C, H, W = a.shape
    Ho, Wo = R.shape[2:]
    res = np.empty((N * C, H, W), R.dtype)  # every input a window covers is written once
    if H > Ho * K or W > Wo * K:
        res[:, Ho * K:] = 0
        res[:, :, Wo * K:] = 0
    planes = lambda v: np.ascontiguousarray(v).reshape((N * C,) + v.shape[2:])
    _split(_maxpool_split_tiled, (planes(a), planes(out), planes(R), K, res), 1, N * C, res.size)
    return res.reshape(a.shape)


def maxpool_relevance_ref(a, out, arg, R, K, stride):
    """NumPy twin of :func:`maxpool_relevance` (and, through ties, of routing)."""
    cols = windows(a, K, stride)
    ties = cols == out.reshape(1, -1)
    share = R.reshape(1, -1) / ties.sum(axis=0, keepdims=True)
    return unwindows(ties * share, K, stride, 0, a.shape)


def two_term_ratios(PQ, R, bias, bias_p, bias_n, ap, bp, an, bn, cp, cn, eps, gamma, z=None, z_bias=None):
    """Fused element-wise steps of LRP-gamma / alpha-beta / z+ for non-negative inputs (see
    :func:`_two_term_ratios`). PQ: P and Q stacked (N, 2Co, ...), or P alone (N, Co, ...) for
    one term, or P alone with ``z`` (N, Co, ...), the layer's output P + Q + z_bias, giving Q
    (the forward pass already paid for it: one GEMM fewer); R: (N, Co, ...); bias, bias_p,
    bias_n, z_bias: (Co,). -> S (N, 2Co, ...) for two terms, else (N, Co, ...); shares (N, 5)
    float64."""
    N, Co = R.shape[:2]
    L = R.size // (N * Co)
    dt = R.dtype
    P = np.ascontiguousarray(PQ, dt).reshape(N, -1, L)
    if z is not None:
        Qa, q0, qp, qb = np.ascontiguousarray(z, dt).reshape(N, Co, L), 0, 1, z_bias
    else:
        Qa, q0, qp, qb = (P if PQ.shape[1] == 2 * Co else np.empty((N, 0, L), dt)), Co, 0, 0
    S = np.empty((N, (2 if Qa.shape[1] else 1) * Co) + R.shape[2:], dt)
    shares = np.zeros((N, 5))
    B = np.empty((4, Co), dt)
    B[0], B[1], B[2], B[3] = bias, bias_p, bias_n, qb
    C = np.array([ap, bp, an, bn, cp, cn, eps, qp], dt)
    _split(_two_term_ratios, (P, Qa, q0, np.ascontiguousarray(R).reshape(N, Co, L), B, C, gamma,
                              S.reshape(N, -1, L), shares), 1, N, S.size)
    return S, shares


def two_term_ratios_ref(PQ, R, bias, bias_p, bias_n, ap, bp, an, bn, cp, cn, eps, gamma, z=None, z_bias=None):
    """NumPy twin of :func:`two_term_ratios`."""
    N, Co = R.shape[:2]
    shape = (1, Co) + (1,) * (R.ndim - 2)
    bias, bias_p, bias_n = (np.asarray(v).reshape(shape) for v in (bias, bias_p, bias_n))
    P = PQ[:, :Co]
    if z is not None:
        Q = z - np.asarray(z_bias).reshape(shape) - P
        two = True
    else:
        two = PQ.shape[1] == 2 * Co
        Q = PQ[:, Co:] if two else np.zeros_like(P)
    z = P + Q + bias
    use_p = z > 0 if gamma else np.ones(P.shape, bool)
    use_n = (z < 0 if gamma else np.ones(P.shape, bool)) & two
    total = lambda v: v.reshape(N, -1).sum(axis=1)
    out, sums = [], np.zeros((N, 5))
    sums[:, 2] = total(np.where(gamma & (z == 0), R, 0))
    for use, a_, b_, bb, c, part, sign in ((use_p, ap, bp, bias_p, cp, P, 1), (use_n, an, bn, bias_n, cn, Q, -1)):
        d = a_ * P + b_ * Q + bb
        st = d + np.where(d >= 0, eps, -eps)
        ok = use & (st != 0)
        s = np.where(ok, c * R / np.where(ok, st, 1), 0)
        sums[:, 0] += total(s * bb)
        sums[:, 1] += total(s * (st - d))
        sums[:, 2] += total(np.where(use & (st == 0), c * R, 0))
        sums[:, 3 if sign > 0 else 4] += sign * total(s * part)
        out.append(s)
    return (np.concatenate(out, axis=1) if two else out[0]), sums


def pool2d(x, k, stride, pad):
    """Depthwise pooling with kernel k (K, K): out = sum_ij k[i,j] x[.., oy*s+i-p, ox*s+j-p],
    zero padded. Average pooling is k = 1/K^2 (PyTorch's count_include_pad=True)."""
    N, C, H, W = x.shape
    K = k.shape[0]
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    return (k.reshape(1, -1).astype(x.dtype) @ windows(x, K, stride, pad)).reshape(N, C, Ho, Wo)


def pool2d_transpose(g, k, stride, pad, in_shape):
    """Adjoint of :func:`pool2d` in x: scatter g[.., oy, ox] * k[i, j] back into the windows."""
    cols = k.reshape(-1, 1).astype(g.dtype) * g.reshape(1, -1)
    return unwindows(cols, k.shape[0], stride, pad, in_shape)
