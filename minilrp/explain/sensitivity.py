"""Gradient-based explanations from the engine's own backward pass.

All functions take a batch x (N, *input_shape) in the network's input space and a target
(None = the predicted class of each image; an int; or one int per image), and return maps
shaped like x, except :func:`sa` which sums over channels: (N, H, W).
"""
from __future__ import annotations

import numpy as np

from ..errors import MinilrpError


SMOOTHGRAD_STREAM = 0x5347  # the purpose in SmoothGrad's random-stream keys


def _finite(maps, net, what):
    """The maps, if finite (the gradient itself is checked by the network): products and
    squares of finite gradients can still overflow."""
    if not np.isfinite(maps).all():
        raise MinilrpError(f"{what}: values beyond the range of {net.dtype}" +
                           (": compute in float64, net.astype('float64')" if net.dtype == np.float32 else ""))
    return maps


def gradient(net, x, target=None) -> np.ndarray:
    """d f_t(x) / dx: the gradient of the target logit."""
    return net.gradient(x, target=target)


def sa(net, x, target=None) -> np.ndarray:
    """Sensitivity analysis (Simonyan et al. 2014; Samek et al. 2017):
    SA_p = sum over channels c of (d f_t / d x_{c,p})^2.  -> (N, H, W)."""
    g = gradient(net, x, target)
    return _finite((g * g).sum(axis=1) if g.ndim == 4 else g * g, net, "SA")


def abs_gradient(net, x, target=None) -> np.ndarray:
    """|d f_t / dx|, per channel."""
    return np.abs(gradient(net, x, target))


def gradient_x_input(net, x, target=None) -> np.ndarray:
    """x * d f_t / dx (equals LRP-0 on a bias-free ReLU network)."""
    x = net.check_input(x)
    return _finite(x * gradient(net, x, target), net, "gradient x input")


def _targets(net, x, target):
    """Resolve targets once on the clean images, so noisy/interpolated copies keep them."""
    x = net.check_input(x)
    return x, net.targets(target, net.forward(x))


def smoothgrad(net, x, target=None, n_samples=32, noise=0.15, seed=0, squared=False, index=None) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over n_samples copies of x with
    Gaussian noise of std ``noise`` x (input range high - low, per channel). ``squared``
    averages squared gradients instead (SmoothGrad-Squared). An image's noise is drawn from its
    own stream, keyed by (seed, its index): ``index`` (N,) gives the images' indices in their
    data set (default 0..N-1), so a map does not depend on the batch the image came in."""
    if n_samples < 1 or noise < 0:
        raise MinilrpError(f"SmoothGrad needs n_samples >= 1 and noise >= 0, got {n_samples}, {noise}")
    x, t = _targets(net, x, target)
    index = np.arange(len(x)) if index is None else np.asarray(index)
    if index.shape != (len(x),) or index.dtype.kind not in "iu" or (index < 0).any():
        raise MinilrpError(f"index must hold one non-negative int per image ({len(x)}), got {index!r}")
    scale = noise * (net.input_high - net.input_low)
    scale = scale.reshape((-1,) + (1,) * (x.ndim - 2)) if x.ndim == 4 else scale[0]
    draws = np.stack([np.random.default_rng([seed, SMOOTHGRAD_STREAM, int(i)]).standard_normal((n_samples,) + x.shape[1:])
                      for i in index], axis=1)  # (n_samples, N, ...)
    out = np.zeros_like(x)
    for noise_i in draws:
        g = net.gradient(x + (noise_i * scale).astype(x.dtype), target=t)
        out += g * g if squared else g
    return _finite(out / n_samples, net, "SmoothGrad")


def integrated_gradients(net, x, target=None, steps=32, baseline=None) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017): (x - x0) * the mean gradient at the
    midpoints x0 + (k + 1/2)/steps (x - x0), k < steps (midpoint rule). baseline x0: None =
    the lower end of the valid input range (black for images in [0, 1]), a number, or an
    array like x. The attributions sum to about f(x) - f(x0) (completeness)."""
    if steps < 1:
        raise MinilrpError(f"Integrated Gradients needs steps >= 1, got {steps}")
    x, t = _targets(net, x, target)
    if baseline is None:
        low = net.input_low.reshape((-1,) + (1,) * (x.ndim - 2)) if x.ndim == 4 else net.input_low[0]
        x0 = np.broadcast_to(low, x.shape).astype(x.dtype)
    else:
        try:
            x0 = np.broadcast_to(np.asarray(baseline, dtype=x.dtype), x.shape)
        except ValueError:
            raise MinilrpError(f"baseline of shape {np.shape(baseline)} does not fit x {x.shape}") from None
    total = np.zeros_like(x)
    for k in range(steps):  # one batch per step: memory bounded by the batch, not by steps
        total += net.gradient(x0 + (k + 0.5) / steps * (x - x0), target=t)
    return _finite((x - x0) * total / steps, net, "Integrated Gradients")


METHODS = {
    "gradient": gradient,
    "sa": sa,
    "abs_gradient": abs_gradient,
    "gradient_x_input": gradient_x_input,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
}
