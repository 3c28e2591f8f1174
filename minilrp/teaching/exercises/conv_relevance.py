"""Exercise conv_relevance: the transposed convolution and LRP-epsilon through Conv2d."""
from __future__ import annotations

import numpy as np

from ...engine.kernels import conv2d_ref
from ...engine.layers import Conv2d
from ...explain.rules import Epsilon
from .shared import STABILISER_HINTS, bundled, divide, sample_inputs, stabilise

TITLE = "The relevance pass through Conv2d: the transposed convolution"
FUNCTIONS = ["conv2d_transpose", "epsilon_conv2d"]
SUMMARY = "conv2d_transpose: the adjoint of conv2d; epsilon_conv2d: LRP-epsilon with it"
POLICY = {"allowed": "NumPy, Python's standard library and the conv2d given in the skeleton "
                     "(no part of minilrp)",
          "hint": "write it yourself from the formula in the skeleton"}
HINTS = {"flipped_kernel": "the kernel is flipped: the transposed convolution scatters s[o, y, x] * "
                           "w[o, c, i, j] to input pixel (y*stride + i - padding, x*stride + j - "
                           "padding) with the kernel as it is; a *true* convolution (which flips) is "
                           "what you get when you write it as a gather and forget to undo the flip",
         "offset_plus_one": "off by one pixel: your result is the reference shifted by one "
                            "row and column (up-left): output pixel (y, x) of the padded "
                            "result belongs to input (y - padding, x - padding)",
         "offset_minus_one": "off by one pixel: your result is the reference shifted by one "
                             "row and column (down-right): crop the padded result from "
                             "index padding, input pixel = y*stride + i - padding",
         "padding_not_removed": "the padding was not cropped away: you kept the first H rows "
                                "and W columns of the padded result; the input's pixels are "
                                "rows padding .. padding + H - 1 (crop [padding:padding + H])",
         "stride_ignored": "the stride is ignored: output pixel (y, x) of a window with stride "
                           "s starts at input row y*stride, column x*stride (you placed it at "
                           "y, x)",
         "channels_swapped": "input and output channels are swapped: weight is (C_out, C_in, "
                             "K, K); the relevance of input channel c sums over output "
                             "channels o of s[o] * weight[o, c]",
         **{k: STABILISER_HINTS[k] for k in ("stabiliser_sign", "stabiliser_plus", "missing_stabiliser")},
         "bias_ignored": "your denominator leaves the bias out: z = conv2d(a, weight, bias)",
         "no_input_factor": "you returned the transposed convolution c without multiplying "
                            "by the input a (R_in = a * c)"}
USUAL_CAUSES = ["flipped kernel: the transposed convolution uses w[o, c, i, j] unflipped "
                "in the scatter form",
                "off-by-one: input pixel = output pixel * stride + kernel offset - padding",
                "the output size: it is in_hw (rows no window reaches get 0)",
                "the stabiliser's sign: z + eps * sign0(z)"]
SHAPE_HINT = ("the output must have the input's size in_hw: when (H + 2*padding - K) is not a "
              "multiple of the stride, the last rows/columns are reached by no window and get zero")
UNCROPPED_HINT = ("the padding was not cropped: the scattered result is (H + 2*padding) x "
                  "(W + 2*padding); the input's pixels are [padding:padding + H, padding:padding + W]")


def transpose_variant(s, w, stride, pad, in_hw, flip=False, shift=0, swap=False, step=None):
    """Scatter form of the transposed convolution, with the usual mistakes as options
    (shift: the crop moved by that many pixels; step: the stride used for placing)."""
    if flip:
        w = w[:, :, ::-1, ::-1]
    if swap:
        w = w.transpose(1, 0, 2, 3)
    step = stride if step is None else step
    N, Co, Ho, Wo = s.shape
    _, C, K, _ = w.shape
    H, W = in_hw
    m = 2 + abs(shift)
    big = np.zeros((N, C, max(H, Ho * step) + 2 * pad + 2 * m + K, max(W, Wo * step) + 2 * pad + 2 * m + K))
    for oy in range(Ho):
        for ox in range(Wo):
            for i in range(K):
                for j in range(K):
                    big[:, :, m + oy * step + i, m + ox * step + j] += s[:, :, oy, ox] @ w[:, :, i, j]
    off = m + pad + shift
    return big[:, :, off:off + H, off:off + W]


def transpose_mistakes(s, w, stride, pad, in_hw):
    v = {"flipped_kernel": transpose_variant(s, w, stride, pad, in_hw, flip=True),
         "offset_plus_one": transpose_variant(s, w, stride, pad, in_hw, shift=1),
         "offset_minus_one": transpose_variant(s, w, stride, pad, in_hw, shift=-1)}
    if pad > 0:
        v["padding_not_removed"] = transpose_variant(s, w, stride, pad, in_hw, shift=-pad)
    if stride > 1:
        v["stride_ignored"] = transpose_variant(s, w, stride, pad, in_hw, step=1)
    if w.shape[0] == w.shape[1]:
        v["channels_swapped"] = transpose_variant(s, w, stride, pad, in_hw, swap=True)
    return v


def epsilon_variant(a, w, b, R, stride, pad, eps, denom="sign0", bias=True, times_a=True, **transpose):
    z = conv2d_ref(a, w, b if bias else None, stride, pad)
    c = transpose_variant(divide(R, stabilise(z, eps, denom)), w, stride, pad, a.shape[2:], **transpose)
    return a * c if times_a else c


def epsilon_mistakes(a, w, b, R, stride, pad, eps):
    args = (a, w, b, R, stride, pad, eps)
    v = {"stabiliser_sign": epsilon_variant(*args, "minus"),
         "stabiliser_plus": epsilon_variant(*args, "plus"),
         "missing_stabiliser": epsilon_variant(*args, "none"),
         "bias_ignored": epsilon_variant(*args, bias=False),
         "no_input_factor": epsilon_variant(*args, times_a=False),
         "flipped_kernel": epsilon_variant(*args, flip=True),
         "offset_plus_one": epsilon_variant(*args, shift=1),
         "offset_minus_one": epsilon_variant(*args, shift=-1)}
    if pad > 0:
        v["padding_not_removed"] = epsilon_variant(*args, shift=-pad)
    if stride > 1:
        v["stride_ignored"] = epsilon_variant(*args, step=1)
    return v


def layer_of(w, b, stride, pad):
    return Conv2d(w.shape[1], w.shape[0], w.shape[2], stride, pad, weight=w, bias=b,
                  use_bias=b is not None).astype(np.float64)


def add_transpose(book, cid, title, s, w, stride, pad, in_hw):
    exp = layer_of(w, None, stride, pad).linear_T(s, w, in_hw)
    N, Co, Ho, Wo = s.shape
    C, K = w.shape[1], w.shape[2]
    full = [N, C, (Ho - 1) * stride + K - 2 * pad, (Wo - 1) * stride + K - 2 * pad]
    hints = [{"shape": full, "hint": SHAPE_HINT}] if tuple(full[2:]) != tuple(in_hw) else []
    if pad > 0:
        hints.append({"shape": [N, C, in_hw[0] + 2 * pad, in_hw[1] + 2 * pad], "hint": UNCROPPED_HINT})
    book.case(cid, title, "conv2d_transpose",
              [("s", s), ("weight", w), ("stride", stride), ("padding", pad), ("in_hw", tuple(in_hw))],
              exp, transpose_mistakes(s, w, stride, pad, in_hw), output="out",
              shape_doc="(N, C_in, *in_hw)", shape_hint=hints)


def add_epsilon(book, cid, title, a, w, b, R, stride, pad, eps, **extra):
    layer = layer_of(w, b, stride, pad)
    layer.forward(a)
    exp = Epsilon(eps).relevance(layer, a, R)[0]
    variants = epsilon_mistakes(a, w, b, R, stride, pad, eps)
    hints = [{"shape": [a.shape[0], a.shape[1], a.shape[2] + 2 * pad, a.shape[3] + 2 * pad],
              "hint": UNCROPPED_HINT}] if pad > 0 else []
    book.case(cid, title, "epsilon_conv2d",
              [("a", a), ("weight", w), ("bias", b), ("R", R), ("stride", stride), ("padding", pad), ("epsilon", eps)],
              exp, variants, output="R_in", show_sums=True, shape_doc="like a: (N, C_in, H, W)", shape_hint=hints,
              nan_hint="a division by zero: stabilise the denominator with eps * sign0(z)", **extra)


def committed(book):
    s = np.zeros((1, 1, 2, 2))
    s[0, 0, 0, 0] = 1.0
    w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    add_transpose(book, "T_one_hot", "one output pixel set: the kernel lands unflipped in the input's top-left",
                  s, w, 1, 0, (4, 4))
    add_transpose(book, "T_k3", "1 -> 1 channel, 3x3 kernel, stride 1, no padding, 4x4 input",
                  np.arange(1.0, 5.0).reshape(1, 1, 2, 2), w, 1, 0, (4, 4))


def fresh(book, rng):
    g = rng("T_padding")
    add_transpose(book, "T_padding", "padding 1, stride 1, 4x4 input", g.standard_normal((1, 1, 4, 4)),
                  g.standard_normal((1, 1, 3, 3)), 1, 1, (4, 4))
    g = rng("T_stride")
    add_transpose(book, "T_stride", "3x3 kernel, stride 2, padding 1, 6x6 input: the last row/column "
                  "is reached by no window", g.standard_normal((2, 1, 3, 3)), g.standard_normal((1, 1, 3, 3)),
                  2, 1, (6, 6))
    g = rng("T_channels")
    add_transpose(book, "T_channels", "2 -> 3 channels, 2x2 kernel, stride 2, 5x5 input",
                  g.standard_normal((2, 3, 2, 2)), g.standard_normal((3, 2, 2, 2)), 2, 0, (5, 5))
    g = rng("T_square")
    add_transpose(book, "T_square", "2 -> 2 channels, 3x3 kernel, padding 2", g.standard_normal((1, 2, 7, 7)),
                  g.standard_normal((2, 2, 3, 3)), 1, 2, (5, 5))
    g = rng("E_random")
    add_epsilon(book, "E_random", "LRP-epsilon through a 2 -> 3 channel conv, 3x3, padding 1, epsilon 0.1",
                g.uniform(0, 1, (2, 2, 5, 5)), g.standard_normal((3, 2, 3, 3)), g.standard_normal(3) * 0.2,
                g.standard_normal((2, 3, 5, 5)), 1, 1, 0.1)
    g = rng("E_stride")
    add_epsilon(book, "E_stride", "stride 2, padding 1, 6x6 input", g.uniform(0, 1, (1, 2, 6, 6)),
                g.standard_normal((3, 2, 3, 3)), g.standard_normal(3) * 0.2, g.standard_normal((1, 3, 3, 3)), 2, 1, 0.1)
    net = bundled("fmnist-cnn")
    if net is not None:
        g = rng("E_bundled")
        x, idx = sample_inputs(net, g, 1)
        net.forward(x)  # every layer caches its input
        i = [j for j, layer in enumerate(net.layers) if isinstance(layer, Conv2d)][1]
        layer = net.layers[i]
        # a 5x5 crop of the second conv's input at a random place, and a random relevance for
        # its output: a valid conv layer of its own
        r, c = g.integers(0, layer.a.shape[2] - 5, 2)
        a = layer.a[:, :, r:r + 5, c:c + 5].copy()
        R = g.standard_normal((1, layer.out_channels, 5, 5))
        add_epsilon(book, "E_bundled", f"the bundled fmnist-cnn's layer {i} {layer!r} on a 5x5 crop of its "
                    f"activations (test image {int(idx[0])}, rows {r}..{r + 4}, columns {c}..{c + 4})",
                    a, layer.weight, layer.bias, R, layer.stride, layer.padding, 0.25,
                    only_here="the smaller checks pass but this one does not: here the kernel is 5x5 "
                              "with padding 2 and 32 -> 64 channels")
