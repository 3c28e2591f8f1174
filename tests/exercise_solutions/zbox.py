import numpy as np


def zbox_dense(x, weight, low, high, R, epsilon):
    low = np.broadcast_to(low, x.shape)
    high = np.broadcast_to(high, x.shape)
    wp, wn = np.maximum(weight, 0), np.minimum(weight, 0)
    z = x @ weight.T - low @ wp.T - high @ wn.T
    d = z + epsilon * np.where(z >= 0, 1.0, -1.0)
    s = np.zeros_like(d)
    np.divide(R, d, out=s, where=d != 0)
    return x * (s @ weight) - low * (s @ wp) - high * (s @ wn)
