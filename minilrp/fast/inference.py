"""An inference-only forward for scoring many images (region perturbation, the oracle, the
experiment runners): the logits of ``Network.forward``, without its caches, in batches of a
bounded size, with the element-wise layers fused where they commute.

Conv2d/Dense -> ReLU -> MaxPool2d (or the pool before the ReLU) runs as: the GEMM without its
bias, the max pool, then bias and ReLU in place on the pooled output. This is exact, not
approximate: adding a per-channel constant and rounding are monotone, so
max(fl(z_i + b)) = fl(max(z_i) + b), and ReLU commutes with max. The logits equal
``Network.forward``'s bit for bit (tests/test_inference.py).
"""
from __future__ import annotations

import numpy as np

from ..engine import kernels
from ..engine.layers import Conv2d, Dense, MaxPool2d, ReLU

BATCH = 512  # images per step: bounds the memory of a call whatever the number of images


def steps(net):
    """The network as fused steps: (layer, max pool or None, relu) for a linear layer and the
    ReLU and (after a conv) max pool that follow it, in either order; (layer, None, False) else."""
    out, layers, i = [], net.layers, 0
    while i < len(layers):
        layer, pool, relu = layers[i], None, False
        i += 1
        if isinstance(layer, (Conv2d, Dense)):
            for nxt in layers[i:i + 2]:
                if isinstance(nxt, ReLU) and not relu:
                    relu = True
                elif isinstance(nxt, MaxPool2d) and pool is None and isinstance(layer, Conv2d):
                    pool = nxt
                else:
                    break
                i += 1
        out.append((layer, pool, relu))
    return out


def run(step, a):
    layer, pool, relu = step
    if not isinstance(layer, (Conv2d, Dense)):
        return _plain(layer, a)
    z = layer.linear(a, layer.weight)  # the bias after the pool: fewer additions
    if pool is not None:
        z = kernels.maxpool_forward(z, pool.kernel_size, pool.stride)[0]
    if layer.bias is not None:
        z += layer.bias.reshape((-1,) + (1,) * (z.ndim - 2))
    return np.maximum(z, 0, out=z) if relu else z


def _plain(layer, a):
    """A layer's forward without touching its cache."""
    if isinstance(layer, MaxPool2d):
        return kernels.maxpool_forward(a, layer.kernel_size, layer.stride)[0]
    if isinstance(layer, ReLU):
        return np.maximum(a, 0)
    if layer.kind == "Flatten":
        return a.reshape(len(a), -1)
    return layer.linear(a, layer.weight)  # AvgPool2d


def logits(net, x, batch_size=BATCH):
    """Logits (N, n_classes) of a batch of any size, ``batch_size`` images at a time; the
    network's caches are left as they were."""
    x = net.check_input(x)
    plan = steps(net)
    out = np.empty((len(x), net.n_classes), net.dtype)
    for s in range(0, len(x), batch_size):
        a = x[s:s + batch_size]
        with np.errstate(over="ignore", invalid="ignore"), kernels.one_blas_thread():
            for step in plan:
                a = run(step, a)
        # non-finite: the network's own forward names the layer and the cause
        out[s:s + batch_size] = a if np.isfinite(a).all() else net.forward(x[s:s + batch_size])
    return out
