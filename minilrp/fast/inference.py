"""An inference-only forward for scoring many images (region perturbation, the oracle, the
experiment runners): the logits of ``Network.forward``, without its caches, in batches of a
bounded size, with the element-wise layers fused where they commute.

Conv2d/Dense -> ReLU -> MaxPool2d (or the pool before the ReLU) runs as: the layer (a
convolution's bias is added inside its GEMM), the max pool, then ReLU in place on the pooled
output. This is exact, not approximate: ReLU commutes with max. The logits equal
``Network.forward``'s bit for bit (tests/test_inference.py).
"""
from __future__ import annotations

import numpy as np

from ..engine import kernels
from ..errors import MinilrpError
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


def run(step, a, pad=None):
    """One fused step on a; pad=0: a is already padded by the step's first layer's padding."""
    layer, pool, relu = step
    if not isinstance(layer, (Conv2d, Dense)):
        return _plain(layer, a, pad)
    z = _linear(layer, a, pad)
    if pool is not None:
        z = kernels.maxpool_forward(z, pool.kernel_size, pool.stride)[0]
    return np.maximum(z, 0, out=z) if relu else z


def _linear(layer, a, pad):
    if pad is None or isinstance(layer, Dense):
        return layer.linear(a, layer.weight, layer.bias)
    if isinstance(layer, Conv2d):
        return kernels.conv2d(a, layer.weight, layer.bias, layer.stride, pad)
    return kernels.pool2d(a, layer.weight, layer.stride, pad)  # AvgPool2d


def _plain(layer, a, pad=None):
    """A layer's forward without touching its cache."""
    if isinstance(layer, MaxPool2d):
        return kernels.maxpool_forward(a, layer.kernel_size, layer.stride)[0]
    if isinstance(layer, ReLU):
        return np.maximum(a, 0)
    if layer.kind == "Flatten":
        return a.reshape(len(a), -1)
    return _linear(layer, a, pad)  # AvgPool2d


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


def _geometry(step, a):
    """(kernel, stride, padding) of each spatial operation of a step on a (N, C, H, W); None for
    a step on vectors (Flatten, Dense)."""
    layer, pool, _ = step
    if a.ndim != 4 or isinstance(layer, Dense) or layer.kind == "Flatten":
        return None
    ops = [(1, 1, 0)] if isinstance(layer, ReLU) else [(layer.kernel_size, layer.stride, layer.padding)]
    return ops + ([(pool.kernel_size, pool.stride, 0)] if pool is not None else [])


def _affected(lo, hi, ops, n):
    """Outputs [lo', hi') (per image) whose windows read the changed inputs [lo, hi) of length
    n, through every operation; and the output length."""
    for K, s, p in ops:
        n = (n + 2 * p - K) // s + 1
        lo, hi = np.maximum(0, -((K - 1 - p - lo) // s)), np.where(hi > lo, np.minimum(n, (hi - 1 + p) // s + 1), 0)
    return lo, np.maximum(lo, hi), n


def _reads(start, size, ops):
    """The padded input rows [start', start' + size') that outputs [start, start + size) read."""
    for K, s, _ in reversed(ops):
        start, size = start * s, (size - 1) * s + K
    return start, size


class Scorer:
    """Logits of images that change a little at a time (region perturbation: each step distorts
    a region): the inputs of the spatial steps are kept (zero padded), and an image that differs
    from the kept one in a box recomputes, layer after layer, only the outputs whose windows
    read the changed box, until the box covers most of a layer (then the rest of the image), and
    the layers on vectors in full. Same arithmetic as :func:`logits` on smaller windows: equal
    to the rounding of GEMMs of other sizes (tests/test_inference.py).

    x: (B, C, H, W) the starting images; ``logits`` (B, n_classes) theirs."""

    FULL = 0.6  # a window above this fraction of a layer's output: recompute the layer whole

    def __init__(self, net, x):
        self.net, self.plan, self.kept, self.ops, a = net, steps(net), [], [], net.check_input(x)
        with np.errstate(over="ignore", invalid="ignore"), kernels.one_blas_thread():
            for step in self.plan:
                ops = _geometry(step, a)
                if ops is None:
                    break
                self.kept.append(np.pad(a, ((0, 0), (0, 0)) + ((ops[0][2],) * 2,) * 2))
                self.ops.append(ops)
                a = run(step, self.kept[-1], 0)
            self.kept.append(np.ascontiguousarray(a))
            self.logits = self._rest(a, x)

    def _rest(self, a, x):
        for step in self.plan[len(self.ops):]:
            a = run(step, a)
        return a if np.isfinite(a).all() else self.net.forward(x)  # names the layer and the cause

    def update(self, rows, x, keep=True):
        """Logits of new images x (n, C, H, W) for the kept images ``rows`` (n,); keep=False
        leaves the kept images as they were (rows may then repeat)."""
        rows, x = np.asarray(rows), self.net.check_input(x)
        bad = rows.shape != (len(x),) or rows.dtype.kind not in "iu" or np.any((rows < 0) | (rows >= len(self.logits)))
        if bad or keep and len(np.unique(rows)) < len(rows):
            raise MinilrpError(f"rows must be {len(x)} indices of the {len(self.logits)} kept images (repeats: keep=False), got {rows!r}")
        (H, W), p = x.shape[2:], self.ops[0][0][2] if self.ops else 0
        kept, at = (self.kept, rows) if keep else ([a[rows] for a in self.kept], np.arange(len(rows)))
        with np.errstate(over="ignore", invalid="ignore"), kernels.one_blas_thread():
            changed = (x != kept[0][at, :, p:p + H, p:p + W]).any(axis=1)
            ys, xs = changed.any(axis=2), changed.any(axis=1)  # an unchanged image: an empty box
            box = [ys.argmax(1), np.where(ys.any(1), H - ys[:, ::-1].argmax(1), 0),
                   xs.argmax(1), np.where(xs.any(1), W - xs[:, ::-1].argmax(1), 0)]
            kept[0][at, :, p:p + H, p:p + W] = x
            for j, (step, ops) in enumerate(zip(self.plan, self.ops)):
                box = self._step(j, step, ops, kept, at, box)
            return self._rest(kept[-1][at], x)

    def _step(self, j, step, ops, kept, at, box):
        """Step j on the changed boxes (y0, y1, x0, x1) of images at; -> the next step's boxes."""
        src, dst, q = kept[j], kept[j + 1], self.ops[j + 1][0][2] if j + 1 < len(self.ops) else 0
        y0, y1, Ho = _affected(box[0], box[1], ops, src.shape[2] - 2 * ops[0][2])
        x0, x1, Wo = _affected(box[2], box[3], ops, src.shape[3] - 2 * ops[0][2])
        h, w = (y1 - y0).max(), (x1 - x0).max()
        if h * w == 0:  # nothing this step computes has changed
            return [y0, y0, x0, x0]
        if h * w >= self.FULL * Ho * Wo:
            dst[at, :, q:q + Ho, q:q + Wo] = run(step, src[at], 0)
            return [np.zeros_like(y0), np.full_like(y0, Ho), np.zeros_like(y0), np.full_like(y0, Wo)]
        y0, x0 = np.minimum(y0, Ho - h), np.minimum(x0, Wo - w)
        (sy, hy), (sx, hx) = _reads(y0, h, ops), _reads(x0, w, ops)
        window = np.lib.stride_tricks.sliding_window_view(src, (hy, hx), axis=(2, 3))[at, :, sy, sx]
        out = run(step, np.ascontiguousarray(window), 0)  # (n, Co, h, w)
        iy, ix = (q + y0)[:, None] + np.arange(h), (q + x0)[:, None] + np.arange(w)
        dst[at[:, None, None], :, iy[:, :, None], ix[:, None, :]] = out.transpose(0, 2, 3, 1)
        return [y0, y0 + h, x0, x0 + w]
