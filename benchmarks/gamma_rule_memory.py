"""Peak memory of one Gamma-rule relevance step on VGG-16's largest conv layers, in units of
the layer's output tensor (tracemalloc, which sees numpy's allocations):

    PYTHONPATH=. .venv/bin/python benchmarks/gamma_rule_memory.py

This is the step that sets minilrp's LRP peak at VGG-16 scale (see benchmarks/VGG16.md).
"""
import tracemalloc

import numpy as np

from minilrp import Conv2d
from minilrp import Gamma


def main(N=8):
    rng = np.random.default_rng(0)
    for C, Co, H in [(64, 64, 224), (512, 512, 28)]:
        w = rng.standard_normal((Co, C, 3, 3), dtype=np.float32) * np.float32(0.05)
        layer = Conv2d(C, Co, 3, 1, 1, weight=w, bias=np.zeros(Co, np.float32))
        a = np.maximum(rng.standard_normal((N, C, H, H), dtype=np.float32), 0)
        z = layer.forward(a)
        R = rng.standard_normal(z.shape, dtype=np.float32)
        Gamma(0.25).relevance(layer, a, R)  # warm-up: the kernels' persistent scratch buffers
        tracemalloc.start()
        Gamma(0.25).relevance(layer, a, R)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"conv {C}->{Co} at {H}x{H}, batch {N}: output tensor {z.nbytes / 2**20:.0f} MiB; "
              f"Gamma relevance peak {peak / 2**20:.0f} MiB = {peak / z.nbytes:.1f} output tensors")


if __name__ == "__main__":
    main()
