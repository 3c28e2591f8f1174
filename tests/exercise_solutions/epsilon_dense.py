import numpy as np


def epsilon_dense(a, weight, bias, R, epsilon):
    z = a @ weight.T
    if bias is not None:
        z = z + bias
    sign0 = np.where(z >= 0, 1.0, -1.0)
    d = z + epsilon * sign0
    s = np.zeros_like(R, dtype=np.float64)
    np.divide(R, d, out=s, where=d != 0)
    c = s @ weight
    return a * c
