import numpy as np


def maxpool_wta(a, R, kernel_size, stride):
    N, C, H, W = a.shape
    K = kernel_size
    Ho, Wo = (H - K) // stride + 1, (W - K) // stride + 1
    out = np.zeros(a.shape)
    for y in range(Ho):
        for x in range(Wo):
            win = a[:, :, y * stride:y * stride + K, x * stride:x * stride + K]
            top = win.max(axis=(2, 3), keepdims=True)
            winners = (win == top)
            share = R[:, :, y, x][:, :, None, None] / winners.sum(axis=(2, 3), keepdims=True)
            out[:, :, y * stride:y * stride + K, x * stride:x * stride + K] += winners * share
    return out
