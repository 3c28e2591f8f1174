"""How far the inference-only forward (minilrp/fast/inference.py, the one that scores perturbed
images) is from the hardware: GFLOP/s of every fused step on each bundled model, against the
machine's sgemm peak measured in the same run (numpy's OpenBLAS, a 2048^3 float32 product on
all cores, best of 5).

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=. python benchmarks/roofline.py [--batch 512] [--rounds 7]

FLOPs count the multiply-adds of the linear layers (2 per multiply-add, bias and pooling not
counted), so element-wise steps (pools, ReLU, flatten) show their time with no GFLOP/s.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from minilrp import load_model, load_samples
from minilrp.engine import kernels
from minilrp.engine.layers import Conv2d, Dense
from minilrp.fast import inference
from timing import timings

MODELS = ("fmnist-mlp", "fmnist-cnn", "fmnist-vgg")


def best(fn, rounds):
    ts = timings(fn, rounds)
    return statistics.median(ts), min(ts)


def sgemm_peak():
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    return 2 * 2048 ** 3 / best(lambda: a @ a, 5)[1] / 1e9


def flops(layer, a):
    """2 x the multiply-adds of a linear layer on the batch a (0 for the other layers)."""
    if not isinstance(layer, (Conv2d, Dense)):
        return 0
    return 2 * len(a) * layer.linear(a[:1], layer.weight).size * math.prod(layer.weight.shape[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    peak = sgemm_peak()
    time.sleep(1)  # OpenBLAS's threads spin for a while after its multi-threaded GEMM: let them park
    print(f"sgemm peak (2048^3 float32, numpy's BLAS on all cores): {peak:.1f} GFLOP/s; batch {args.batch}, "
          f"{kernels.THREADS} minilrp threads, medians of {args.rounds}\n")
    for name in MODELS:
        net = load_model(name, dtype=np.float32)
        x = net.preprocess(load_samples()[0][:args.batch]).astype(np.float32)
        print(f"**{name}**\n\n| step | output | GFLOP | time | GFLOP/s | % of peak |\n|---|---|---:|---:|---:|---:|")
        a, total_f, total_t = x, 0, 0.0
        for step in inference.steps(net):
            with kernels.one_blas_thread():
                t, _ = best(lambda: inference.run(step, a), args.rounds)
                z = inference.run(step, a)
            layer, pool, relu = step
            f = flops(layer, a)
            label = layer.kind + (" + max pool" if pool is not None else "") + (" + ReLU" if relu else "")
            rate = f"{f / t / 1e9:.1f} | {100 * f / t / 1e9 / peak:.0f} %" if f else "- | -"
            print(f"| {label} | {tuple(z.shape[1:])} | {f / 1e9:.3f} | {t * 1e3:.2f} ms | {rate} |")
            total_f, total_t, a = total_f + f, total_t + t, z
        whole, _ = best(lambda: inference.logits(net, x, batch_size=args.batch), args.rounds)
        print(f"| whole forward (inference.logits) | {tuple(a.shape[1:])} | {total_f / 1e9:.3f} | "
              f"{whole * 1e3:.2f} ms | {total_f / whole / 1e9:.1f} | {100 * total_f / whole / 1e9 / peak:.0f} % |\n")


if __name__ == "__main__":
    main()
