import numpy as np


def conv2d(a, weight, bias=None, stride=1, padding=0):
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
    N, Co, Ho, Wo = s.shape
    _, C, K, _ = weight.shape
    H, W = in_hw
    kernel = weight
    padded = np.zeros((N, C, H + 2 * padding + K, W + 2 * padding + K))
    for y in range(Ho):
        for x in range(Wo):
            for i in range(K):
                for j in range(K):
                    padded[:, :, y * stride + i, x * stride + j] += s[:, :, y, x] @ kernel[:, :, i, j]
    return padded[:, :, padding:padding + H, padding:padding + W].copy()


def epsilon_conv2d(a, weight, bias, R, stride, padding, epsilon):
    z = conv2d(a, weight, bias, stride, padding)
    d = z + epsilon * np.where(z >= 0, 1.0, -1.0)
    s = np.zeros_like(d)
    np.divide(R, d, out=s, where=d != 0)
    c = conv2d_transpose(s, weight, stride, padding, a.shape[2:])
    return a * c
