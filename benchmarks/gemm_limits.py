"""Where the batch-1000 forward and SA gradient of the LeNet spend what they do not spend in
GEMMs (issue 18's missed targets): one core's sgemm rate for the second convolution's GEMM in
its three orientations (64 x 800 weights, N = 40 images x 196 positions), and the NumPy forms of
the ReLU backward on the first convolution's output (1000 x 32 x 28 x 28), medians:

    $MALLOC PYTHONPATH=. .venv/bin/python benchmarks/gemm_limits.py
"""
import statistics

import numpy as np
from threadpoolctl import threadpool_limits

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
for name, fn in (("g * (a > 0)  (layers.ReLU.backward)", lambda: g * (a > 0)),
                 ("np.multiply(g, a > 0, dtype=)", lambda: np.multiply(g, a > 0, dtype=g.dtype)),
                 ("np.multiply(g, np.greater(a, 0, out=))", lambda: np.multiply(g, np.greater(a, 0, out=mask))),
                 ("np.where(a > 0, g, 0)", lambda: np.where(a > 0, g, np.float32(0))),
                 ("g * np.heaviside(a, 0)", lambda: g * np.heaviside(a, np.float32(0))),
                 ("copyto(0), copyto(g, where=a > 0)", lambda: (np.copyto(kept, 0), np.copyto(kept, g, where=a > 0)))):
    print(f"ReLU backward, {name}: {statistics.median(timings(fn, 9)) * 1e3:.1f} ms")
