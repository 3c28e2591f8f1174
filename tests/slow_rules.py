"""Formula-literal twins of the LRP rules: explicit loops over inputs j and outputs k of a
layer written as a dense matrix W (K, J) with bias b (K,), straight from the formulas in
minilrp/rules.py (and ../shared/ZENNIT_SEMANTICS.md). Slow on purpose; float64 only.

A convolution or pool is first turned into its dense matrix, so one twin serves all layers.
"""
import numpy as np

from minilrp import kernels


def s0(z):
    return 1.0 if z >= 0 else -1.0


def stab(z, eps):
    return z + eps * s0(z)


def pos(v):
    return max(v, 0.0)


def neg(v):
    return min(v, 0.0)


def epsilon(a, W, b, R, eps):
    K, J = W.shape
    out = np.zeros(J)
    for k in range(K):
        z = sum(a[j] * W[k, j] for j in range(J)) + (b[k] if b is not None else 0.0)
        d = stab(z, eps)
        if d == 0:
            continue
        for j in range(J):
            out[j] += a[j] * W[k, j] * R[k] / d
    return out


def gamma(a, W, b, R, g, eps):
    K, J = W.shape
    out = np.zeros(J)
    for k in range(K):
        bk = b[k] if b is not None else 0.0
        z = sum(a[j] * W[k, j] for j in range(J)) + bk
        if z == 0:
            continue
        # z > 0: a+ through w + g w+, a- through w + g w-;  z < 0: the other way round
        up = [W[k, j] + g * pos(W[k, j]) for j in range(J)]
        down = [W[k, j] + g * neg(W[k, j]) for j in range(J)]
        wa_pos, wa_neg = (up, down) if z > 0 else (down, up)
        bias = bk + g * (pos(bk) if z > 0 else neg(bk))
        d = sum(pos(a[j]) * wa_pos[j] + neg(a[j]) * wa_neg[j] for j in range(J)) + bias
        d = stab(d, eps)
        if d == 0:
            continue
        for j in range(J):
            out[j] += (pos(a[j]) * wa_pos[j] + neg(a[j]) * wa_neg[j]) * R[k] / d
    return out


def alpha_beta(a, W, b, R, alpha, beta, eps):
    K, J = W.shape
    out = np.zeros(J)
    for k in range(K):
        bk = b[k] if b is not None else 0.0
        zp = sum(pos(a[j]) * pos(W[k, j]) + neg(a[j]) * neg(W[k, j]) for j in range(J)) + pos(bk)
        zn = sum(pos(a[j]) * neg(W[k, j]) + neg(a[j]) * pos(W[k, j]) for j in range(J)) + neg(bk)
        dp, dn = stab(zp, eps), stab(zn, eps)
        for j in range(J):
            if dp != 0:
                out[j] += alpha * (pos(a[j]) * pos(W[k, j]) + neg(a[j]) * neg(W[k, j])) * R[k] / dp
            if dn != 0 and beta:
                out[j] -= beta * (pos(a[j]) * neg(W[k, j]) + neg(a[j]) * pos(W[k, j])) * R[k] / dn
    return out


def zbox(x, low, high, W, R, eps):
    K, J = W.shape
    out = np.zeros(J)
    for k in range(K):
        z = sum(x[j] * W[k, j] - low[j] * pos(W[k, j]) - high[j] * neg(W[k, j]) for j in range(J))
        d = stab(z, eps)
        for j in range(J):
            out[j] += (x[j] * W[k, j] - low[j] * pos(W[k, j]) - high[j] * neg(W[k, j])) * R[k] / d
    return out


def wsquare(W, b, R, eps):
    K, J = W.shape
    out = np.zeros(J)
    for k in range(K):
        z = sum(W[k, j] ** 2 for j in range(J)) + (b[k] ** 2 if b is not None else 0.0)
        d = stab(z, eps)
        for j in range(J):
            out[j] += W[k, j] ** 2 * R[k] / d
    return out


def flat(T, R, eps):
    """T: (K, J) connectivity (1 where input j lies in output k's window)."""
    K, J = T.shape
    out = np.zeros(J)
    for k in range(K):
        n = sum(T[k, j] for j in range(J))
        d = stab(n, eps)
        for j in range(J):
            out[j] += T[k, j] * R[k] / d
    return out


def maxpool_wta(a, K, s):
    """a: (H, W) one plane -> function mapping R (Ho, Wo) to R_in (H, W)."""
    H, W = a.shape
    Ho, Wo = (H - K) // s + 1, (W - K) // s + 1

    def apply(R):
        out = np.zeros((H, W))
        for oy in range(Ho):
            for ox in range(Wo):
                win = [(oy * s + i, ox * s + j) for i in range(K) for j in range(K)]
                m = max(a[p] for p in win)
                ties = [p for p in win if a[p] == m]
                for p in ties:
                    out[p] += R[oy, ox] / len(ties)
        return out
    return apply


def maxpool_proportional(a, K, s, eps):
    H, W = a.shape
    Ho, Wo = (H - K) // s + 1, (W - K) // s + 1

    def apply(R):
        out = np.zeros((H, W))
        for oy in range(Ho):
            for ox in range(Wo):
                win = [(oy * s + i, ox * s + j) for i in range(K) for j in range(K)]
                d = stab(sum(a[p] for p in win), eps)
                for p in win:
                    out[p] += a[p] * R[oy, ox] / d
        return out
    return apply


# ---------------------------------------------------------------------------------------
def dense_form(layer, in_shape):
    """(W, b, T) of a Dense, Conv2d or AvgPool2d layer for one example of shape in_shape:
    W (K, J) the layer's matrix, b (K,) its bias or None, T the connectivity (window taps)."""
    J = int(np.prod(in_shape))
    eye = np.eye(J).reshape((J,) + tuple(in_shape))
    if hasattr(layer, "in_features"):
        W = layer.weight.astype(np.float64)
        return W, layer.bias, np.ones_like(W)
    if hasattr(layer, "in_channels"):
        cols = kernels.conv2d_ref(eye, layer.weight.astype(np.float64), None, layer.stride, layer.padding)
        taps = kernels.conv2d_ref(eye, np.ones_like(layer.weight, dtype=np.float64), None, layer.stride, layer.padding)
        b = None if layer.bias is None else np.repeat(layer.bias, cols[0, 0].size)
    else:  # AvgPool2d: depthwise
        C, H, Wd = in_shape
        Ho = (H + 2 * layer.padding - layer.kernel_size) // layer.stride + 1
        Wo = (Wd + 2 * layer.padding - layer.kernel_size) // layer.stride + 1
        k = np.full((layer.kernel_size, layer.kernel_size), 1.0 / layer.kernel_size ** 2)
        C1 = J * C
        cols = kernels.conv2d_ref(eye.reshape(C1, 1, H, Wd), k[None, None], None, layer.stride, layer.padding)
        taps = kernels.conv2d_ref(eye.reshape(C1, 1, H, Wd), np.ones_like(k)[None, None], None, layer.stride, layer.padding)
        cols, taps = cols.reshape(J, C, Ho, Wo), taps.reshape(J, C, Ho, Wo)
        b = None
    W = cols.reshape(J, -1).T
    return W, b, taps.reshape(J, -1).T
