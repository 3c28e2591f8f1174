"""Prototype: exploit the sparsity of the relevance entering LeNet's conv2 in the z+ rule.

    $MALLOC PYTHONPATH=. python benchmarks/sparse_relevance_prototype.py

After ReLU and a 2x2 max pool, the relevance entering conv2's output is non-zero at about 13%
of its entries (one winner per pool window, none where the activation is 0). z+ needs
P = a w+ only there, and its transposed convolution only from there. ``gather`` computes P at
the non-zeros with numba loops over a channels-last copy of the input; ``scatter`` spreads
S * w+ back from the non-zeros. Both are checked against minilrp's dense GEMM path and timed
against it (10th percentile / median), at batch 1 and 1000. Not part of minilrp: the dense
GEMMs won (BENCHMARKS.md).
"""

import numpy as np
from numba import njit

from minilrp import load_model, load_samples
from timing import timings


@njit(nogil=True, boundscheck=False)
def gather(a_cl, w_cl, R, stride, P):
    """P[n, o, y, x] = sum_ij <w_cl[o, i, j, :], a_cl[n, y*s + i, x*s + j, :]> where R != 0."""
    N, Co, Ho, Wo = R.shape
    K, C = w_cl.shape[1], w_cl.shape[3]
    for n in range(N):
        for o in range(Co):
            for y in range(Ho):
                for x in range(Wo):
                    if R[n, o, y, x] == 0:
                        continue
                    acc = a_cl.dtype.type(0)
                    for i in range(K):
                        for j in range(K):
                            for c in range(C):
                                acc += w_cl[o, i, j, c] * a_cl[n, y * stride + i, x * stride + j, c]
                    P[n, o, y, x] = acc


@njit(nogil=True, boundscheck=False)
def scatter(S, w_cl, stride, out_cl):
    """out_cl[n, y*s + i, x*s + j, :] += S[n, o, y, x] * w_cl[o, i, j, :] where S != 0."""
    N, Co, Ho, Wo = S.shape
    K, C = w_cl.shape[1], w_cl.shape[3]
    for n in range(N):
        for o in range(Co):
            for y in range(Ho):
                for x in range(Wo):
                    s = S[n, o, y, x]
                    if s == 0:
                        continue
                    for i in range(K):
                        for j in range(K):
                            for c in range(C):
                                out_cl[n, y * stride + i, x * stride + j, c] += s * w_cl[o, i, j, c]


def timing(f, rounds):
    ts = timings(f, rounds, warmup=3)
    return f"{np.percentile(ts, 10) * 1e3:.3f} / {np.median(ts) * 1e3:.3f} ms"


def main():
    net = load_model("fmnist-cnn")
    net.memory_budget = 8 << 30  # one chunk: the layers' caches then hold the whole batch, as the ledger does
    images = load_samples()[0]
    for n in (1, 1000):
        x = net.preprocess(images[:n])
        net.relevance(x, "EpsilonPlusFlat", keep=True)
        R = np.ascontiguousarray(net.ledger.rows[5]["relevance"])  # entering conv2's output
        layer = net.layers[3]
        a, p = layer.a, layer.padding
        N, C, H, W = a.shape
        wp = np.maximum(layer.weight, 0)
        w_cl = np.ascontiguousarray(wp.transpose(0, 2, 3, 1))
        a_cl = np.zeros((N, H + 2 * p, W + 2 * p, C), a.dtype)
        a_cl[:, p:p + H, p:p + W] = a.transpose(0, 2, 3, 1)
        nz = R != 0
        P_dense = layer.linear(a, wp)
        P = np.zeros_like(R)
        gather(a_cl, w_cl, R, layer.stride, P)
        assert np.abs(P - P_dense)[nz].max() <= 1e-5 * np.abs(P_dense).max()
        S = np.where(nz, R / (P_dense + 1e-6), 0).astype(a.dtype)
        out_cl = np.zeros((N, H + 2 * p, W + 2 * p, C), a.dtype)

        def sparse_T():
            out_cl[...] = 0
            scatter(S, w_cl, layer.stride, out_cl)
            return out_cl[:, p:p + H, p:p + W].transpose(0, 3, 1, 2)
        T_dense = layer.linear_T(S, wp)
        assert np.abs(sparse_T() - T_dense).max() <= 1e-5 * np.abs(T_dense).max()
        rounds = 500 if n == 1 else 3
        print(f"batch {n}: {nz.mean():.0%} of the relevance entering conv2 is non-zero (p10 / median)")
        print(f"  P = a w+    gather (sparse) {timing(lambda: gather(a_cl, w_cl, R, layer.stride, P), rounds)}"
              f"   dense GEMM {timing(lambda: layer.linear(a, wp), rounds)}")
        print(f"  transposed  scatter (sparse) {timing(sparse_T, rounds)}"
              f"   dense GEMM + col2im {timing(lambda: layer.linear_T(S, wp), rounds)}")


if __name__ == "__main__":
    main()
