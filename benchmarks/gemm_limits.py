"""Where the batch-1000 forward and SA gradient of the LeNet spend what they do not spend in
GEMMs (issue 18): one core's sgemm rate for the second convolution's GEMM in its three
orientations (64 x 800 weights, N = 40 images x 196 positions); the NumPy forms of the ReLU
backward on the first convolution's output (1000 x 32 x 28 x 28), whole arrays on one thread
against ``kernels.elementwise`` (pieces the threads share); and ``kernels.conv2d`` with its
per-image GEMMs against the code before (one GEMM per chunk of images, then a pass that
reorders the output to images first and adds the bias). Medians:

    $MALLOC PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/gemm_limits.py
"""
import statistics

import numpy as np
from threadpoolctl import threadpool_limits

from minilrp.engine import kernels
from timing import timings

rng = np.random.default_rng(0)
N = 196 * 40
w, cols = rng.random((64, 800), np.float32), rng.random((800, N), np.float32)
wT, g = np.ascontiguousarray(w.T), rng.random((64, N), np.float32)
gT = np.ascontiguousarray(g.T)
with threadpool_limits(1):
    for name, fn in (("w @ cols    (64 x 800)(800 x N), forward", lambda: w @ cols),
                     ("wT @ g      (800 x 64)(64 x N), input gradient", lambda: wT @ g),
                     ("gT @ w      (N x 64)(64 x 800), the other order", lambda: gT @ w)):
        t = statistics.median(timings(fn, 30))
        print(f"{name}: {t * 1e3:.2f} ms, {2 * 64 * 800 * N / t / 1e9:.0f} GFLOP/s on one core")

a = rng.standard_normal((1000, 32, 28, 28), np.float32)
g = rng.standard_normal(a.shape, np.float32)
mask = np.empty(a.shape, bool)
kept = np.empty_like(g)
for name, fn in (("g * (a > 0), one thread", lambda: g * (a > 0)),
                 ("np.multiply(g, a > 0, dtype=)", lambda: np.multiply(g, a > 0, dtype=g.dtype)),
                 ("np.multiply(g, np.greater(a, 0, out=))", lambda: np.multiply(g, np.greater(a, 0, out=mask))),
                 ("np.where(a > 0, g, 0)", lambda: np.where(a > 0, g, np.float32(0))),
                 ("g * np.heaviside(a, 0)", lambda: g * np.heaviside(a, np.float32(0))),
                 ("copyto(0), copyto(g, where=a > 0)", lambda: (np.copyto(kept, 0), np.copyto(kept, g, where=a > 0))),
                 (f"kernels.elementwise (layers.ReLU.backward, {kernels.THREADS} threads)",
                  lambda: kernels.elementwise(lambda g, a, out: np.multiply(g, a > 0, out=out), g, a))):
    print(f"ReLU backward, {name}: {statistics.median(timings(fn, 9)) * 1e3:.1f} ms")
for name, fn in (("np.maximum(a, 0), one thread", lambda: np.maximum(a, 0)),
                 (f"kernels.elementwise (layers.ReLU.forward, {kernels.THREADS} threads)",
                  lambda: kernels.elementwise(lambda a, out: np.maximum(a, 0, out=out), a))):
    print(f"ReLU forward, {name}: {statistics.median(timings(fn, 9)) * 1e3:.1f} ms")


def gemm_reorder(w2, cols, out, n0, m, b=None):
    """The code before: one GEMM for the chunk's images, then a pass reordering to images first."""
    z = kernels.matmul(w2, cols, out[n0] if m == 1 else None)
    z = z.reshape(len(w2), m, -1).transpose(1, 0, 2)
    if b is not None:
        np.add(z, b[:, None], out=out[n0:n0 + m])
    elif m > 1:
        out[n0:n0 + m] = z


per_image = kernels.gemm_into
for C, Co, S, K in ((1, 32, 28, 5), (32, 64, 14, 5), (64, 64, 28, 3), (128, 128, 14, 3)):
    x = rng.standard_normal((1000, C, S, S), np.float32)
    wc, b = rng.standard_normal((Co, C, K, K), np.float32), rng.standard_normal(Co, np.float32)
    res = []
    for name, gemm in (("per-image GEMMs", per_image), ("one GEMM + reorder", gemm_reorder)):
        kernels.gemm_into = gemm
        res.append(f"{name} {statistics.median(timings(lambda: kernels.conv2d(x, wc, b, 1, K // 2), 7)) * 1e3:.1f} ms")
    kernels.gemm_into = per_image
    print(f"conv2d, 1000 images {C}x{S}x{S} -> {Co} channels, {K}x{K}, {kernels.THREADS} threads: " + ", ".join(res))
