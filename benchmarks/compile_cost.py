"""Cold numba compile cost of every kernel (float32 and float64), and the cost of loading
them from numba's cache on a second run. Each run is a fresh process with its own empty
NUMBA_CACHE_DIR.

    python benchmarks/compile_cost.py
"""
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import time, numpy as np
t0 = time.perf_counter()
from minilrp.engine import kernels as k
from minilrp.fast import kernels as fk
t_import = time.perf_counter() - t0
x = {dt: np.ones((1, 2, 6, 6), dt) for dt in (np.float32, np.float64)}
calls = {  # every numba kernel, through the public functions that call it
    "im2col (conv2d)": lambda d: k.conv2d(x[d], np.ones((3, 2, 3, 3), d), None, 1, 1),
    "col2im (conv2d_transpose)": lambda d: k.conv2d_transpose(np.ones((1, 3, 6, 6), d), np.ones((3, 2, 3, 3), d), 1, 1, (6, 6)),
    "maxpool": lambda d: k.maxpool_forward(x[d], 2, 2),
    "maxpool relevance (2x2)": lambda d: fk.maxpool_relevance(x[d], k.maxpool_forward(x[d], 2, 2)[0], np.ones((1, 2, 3, 3), d), 2, 2),
    "maxpool relevance (3x3/1)": lambda d: fk.maxpool_relevance(x[d], k.maxpool_forward(x[d], 3, 1)[0], np.ones((1, 2, 4, 4), d), 3, 1),
    "maxpool routing (gradient)": lambda d: k.maxpool_backward(np.ones((1, 2, 3, 3), d), k.maxpool_forward(x[d], 2, 2)[1], 2, 2, x[d].shape),
    "two-term ratios": lambda d: fk.two_term_ratios(np.ones((1, 2, 9), d), np.ones((1, 2, 9), d), np.ones((1, 2, 9), d),
                                                    *[np.zeros(2, d)] * 3, 1, 0, 0, 1, 1, 0, 1e-9, False),
}
total = 0.0
for name, f in calls.items():
    for d in (np.float32, np.float64):
        t = time.perf_counter(); f(d); dt = time.perf_counter() - t
        total += dt
        print(f"  {name:26s} {np.dtype(d).name:8s} {dt:6.2f} s")
print(f"TOTAL {total:.2f} s (module import {t_import:.2f} s)")
"""


def run(cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return out.stdout


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as cache:
        print("cold (empty numba cache):")
        print(run(cache))
        print("warm (second process, same cache):")
        print(run(cache))
