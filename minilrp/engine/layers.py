"""Layers of a sequential image classifier, NCHW, each with an explicit forward cache.

``forward(a)`` keeps its input ``a`` (and whatever its backward needs) on the layer and
returns the output; ``backward(g)`` maps the gradient w.r.t. the output to the true
gradient w.r.t. that cached input. LRP needs every layer's input again, so the cache is
always the input itself.

Linear layers (Dense, Conv2d, AvgPool2d) also expose their arithmetic with *any*
parameters, ``linear(a, w, b)`` and its adjoint ``linear_T(s, w)``: the LRP rules reuse it
with rho-modified weights (DESIGN.md, the rule pattern). Weights follow PyTorch's layout.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from ..errors import MinilrpError


class Layer:
    """Base class. Subclasses set ``kind`` (the name in the weight file)."""

    kind = "Layer"
    param_names: tuple = ()

    def __init__(self):
        self.a = None  # cached input of the last forward

    def config(self) -> dict:
        """Hyperparameters, as stored in the weight file's architecture record."""
        return {}

    def params(self) -> dict:
        """Parameter arrays by name (``weight``, ``bias``)."""
        return {name: getattr(self, name) for name in self.param_names}

    def output_shape(self, in_shape: tuple) -> tuple:
        """Shape (without batch) of the output for input shape ``in_shape``; raises
        MinilrpError when the input cannot feed this layer."""
        return tuple(in_shape)

    def forward(self, a):
        raise NotImplementedError

    def backward(self, g):
        raise NotImplementedError

    def describe(self) -> str:
        """A compact one-line description, e.g. ``Conv2d 1->32 k5 s1 p2``."""
        c = self.config()
        if "in_features" in c:
            return f"{self.kind} {c['in_features']}->{c['out_features']}"
        if "in_channels" in c:
            return f"{self.kind} {c['in_channels']}->{c['out_channels']} k{c['kernel_size']} s{c['stride']} p{c['padding']}"
        if "kernel_size" in c:
            return f"{self.kind} k{c['kernel_size']} s{c['stride']}" + (f" p{c['padding']}" if c.get("padding") else "")
        return self.kind

    def astype(self, dtype):
        for name in self.param_names:
            p = getattr(self, name)
            if p is not None:
                setattr(self, name, np.ascontiguousarray(p, dtype=dtype))
        return self

    def clear(self):
        """Drop the forward cache."""
        self.a = None

    def _cached(self):
        if self.a is None:
            raise MinilrpError(f"{self!r}: backward or relevance called before forward")
        return self.a

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _array(value, shape, what):
    a = np.asarray(value)
    if a.dtype.kind != "f":
        raise MinilrpError(f"{what} must be a floating-point array, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise MinilrpError(f"{what} must have shape {tuple(shape)}, got {a.shape}")
    if not np.isfinite(a).all():
        raise MinilrpError(f"{what} contains NaN or inf")
    return np.ascontiguousarray(a)


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MinilrpError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _nonnegative_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise MinilrpError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


class Dense(Layer):
    """z = a @ W.T + b.  a: (N, in_features) -> (N, out_features); W: (out, in)."""

    kind = "Dense"
    param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, weight=None, bias=None, use_bias=True):
        super().__init__()
        self.in_features = _positive_int(in_features, "Dense in_features")
        self.out_features = _positive_int(out_features, "Dense out_features")
        shape = (self.out_features, self.in_features)
        self.weight = np.zeros(shape, np.float32) if weight is None else _array(weight, shape, "Dense weight")
        if bias is None and use_bias:
            bias = np.zeros(self.out_features, self.weight.dtype)
        self.bias = None if bias is None else _array(bias, (self.out_features,), "Dense bias")

    def params(self):
        return {"weight": self.weight} if self.bias is None else {"weight": self.weight, "bias": self.bias}

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}

    def output_shape(self, in_shape):
        if tuple(in_shape) != (self.in_features,):
            raise MinilrpError(f"{self!r} expects input of shape ({self.in_features},) per "
                               f"example, got {tuple(in_shape)} (missing Flatten?)")
        return (self.out_features,)

    @staticmethod
    def linear(a, w, b=None):
        """a: (N, in), w: (out, in), b: (out,) or None -> (N, out)."""
        z = kernels.matmul(a, w.T)  # a @ w.T, in pieces the threads share
        if b is not None:
            z += b
        return z

    @staticmethod
    def linear_T(s, w):
        """Adjoint in a: s: (N, out) -> (N, in)."""
        return kernels.matmul(s, w)

    def forward(self, a):
        self.a = a
        return self.linear(a, self.weight, self.bias)

    def backward(self, g):
        self._cached()
        return self.linear_T(g, self.weight)


class Conv2d(Layer):
    """2-D cross-correlation with stride and zero padding, as torch.nn.Conv2d (groups=1,
    dilation=1). a: (N, C, H, W) -> (N, Co, Ho, Wo); weight (Co, C, K, K); bias (Co,)."""

    kind = "Conv2d"
    param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 weight=None, bias=None, use_bias=True):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "Conv2d in_channels")
        self.out_channels = _positive_int(out_channels, "Conv2d out_channels")
        self.kernel_size = _positive_int(kernel_size, "Conv2d kernel_size")
        self.stride = _positive_int(stride, "Conv2d stride")
        self.padding = _nonnegative_int(padding, "Conv2d padding")
        shape = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        self.weight = np.zeros(shape, np.float32) if weight is None else _array(weight, shape, "Conv2d weight")
        if bias is None and use_bias:
            bias = np.zeros(self.out_channels, self.weight.dtype)
        self.bias = None if bias is None else _array(bias, (self.out_channels,), "Conv2d bias")

    def params(self):
        return {"weight": self.weight} if self.bias is None else {"weight": self.weight, "bias": self.bias}

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "bias": self.bias is not None}

    def output_shape(self, in_shape):
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise MinilrpError(f"{self!r} expects input (C={self.in_channels}, H, W) per "
                               f"example, got {tuple(in_shape)}")
        _, H, W = in_shape
        Ho = kernels.conv_output_size(H, self.kernel_size, self.stride, self.padding)
        Wo = kernels.conv_output_size(W, self.kernel_size, self.stride, self.padding)
        if Ho < 1 or Wo < 1:
            raise MinilrpError(f"{self!r}: input {H}x{W} is smaller than the kernel")
        return (self.out_channels, Ho, Wo)

    def linear(self, a, w, b=None):
        """Convolution of a (N, C, H, W) with any weights w (Co, C, K, K), bias b or None."""
        return kernels.conv2d(a, w, b, self.stride, self.padding)

    def linear_T(self, s, w, in_hw=None):
        """Transposed convolution: the adjoint of ``linear`` in a. s: (N, Co, Ho, Wo)."""
        in_hw = self._cached().shape[2:] if in_hw is None else in_hw
        return kernels.conv2d_transpose(s, w, self.stride, self.padding, in_hw)

    def forward(self, a):
        self.a = a
        return self.linear(a, self.weight, self.bias)

    def backward(self, g):
        return self.linear_T(g, self.weight)


class _Pool(Layer):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _positive_int(kernel_size, f"{self.kind} kernel_size")
        self.stride = self.kernel_size if stride is None else _positive_int(stride, f"{self.kind} stride")
        self.padding = _nonnegative_int(padding, f"{self.kind} padding")
        if self.padding > self.kernel_size // 2:
            raise MinilrpError(f"{self.kind} padding {self.padding} exceeds half the kernel "
                               f"size {self.kernel_size} (PyTorch's limit)")

    def config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise MinilrpError(f"{self!r} expects (C, H, W) per example, got {tuple(in_shape)}")
        C, H, W = in_shape
        Ho = kernels.conv_output_size(H, self.kernel_size, self.stride, self.padding)
        Wo = kernels.conv_output_size(W, self.kernel_size, self.stride, self.padding)
        if Ho < 1 or Wo < 1:
            raise MinilrpError(f"{self!r}: input {H}x{W} is smaller than the window")
        return (C, Ho, Wo)


class MaxPool2d(_Pool):
    """Max over K x K windows (stride defaults to K; overlapping windows allowed; no
    padding). The forward caches the argmax; backward routes each gradient to it (the first
    maximum on ties, as PyTorch)."""

    kind = "MaxPool2d"

    def __init__(self, kernel_size, stride=None, padding=0):
        if padding:
            raise MinilrpError("MaxPool2d supports padding=0 only")
        super().__init__(kernel_size, stride, 0)
        self.arg = None

    def config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride}

    def forward(self, a):
        self.a = a
        out, self.arg = kernels.maxpool_forward(a, self.kernel_size, self.stride)
        return out

    def backward(self, g):
        return kernels.maxpool_backward(g, self.arg, self.kernel_size, self.stride, self._cached().shape)

    def windows(self, a):
        """Every window's inputs: (K*K, N, C, Ho, Wo), entry [i*K + j] the window's (i, j)."""
        N, C = a.shape[:2]
        cols = kernels.windows(a, self.kernel_size, self.stride)
        return cols.reshape((len(cols), N, C) + self.output_shape(a.shape[1:])[1:])

    def windows_T(self, cols, in_shape):
        """Adjoint of :meth:`windows`: every window entry added back to the input it came from
        (overlapping windows accumulate). cols (K*K, N, C, Ho, Wo) -> in_shape."""
        return kernels.unwindows(cols.reshape(len(cols), -1), self.kernel_size, self.stride, 0, in_shape)

    def clear(self):
        self.a = self.arg = None


class AvgPool2d(_Pool):
    """Mean over K x K windows, zero padding counted (PyTorch's count_include_pad=True).
    A linear layer with the fixed kernel ``weight`` = 1/K^2 (K, K), shared by all channels,
    so LRP rules treat it like a (depthwise) convolution."""

    kind = "AvgPool2d"

    @property
    def weight(self):
        K = self.kernel_size
        dtype = self.a.dtype if self.a is not None else np.float32
        return np.full((K, K), 1.0 / (K * K), dtype)

    bias = None

    def linear(self, a, w, b=None):
        """Depthwise pooling of a (N, C, H, W) with any kernel w (K, K); no bias."""
        return kernels.pool2d(a, w, self.stride, self.padding)

    def linear_T(self, s, w, in_hw=None):
        """Adjoint of ``linear`` in a. s: (N, C, Ho, Wo)."""
        N, C = s.shape[:2]
        H, W = self._cached().shape[2:] if in_hw is None else in_hw
        return kernels.pool2d_transpose(s, w, self.stride, self.padding, (N, C, H, W))

    def forward(self, a):
        self.a = a
        return self.linear(a, self.weight)

    def backward(self, g):
        return self.linear_T(g, self.weight)


class ReLU(Layer):
    """max(a, 0); the gradient at exactly 0 is taken as 0 (as PyTorch)."""

    kind = "ReLU"

    def forward(self, a):
        self.a = a
        return kernels.elementwise(lambda a, out: np.maximum(a, 0, out=out), a)

    def backward(self, g):
        return kernels.elementwise(lambda g, a, out: np.multiply(g, a > 0, out=out), g, self._cached())


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in C order (as torch.flatten)."""

    kind = "Flatten"

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, a):
        self.a = a
        return a.reshape(a.shape[0], -1)

    def backward(self, g):
        return g.reshape(self._cached().shape)


LAYER_TYPES = {cls.kind: cls for cls in (Dense, Conv2d, MaxPool2d, AvgPool2d, ReLU, Flatten)}
