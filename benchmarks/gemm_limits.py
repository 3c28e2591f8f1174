"""Where the batch-1000 forward and SA gradient of the LeNet spend what they do not spend in
GEMMs (issue 18): one core's sgemm rate for the second convolution's GEMM in its three
orientations (64 x 800 weights, N = 40 images x 196 positions); the NumPy forms of the ReLU
backward on the first convolution's output (1000 x 32 x 28 x 28), whole arrays on one thread
against ``kernels.elementwise`` (pieces the threads share); and ``kernels.conv2d`` on several
layer shapes with ``kernels.gemm_into``'s two layouts forced (``STACK_MIN_K``): one GEMM per
image, each writing its output in place, and one GEMM per chunk of images followed by a pass
reordering the output to images first (the layout of the code before), beside its rule
choosing between them. Medians:

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


rule = kernels.STACK_MIN_K
print(f"\nconv2d of 1000 images, {kernels.THREADS} threads; kernels.gemm_into stacks the images of a chunk "
      f"from C*K*K >= {rule}:")
for C, Co, S, K in ((1, 32, 28, 5), (32, 64, 14, 5), (1, 32, 28, 3), (32, 32, 28, 3), (32, 64, 14, 3), (64, 64, 14, 3),
                    (16, 32, 14, 3), (3, 64, 32, 3), (64, 128, 7, 3), (64, 64, 28, 3), (64, 128, 16, 3), (128, 128, 14, 3)):
    x = rng.standard_normal((1000, C, S, S), np.float32)
    wc, b = rng.standard_normal((Co, C, K, K), np.float32), rng.standard_normal(Co, np.float32)
    t = {}
    for name, min_k in (("per-image", 1 << 62), ("stacked", 0), ("kernels.gemm_into", rule)):
        kernels.STACK_MIN_K = min_k  # the two layouts of gemm_into, and its rule
        t[name] = statistics.median(timings(lambda: kernels.conv2d(x, wc, b, 1, K // 2), 5)) * 1e3
    kernels.STACK_MIN_K = rule
    print(f"  {C:>3} -> {Co:>3} channels, {S}x{S}, {K}x{K} (C*K*K {C * K * K:>4}): " +
          ", ".join(f"{name} {v:.1f} ms" for name, v in t.items()) + f"; per-image / stacked {t['per-image'] / t['stacked']:.2f}")
