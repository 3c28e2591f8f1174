"""Exercise conv_relevance: the relevance pass through Conv2d, the transposed convolution.

Implement ``conv2d_transpose`` and ``epsilon_conv2d`` below, then check them:

    python -m minilrp.check conv_relevance this_file.py

The checker runs your file in a separate process, on small inputs worked by hand and on
fresh random ones (the seed is printed; --seed reproduces them), with a time limit per
call. minilrp itself cannot be imported there: write it with NumPy.

Background. A convolution is a linear layer whose weight matrix is sparse and shared; every
LRP rule needs that matrix *transposed* (step 3 of the rule pattern), i.e. the transposed
convolution, which is also the input gradient of the convolution. ``conv2d`` below (given)
computes the forward cross-correlation as PyTorch does:

    out[n, o, y, x] = sum_{c, i, j} a[n, c, y*stride + i - padding, x*stride + j - padding] * w[o, c, i, j] + b[o]

(input pixels outside the image count as 0). Its transposed convolution sends every output
value back to the input pixels its window read, with the same weights:

    out_T[n, c, Y, X] = sum over (o, y, x, i, j) with Y = y*stride + i - padding, X = x*stride + j - padding
                        of s[n, o, y, x] * w[o, c, i, j]

It is the adjoint of conv2d: sum(conv2d(a, w) * s) == sum(a * conv2d_transpose(s, w, ...)) for
any a and s (a good test of your own).

Conventions:

- weight is (C_out, C_in, K, K) as in PyTorch; the kernel is used as it is (not flipped).
- The output of conv2d_transpose has the input's size ``in_hw`` = (H, W): when
  H + 2*padding - K is not a multiple of the stride, the last rows (columns) are read by no
  window and get 0.
- epsilon_conv2d is LRP-epsilon with the four steps
    1. z = conv2d(a, weight, bias, stride, padding)
    2. s = R / (z + epsilon * sign0(z)),  sign0(z) = +1 where z >= 0, -1 where z < 0
    3. c = conv2d_transpose(s, weight, stride, padding, (H, W))
    4. R_in = a * c
  with the bias in the denominator (bias may be None); where a denominator is exactly 0,
  that output's relevance is dropped (never NaN).
- Work in float64 and do not modify the inputs in place.
"""
import numpy as np


def conv2d(a, weight, bias=None, stride=1, padding=0):
    """Given (not part of the exercise): the forward convolution.
    a (N, C_in, H, W), weight (C_out, C_in, K, K), bias (C_out,) or None
    -> (N, C_out, Ho, Wo) with Ho = (H + 2*padding - K) // stride + 1 (Wo likewise)."""
    N, C, H, W = a.shape
    Co, _, K, _ = weight.shape
    Ho = (H + 2 * padding - K) // stride + 1
    Wo = (W + 2 * padding - K) // stride + 1
    ap = np.pad(a, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.zeros((N, Co, Ho, Wo))
    for i in range(K):
        for j in range(K):
            window = ap[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, i, j])
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def conv2d_transpose(s, weight, stride, padding, in_hw):
    """The transposed convolution (the adjoint of conv2d in its input).

    s:       (N, C_out, Ho, Wo)  float64
    weight:  (C_out, C_in, K, K)
    stride, padding: ints as in conv2d
    in_hw:   (H, W), the spatial size of conv2d's input
    returns  (N, C_in, H, W) float64
    """
    raise NotImplementedError("write conv2d_transpose")


def epsilon_conv2d(a, weight, bias, R, stride, padding, epsilon):
    """LRP-epsilon relevance of the inputs of a Conv2d layer.

    a:       (N, C_in, H, W)  float64, the layer's input
    weight:  (C_out, C_in, K, K);  bias: (C_out,) or None
    R:       (N, C_out, Ho, Wo), the relevance of the layer's outputs
    stride, padding: ints;  epsilon: float >= 0
    returns  R_in: (N, C_in, H, W) float64
    """
    raise NotImplementedError("write epsilon_conv2d")
