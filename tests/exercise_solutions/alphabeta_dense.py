import numpy as np


def alphabeta_dense(a, weight, bias, R, alpha, beta, epsilon):
    ap, an = np.maximum(a, 0), np.minimum(a, 0)
    wp, wn = np.maximum(weight, 0), np.minimum(weight, 0)
    b = np.zeros(weight.shape[0]) if bias is None else bias
    bp, bn = np.maximum(b, 0), np.minimum(b, 0)
    zp = ap @ wp.T + an @ wn.T + bp
    zn = ap @ wn.T + an @ wp.T + bn

    def ratio(z):
        d = z + epsilon * np.where(z >= 0, 1.0, -1.0)
        s = np.zeros_like(d)
        np.divide(R, d, out=s, where=d != 0)
        return s

    sp, sn = ratio(zp), ratio(zn)
    pos = ap * (sp @ wp) + an * (sp @ wn)
    neg = ap * (sn @ wn) + an * (sn @ wp)
    return alpha * pos - beta * neg
