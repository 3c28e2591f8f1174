"""Inner loops of the engine: numba kernels, each beside a plain NumPy twin.

Convolution is BLAS-shaped: ``im2col`` gathers every receptive field of a chunk of images
into the columns of a matrix ``cols`` (C*K*K, nb*Ho*Wo), one sgemm multiplies it by the
weights (Co, C*K*K) (a bias is one more column of the weights, against a row of ones in
``cols``: it costs no pass over the output), and the transposed convolution (the input
gradient, also the relevance pass of every LRP rule) multiplies by the transposed weights and
scatters back with ``col2im``. Chunks of images keep ``cols`` within a core's L2 cache, so
the batch size never multiplies the scratch memory; a chunk's images share one GEMM, or for a
cheap (memory-bound) GEMM each image has its own, writing its output in place
(:func:`gemm_into`). Average pooling reuses the same two kernels on the (N*C) planes as
one-channel images (windows as columns); max pooling has its own (forward max and argmax in
one pass, gradient routing). The LRP-only kernels (fused ratios, tie-split max-pool
relevance) belong to the fast path, minilrp/fast/kernels.py.

Why it looks like this (each choice measured when it was made; the commit messages say how):
- the kernels write in memory order: scattered writes made the gather several times slower;
- they are compiled serial (numba ``parallel=True`` compiles much slower, and its OpenMP
  threads spin against OpenBLAS's) and minilrp spreads the work itself: BLAS runs on one
  thread while minilrp computes (:func:`one_blas_thread`), and the work is cut into pieces
  fixed by the shapes alone (chunks of images, blocks of GEMM columns, ranges of planes) that
  the calling thread and a small pool take one after another (:func:`each`). A thread the OS
  keeps waiting just takes fewer pieces, so a loaded machine never makes the default slower
  than one thread, and the numbers never depend on the thread count (OpenBLAS's do, for some
  shapes: it changes kernels with its thread count);
- small calls stay on one thread: a parallel launch costs more than it saves;
- element-wise work (ReLU and its gradient) is memory-bound, and two cores move about twice
  the bytes of one, so it too is cut into pieces (:func:`elementwise`);
- no scratch memory outlives a call: every buffer belongs to the call that made it, so
  networks in different threads never share one (BENCHMARKS.md has what that costs).

Every kernel ``f`` has a twin ``f_ref`` written with NumPy slicing; tests check that both
give the same numbers. Kernels take C-contiguous float32 or float64 arrays.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

# Budget for one chunk of im2col columns (bytes): they stay in a core's L2 cache (2 MB here)
# while the GEMM reads them.
COLS_BUDGET = 2 << 20
# Below this many elements a kernel runs on the calling thread only: handing work to the
# pool costs about as much as an im2col of this size.
PARALLEL_MIN_WORK = 1 << 19
# Rows of im2col columns (C*K*K) from which a chunk's images share one GEMM (gemm_into).
STACK_MIN_K = 256
# Elements in one piece of element-wise work (:func:`elementwise`): its temporaries stay in L2.
ELEMENTWISE_PIECE = 1 << 18
# A GEMM that is not already one piece of a larger split is cut into this many pieces, each
# of at least GEMM_MIN_FLOP: enough for the threads to share, never decided by their number.
GEMM_PIECES, GEMM_MIN_FLOP = 4, 1 << 25
# Threads that take pieces (the calling one included): MINILRP_NUM_THREADS, else the cores
# this process may run on.
THREADS = int(os.environ.get("MINILRP_NUM_THREADS", 0)) or len(os.sched_getaffinity(0))


@functools.lru_cache(maxsize=None)
def _pool(pid):
    """This process's worker threads (keyed by pid: a forked child starts its own). They hold
    no data: every call hands them its own arrays."""
    return ThreadPoolExecutor(max(1, THREADS - 1), thread_name_prefix="minilrp")


_piece = threading.local()  # .inside: this thread is computing a piece (no nested splitting)


def each(n, work, scratch=None):
    """work(i, buf) for every piece i in range(n), on the calling thread and up to THREADS - 1
    pool threads, each taking the next piece when done with one. A pool thread that has not
    started when the caller runs out of pieces is cancelled, not waited for. buf: scratch()
    made once per thread (None without scratch). Pieces never nest: inside one (whatever the
    thread count, so that the work is cut the same way), a nested ``each`` runs serially and
    :func:`matmul` does not split; a single piece is not marked, so it may split its own work."""
    nxt = itertools.count()

    def worker():
        outer, _piece.inside = getattr(_piece, "inside", False), True
        try:
            buf = scratch() if scratch else None
            while (i := next(nxt)) < n:
                work(i, buf)
        finally:
            _piece.inside = outer

    if n <= 1:  # one piece (or none): not marked, so it may split its own work
        for i in range(n):
            work(i, scratch() if scratch else None)
        return
    if THREADS <= 1 or getattr(_piece, "inside", False):
        return worker()
    job = [worker]  # emptied on return: a cancelled helper left in the pool's queue holds no data
    futures = [_pool(os.getpid()).submit(lambda: job and job[0]()) for _ in range(min(THREADS, n) - 1)]
    try:
        worker()
    finally:
        for f in futures:
            if not f.cancel():
                f.result()
        job.clear()


def elementwise(f, *arrays):
    """f(*arrays, out=result) for a NumPy ufunc call f (it returns its result, of arrays[0]'s
    dtype) on arrays of one shape, in pieces the threads share: element-wise work is
    memory-bound, and two cores move about twice the bytes of one. Pieces of ELEMENTWISE_PIECE
    elements keep f's temporaries in cache."""
    if arrays[0].size < PARALLEL_MIN_WORK:  # small: one call, no pieces
        return f(*arrays, out=None)
    out = np.empty_like(arrays[0], order="C")
    src, dst = [np.ascontiguousarray(a).reshape(-1) for a in arrays], out.reshape(-1)
    n = -(-out.size // ELEMENTWISE_PIECE)
    edges = [out.size * i // n for i in range(n + 1)]
    each(n, lambda i, _: f(*(a[edges[i]:edges[i + 1]] for a in src), out=dst[edges[i]:edges[i + 1]]))
    return out


@functools.lru_cache(maxsize=None)
def _blas_controller():
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController().select(user_api="blas")


# The one piece of process-wide state, because numpy's BLAS setting is process-wide: how many
# minilrp calls are running, so that only the last one restores the user's setting (a call that
# restored it while another ran would let that one's GEMMs round differently). No numbers here.
_blas = {"lock": threading.Lock(), "users": 0, "saved": []}


def _set_blas_threads(lib, n):
    """threadpoolctl (from 3.8) lets only the first Python thread that sets OpenBLAS's count
    change it and silently ignores the others (a Dask worker's, a web server's): the count is
    set without that check; one_blas_thread's lock and count of users already order the changes."""
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


@contextlib.contextmanager
def one_blas_thread():
    """BLAS (numpy's OpenBLAS or MKL) on one thread while minilrp computes, for the whole
    process; the previous setting is restored when the last concurrent minilrp call ends."""
    with _blas["lock"]:
        if _blas["users"] == 0:
            _blas["saved"] = [(lib, lib.num_threads) for lib in _blas_controller().lib_controllers]
            for lib, _ in _blas["saved"]:
                _set_blas_threads(lib, 1)
        _blas["users"] += 1
    try:
        yield
    finally:
        with _blas["lock"]:
            _blas["users"] -= 1
            if _blas["users"] == 0:
                for lib, n in _blas["saved"]:
                    _set_blas_threads(lib, n)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution/pool along one axis (floor mode, as PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


def _split(kernel, args, n_c, n_b, work):
    """Run ``kernel(*args, c_lo, c_hi, b_lo, b_hi)`` over channels [0, n_c) x images [0, n_b),
    in pieces along the longer of the two when the work is large: each piece then owns whole
    (image, channel) planes, so scatters into them need no atomics."""
    n = max(n_c, n_b)
    if work < PARALLEL_MIN_WORK or n == 1:
        kernel(*args, 0, n_c, 0, n_b)
        return
    parts = min(4 * THREADS, n)
    bounds = [n * i // parts for i in range(parts + 1)]
    ranges = [((lo, hi, 0, n_b) if n_c >= n_b else (0, n_c, lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    each(parts, lambda i, _: kernel(*args, *ranges[i]))


# --------------------------------------------------------------------------------------
# The numba kernels (serial; the caller splits the work across threads). Every index is a
# sum of range() loop variables, so LLVM drops numba's negative-index checks and vectorises
# the inner loop (index arithmetic it cannot bound kept it scalar).
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
                    for oy in range(Ho):  # row views: the inner loop indexes one axis, which compiles tighter
                        src, dst = xp[b, c, oy * stride + i], cols6[c, i, j, b, oy]
                        if stride == 1:
                            for ox in range(Wo):
                                dst[ox] = src[ox + j]
                        else:
                            for ox in range(Wo):
                                dst[ox] = src[ox * stride + j]


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
    i*K+j of the first maximum in row-major window order (PyTorch's choice on ties). A window
    holding a NaN outputs NaN (as PyTorch's): a NaN never vanishes silently. The NaN test is
    kept apart from the max's select chain, which then still vectorises."""
    Ho, Wo = out.shape[1], out.shape[2]
    if K == 2 and stride == 2:  # the common pool, unrolled with selects (they vectorise)
        for p in range(b_lo, b_hi):
            for oy in range(Ho):
                for ox in range(Wo):
                    y0, x0 = 2 * oy, 2 * ox
                    v0, v1 = x[p, y0, x0], x[p, y0, x0 + 1]
                    v2, v3 = x[p, y0 + 1, x0], x[p, y0 + 1, x0 + 1]
                    best, bi = v0, 0
                    best, bi = (v1, 1) if v1 > best else (best, bi)
                    best, bi = (v2, 2) if v2 > best else (best, bi)
                    best, bi = (v3, 3) if v3 > best else (best, bi)
                    nan = (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
                    out[p, oy, ox] = v0 + v1 + v2 + v3 if nan else best
                    arg[p, oy, ox] = bi
        return
    for p in range(b_lo, b_hi):
        for oy in range(Ho):
            for ox in range(Wo):
                y0, x0 = oy * stride, ox * stride
                best, bi, nan = x[p, y0, x0], 0, False
                for i in range(K):
                    for j in range(K):
                        v = x[p, y0 + i, x0 + j]
                        nan |= v != v
                        if v > best:
                            best = v
                            bi = i * K + j
                out[p, oy, ox] = np.nan if nan else best
                arg[p, oy, ox] = bi


@njit(cache=True, nogil=True, boundscheck=False)
def _maxpool_route(arg, R, K, stride, res, c_lo, c_hi, b_lo, b_hi):
    """Max-pool gradient for planes p in [b_lo, b_hi): res[p] = the sum of R[p, oy, ox] routed
    to each window's argmax ``arg`` (offset i*K+j); overlapping windows accumulate. The plane is
    zeroed here, piece by piece, not by the caller: a pass over memory less."""
    Ho, Wo = R.shape[1], R.shape[2]
    for p in range(b_lo, b_hi):
        res[p] = 0
        for oy in range(Ho):
            for ox in range(Wo):
                k = arg[p, oy, ox]
                res[p, oy * stride + k // K, ox * stride + k % K] += R[p, oy, ox]


# --------------------------------------------------------------------------------------
# im2col / col2im and their twins
# --------------------------------------------------------------------------------------
def _padded(x, pad):
    """x (nb, C, H, W) zero-padded by ``pad`` on each side (C-contiguous)."""
    if pad == 0:
        return np.ascontiguousarray(x)
    nb, C, H, W = x.shape
    xp = np.zeros((nb, C, H + 2 * pad, W + 2 * pad), x.dtype)
    xp[:, :, pad:H + pad, pad:W + pad] = x
    return xp


def im2col(x, n0, nb, K, stride, pad, Ho, Wo, cols):
    """Receptive fields of images n0..n0+nb of x (N, C, H, W) as the columns of
    cols (C*K*K, nb*Ho*Wo): row (c, i, j), column (b, oy, ox)."""
    C = x.shape[1]
    xp = _padded(x[n0:n0 + nb], pad)
    _split(_im2col, (xp, stride, cols.reshape(C, K, K, nb, Ho, Wo)), C, nb, cols.size)


def col2im(cols, n0, nb, K, stride, pad, Ho, Wo, out):
    """Scatter-add columns back into images n0..n0+nb of out (N, C, H, W), the adjoint of
    :func:`im2col`; overlapping windows accumulate."""
    C, H, W = out.shape[1:]
    outp = out[n0:n0 + nb] if pad == 0 else np.zeros((nb, C, H + 2 * pad, W + 2 * pad), out.dtype)
    _split(_col2im, (cols.reshape(C, K, K, nb, Ho, Wo), stride, outp), C, nb, cols.size)
    if pad:
        out[n0:n0 + nb] += outp[:, :, pad:pad + H, pad:pad + W]


def im2col_ref(x, n0, nb, K, stride, pad, Ho, Wo, cols):
    """NumPy twin of :func:`im2col`."""
    C = x.shape[1]
    xp = np.pad(x[n0:n0 + nb], ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    view = cols.reshape(C, K, K, nb, Ho, Wo)
    for i, j in np.ndindex(K, K):
        win = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
        view[:, i, j] = win.transpose(1, 0, 2, 3)


def col2im_ref(cols, n0, nb, K, stride, pad, Ho, Wo, out):
    """NumPy twin of :func:`col2im`."""
    C, H, W = out.shape[1:]
    xp = np.zeros((nb, C, H + 2 * pad, W + 2 * pad), out.dtype)
    view = cols.reshape(C, K, K, nb, Ho, Wo)
    for i, j in np.ndindex(K, K):
        xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
            view[:, i, j].transpose(1, 0, 2, 3)
    out[n0:n0 + nb] += xp[:, :, pad:pad + H, pad:pad + W]


# --------------------------------------------------------------------------------------
# Convolution (forward) and transposed convolution (input gradient): chunked im2col + GEMM
# --------------------------------------------------------------------------------------
def _chunk(n: int, per_image: int, itemsize: int) -> int:
    return max(1, min(n, COLS_BUDGET // max(1, per_image * itemsize)))


def conv_chunks(x, K, stride, pad, per_chunk, im2col_fn=im2col, ones=False):
    """per_chunk(n0, m, cols) for every chunk of images n0..n0+m of x (N, C, H, W), cols
    (C*K*K, m*Ho*Wo) their receptive fields, and with ``ones`` a last row of ones (a bias is
    then one more column of the weights, added inside the GEMM: no pass over the output of its
    own). A chunk's columns fit COLS_BUDGET bytes (so they stay in cache, and the batch size
    never multiplies the memory); chunks are pieces of :func:`each`, every thread reusing its
    own columns buffer."""
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    L, CKK = Ho * Wo, C * K * K
    rows = CKK + bool(ones)
    nb = _chunk(N, rows * L, x.itemsize)

    def work(k, buf):
        n0 = k * nb
        m = min(nb, N - n0)
        cols = buf[:rows * m * L].reshape(rows, m * L)
        im2col_fn(x, n0, m, K, stride, pad, Ho, Wo, cols[:CKK])
        cols[CKK:] = 1
        per_chunk(n0, m, cols)
    each(-(-N // nb), work, lambda: np.empty(rows * nb * L, x.dtype))


def with_bias(w, b):
    """The weights w (Co, ...) as a matrix (Co, C*K*K), with b (Co,) as one more column unless
    b is None: the weights of :func:`conv_chunks`'s row of ones."""
    w2 = w.reshape(len(w), -1)
    return w2 if b is None else np.concatenate([w2, b[:, None].astype(w2.dtype)], axis=1)


def matmul(a, b, out=None):
    """a @ b for a (M, K), b (K, P) -> out (M, P), in up to GEMM_PIECES pieces of at least
    GEMM_MIN_FLOP each: blocks of columns, or of rows when there are few columns. Whole when
    called inside a piece of :func:`each` (the pieces would only run one after another)."""
    (M, K), P = a.shape, b.shape[1]
    if M * K * P < GEMM_MIN_FLOP or getattr(_piece, "inside", False):  # one piece, or inside one
        return np.matmul(a, b, out=out)
    n = int(min(GEMM_PIECES, 2 * M * K * P // GEMM_MIN_FLOP))
    out = np.empty((M, P), np.result_type(a, b)) if out is None else out
    with one_blas_thread():  # the pieces are the threads' work: BLAS's own would compete with them
        if P >= 256 * n:  # column blocks, multiples of 64 wide
            edges = [min(P, (P * i // n + 63) // 64 * 64) for i in range(n)] + [P]
            each(n, lambda i, _: np.matmul(a, b[:, edges[i]:edges[i + 1]], out=out[:, edges[i]:edges[i + 1]]))
        else:
            edges = [M * i // n for i in range(n + 1)]
            each(n, lambda i, _: np.matmul(a[edges[i]:edges[i + 1]], b, out=out[edges[i]:edges[i + 1]]))
    return out


def gemm_into(w2, cols, out, n0, m):
    """out[n0:n0+m] = w2 @ cols; out (N, Co, L). A cheap GEMM (fewer than STACK_MIN_K rows of
    cols: memory-bound) runs once per image, each writing its output where it belongs; a
    costlier one runs once for the chunk, on its wider matrix where sgemm is faster, and a pass
    reorders the (Co, m*L) result to images first."""
    o = out[n0:n0 + m]
    if m == 1:  # one image: its GEMM may be split across the threads
        matmul(w2, cols, o[0])
    elif len(cols) < STACK_MIN_K:
        np.matmul(w2, cols.reshape(len(cols), m, -1).transpose(1, 0, 2), out=o)
    else:
        np.copyto(o, matmul(w2, cols).reshape(len(w2), m, -1).transpose(1, 0, 2))


def conv2d(x, w, b, stride=1, pad=0, im2col_fn=im2col):
    """Cross-correlation as PyTorch's conv2d: out[n,o] = sum_c x[n,c] (*) w[o,c] + b[o].
    x: (N, C, H, W); w: (Co, C, K, K); b: (Co,) or None -> (N, Co, Ho, Wo)."""
    (N, C, H, W), (Co, _, K, _) = x.shape, w.shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    out, w2 = np.empty((N, Co, Ho, Wo), x.dtype), with_bias(w, b)
    with one_blas_thread():
        conv_chunks(x, K, stride, pad, lambda n0, m, cols: gemm_into(w2, cols, out.reshape(N, Co, -1), n0, m),
                    im2col_fn, ones=b is not None)
    return out


def conv2d_transpose(g, w, stride, pad, in_hw, col2im_fn=col2im):
    """Adjoint of :func:`conv2d` in its input (the input gradient / transposed conv):
    returns dx with <conv2d(x, w), g> = <x, dx>.

    g: (N, Co, Ho, Wo); w: (Co, C, K, K); in_hw: (H, W) of the input -> (N, C, H, W).
    Input rows/columns no window reaches (stride remainder) get zero.
    """
    (N, Co, Ho, Wo), (_, C, K, _), (H, W) = g.shape, w.shape, in_hw
    L, CKK = Ho * Wo, C * K * K
    wT, out = w.reshape(Co, CKK).T, np.zeros((N, C, H, W), g.dtype)
    g3 = g.reshape(N, Co, L)
    nb = _chunk(N, CKK * L, g.itemsize)

    def work(k, _):
        n0 = k * nb
        m = min(nb, N - n0)
        gt = g3[n0] if m == 1 else g3[n0:n0 + m].transpose(1, 0, 2).reshape(Co, m * L)
        col2im_fn(matmul(wT, np.ascontiguousarray(gt)), n0, m, K, stride, pad, Ho, Wo, out)
    with one_blas_thread():
        each(-(-N // nb), work)
    return out


def conv2d_ref(x, w, b, stride=1, pad=0):
    """Plain NumPy twin of :func:`conv2d`: one tensordot per kernel offset."""
    (N, C, H, W), (Co, _, K, _) = x.shape, w.shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, Co, Ho, Wo), x.dtype)
    for i, j in np.ndindex(K, K):
        win = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
        out += np.einsum("nchw,oc->nohw", win, w[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv2d_transpose_ref(g, w, stride, pad, in_hw):
    """Plain NumPy twin of :func:`conv2d_transpose`."""
    (N, Co, Ho, Wo), (_, C, K, _), (H, W) = g.shape, w.shape, in_hw
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), g.dtype)
    for i, j in np.ndindex(K, K):
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


def maxpool_backward(g, arg, K, stride, in_shape):
    """Route each output gradient g (N, C, Ho, Wo) to its window's argmax; overlapping
    windows accumulate. -> in_shape."""
    N, C, H, W = in_shape
    planes = (N * C,) + g.shape[2:]
    res = np.empty((N * C, H, W), g.dtype)
    _split(_maxpool_route, (np.ascontiguousarray(arg).reshape(planes), np.ascontiguousarray(g).reshape(planes),
                            K, stride, res), 1, N * C, res.size)
    return res.reshape(in_shape)


def pool2d(x, k, stride, pad):
    """Depthwise pooling with kernel k (K, K): out = sum_ij k[i,j] x[.., oy*s+i-p, ox*s+j-p],
    zero padded. Average pooling is k = 1/K^2 (PyTorch's count_include_pad=True)."""
    (N, C, H, W), K = x.shape, k.shape[0]
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    return (k.reshape(1, -1).astype(x.dtype) @ windows(x, K, stride, pad)).reshape(N, C, Ho, Wo)


def pool2d_transpose(g, k, stride, pad, in_shape):
    """Adjoint of :func:`pool2d` in x: scatter g[.., oy, ox] * k[i, j] back into the windows."""
    cols = k.reshape(-1, 1).astype(g.dtype) * g.reshape(1, -1)
    return unwindows(cols, k.shape[0], stride, pad, in_shape)
