"""Prototype convolutions for VGG-16's conv shapes at batch 8, against minilrp's conv2d and
PyTorch (oneDNN): where the forward's time goes and what a kernel change could win.

    $MALLOC PYTHONPATH=. ~/.cache/minilrp-reference-venv/bin/python benchmarks/vgg16_conv_prototypes.py

Columns (min of 3 interleaved runs each): ``current`` = minilrp.kernels.conv2d; ``direct`` = the
same with the GEMM writing straight into the output for one-image chunks (bit-identical; the
proposed change); ``shift`` = 9 GEMMs on shifted flat views of the padded input, no im2col;
``tiled`` = im2col over tiles of output rows within COLS_BUDGET; ``sgemm`` = the bare numpy
GEMMs of the same shapes on a prepared im2col matrix, one image at a time; ``torch`` =
torch.nn.functional.conv2d with 2 threads. Not part of minilrp; results are checked against
conv2d before timing.
"""
import sys
import time

import numpy as np
import torch
from numba import njit, prange

from minilrp import kernels
from minilrp.engine.kernels import _chunk, conv_output_size, im2col

torch.set_num_threads(2)


def conv2d_direct(x, w, b, stride=1, pad=0):
    """kernels.conv2d, but the GEMM writes straight into the output when a chunk is one
    image (the usual case at VGG scale), skipping the (Co, L) -> out copy; bias added per chunk
    while the output is in cache."""
    N, C, H, W = x.shape
    Co, _, K, _ = w.shape
    Ho, Wo = conv_output_size(H, K, stride, pad), conv_output_size(W, K, stride, pad)
    L, CKK = Ho * Wo, C * K * K
    w2 = w.reshape(Co, CKK)
    out = np.empty((N, Co, Ho, Wo), x.dtype)
    o3 = out.reshape(N, Co, L)
    nb = _chunk(N, CKK * L, x.itemsize)
    colbuf = np.empty(CKK * nb * L, x.dtype)
    resbuf = np.empty(Co * nb * L, x.dtype) if nb > 1 else None
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        cols = colbuf[:CKK * m * L].reshape(CKK, m * L)
        im2col(x, n0, m, K, stride, pad, Ho, Wo, cols)
        if m == 1:
            np.matmul(w2, cols, out=o3[n0])
        else:
            res = resbuf[:Co * m * L].reshape(Co, m * L)
            np.matmul(w2, cols, out=res)
            o3[n0:n0 + m] = res.reshape(Co, m, L).transpose(1, 0, 2)
        if b is not None:
            o3[n0:n0 + m] += b[:, None]
    return out

def conv_shift(x, w, b, pad):
    """stride-1 conv by 'flat shift' GEMMs: no im2col; outputs on the padded width."""
    N, C, H, W = x.shape
    Co, _, K, _ = w.shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    Ho, Wo = Hp - K + 1, Wp - K + 1
    L = Ho * Wp
    flat = np.zeros((C, Hp * Wp + K - 1), x.dtype)
    acc = np.empty((Co, L), x.dtype)
    tmp = np.empty((Co, L), x.dtype)
    # taps grouped by row offset i: (Co, C*K) weights against K shifted copies
    wr = [np.ascontiguousarray(w[:, :, i, :].transpose(0, 2, 1).reshape(Co, K * C)) for i in range(K)]
    cols = np.empty((K, C, Hp * Wp), x.dtype)  # cols[j, c, q] = flat[c, q + j]
    out = np.empty((N, Co, Ho, Wo), x.dtype)
    for n in range(N):
        flat[:, :Hp * Wp].reshape(C, Hp, Wp)[:, pad:pad + H, pad:pad + W] = x[n]
        for j in range(K):
            cols[j] = flat[:, j:j + Hp * Wp]
        c2 = cols.reshape(K * C, Hp * Wp)
        for i in range(K):
            src = c2[:, i * Wp:i * Wp + L]
            if i == 0:
                np.matmul(wr[i], src, out=acc)
            else:
                np.matmul(wr[i], src, out=tmp)
                acc += tmp
        out[n] = acc.reshape(Co, Ho, Wp)[:, :, :Wo]
    if b is not None:
        out += b[None, :, None, None]
    return out

@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def im2col_rows(x, n, oy0, noy, K, stride, pad, Wo, cols):
    """cols[(c*K+i)*K+j, r*Wo + ox] = x[n, c, (oy0+r)*stride+i-pad, ox*stride+j-pad]."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for c in prange(C):
        for i in range(K):
            for j in range(K):
                row = (c * K + i) * K + j
                lo = max(0, (pad - j + stride - 1) // stride)
                hi = min(Wo, (W - 1 + pad - j) // stride + 1)
                hi = max(hi, lo)
                for r in range(noy):
                    d = r * Wo
                    iy = (oy0 + r) * stride + i - pad
                    if iy < 0 or iy >= H:
                        for ox in range(Wo):
                            cols[row, d + ox] = 0.0
                    else:
                        for ox in range(lo):
                            cols[row, d + ox] = 0.0
                        for ox in range(lo, hi):
                            cols[row, d + ox] = x[n, c, iy, ox * stride + j - pad]
                        for ox in range(hi, Wo):
                            cols[row, d + ox] = 0.0

def conv_tiled(x, w, b, stride, pad, budget=kernels.COLS_BUDGET):
    N, C, H, W = x.shape
    Co, _, K, _ = w.shape
    Ho, Wo = kernels.conv_output_size(H, K, stride, pad), kernels.conv_output_size(W, K, stride, pad)
    CKK = C * K * K
    w2 = w.reshape(Co, CKK)
    rows = max(1, min(Ho, budget // (CKK * Wo * x.itemsize)))
    out = np.empty((N, Co, Ho, Wo), x.dtype)
    cols = np.empty((CKK, rows * Wo), x.dtype)
    res = np.empty((Co, rows * Wo), x.dtype)
    for n in range(N):
        o = out[n].reshape(Co, Ho * Wo)
        for oy0 in range(0, Ho, rows):
            m = min(rows, Ho - oy0)
            c = cols[:, :m * Wo]
            im2col_rows(x, n, oy0, m, K, stride, pad, Wo, c)
            r = res[:, :m * Wo]
            np.matmul(w2, c, out=r)
            o[:, oy0 * Wo:(oy0 + m) * Wo] = r
    if b is not None:
        out += b[None, :, None, None]
    return out


def main():
    rng = np.random.default_rng(0)
    shapes = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56),
              (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 14)]
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    names = ["current", "direct", "shift", "tiled", "sgemm", "torch"]
    print(f"batch {N}")
    print("| conv (C -> Co, size) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    tot = dict.fromkeys(names, 0.0)
    for C, Co, H in shapes:
        x = np.maximum(rng.standard_normal((N, C, H, H), dtype=np.float32), 0)
        w = rng.standard_normal((Co, C, 3, 3), dtype=np.float32)
        b = rng.standard_normal(Co, dtype=np.float32)
        ref = kernels.conv2d(x, w, b, 1, 1)
        assert np.array_equal(conv2d_direct(x, w, b, 1, 1), ref)
        for f in (conv_shift(x, w, b, 1), conv_tiled(x, w, b, 1, 1)):
            assert np.abs(f - ref).max() <= 1e-5 * np.abs(ref).max()
        cols = np.ascontiguousarray(rng.standard_normal((C * 9, H * H), dtype=np.float32))
        res = np.empty((Co, H * H), np.float32)
        w2 = w.reshape(Co, C * 9)
        tx, tw, tb = map(torch.from_numpy, (x, w, b))
        fns = {"current": lambda: kernels.conv2d(x, w, b, 1, 1),
               "direct": lambda: conv2d_direct(x, w, b, 1, 1),
               "shift": lambda: conv_shift(x, w, b, 1),
               "tiled": lambda: conv_tiled(x, w, b, 1, 1),
               "sgemm": lambda: [np.matmul(w2, cols, out=res) for _ in range(N)],
               "torch": lambda: torch.nn.functional.conv2d(tx, tw, tb, 1, 1)}
        best = {}
        for _ in range(3):
            for name in names:
                with torch.no_grad():
                    t = time.perf_counter()
                    fns[name]()
                    best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
        for name in names:
            tot[name] += best[name]
        print(f"| {C} -> {Co}, {H} | " + " | ".join(f"{best[n]:.3f} s" for n in names) + " |", flush=True)
    print("| sum | " + " | ".join(f"{tot[n]:.2f} s" for n in names) + " |")


if __name__ == "__main__":
    main()
