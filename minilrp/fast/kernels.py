"""The fast path's numba kernels: LRP's element-wise steps fused into one pass, and max-pool
relevance with ties split. Each has a NumPy twin (``*_ref``); tests check they agree.

They take C-contiguous float32 or float64 arrays and run serial, split across the engine's
threads by ``engine.kernels._split`` (whole planes or images per thread).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..engine.kernels import _split, unwindows, windows


@njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc"})
def _two_term_ratios(P, Q, R, B, C, gamma, S, shares, c_lo, c_hi, b_lo, b_hi):
    """The element-wise steps of the LRP rules for inputs a >= 0, for images [b_lo, b_hi).

    P = a w+, Q = a w- (N, Co, L); Q of 0 channels: one term (Q = 0). R (N, Co, L).
    B (3, Co): bias, bias_p, bias_n; C (packed: numba's dispatch costs per argument): ap, bp,
    an, bn, cp, cn, eps. Denominators d_p = ap P + bp Q + bias_p[k], d_n = an P + bn Q +
    bias_n[k], stabilised s(d) = d + eps sign0(d). gamma: d_p serves only where
    z = P + Q + bias > 0 and d_n only where z < 0 (LRP-gamma; z = 0 drops R); else both
    everywhere (alpha-beta). Writes S[:, :Co] = cp R / s(d_p), S[:, Co:] = cn R / s(d_n) (0
    where unused or s(d) = 0), and per image into shares (N, 5): bias, stabiliser, dropped,
    positive (sum S_p P), negative (-sum S_n Q).

    Branch-free (selects instead of ifs), reassociation allowed only (fastmath "reassoc": no
    nnan/ninf around the division): the loop vectorises. A division by a zero denominator is
    computed and discarded."""
    Co, L = R.shape[1], R.shape[2]
    ap, bp, an, bn, cp, cn, eps = C[0], C[1], C[2], C[3], C[4], C[5], C[6]
    two = Q.shape[1] > 0
    zero, one = R.dtype.type(0), R.dtype.type(1)
    for n in range(b_lo, b_hi):
        sb = 0.0
        ss = 0.0
        sd = 0.0
        sp_sum = 0.0
        sn_sum = 0.0
        for k in range(Co):
            bk, bpk, bnk = B[0, k], B[1, k], B[2, k]
            # the one-term loop repeats the P half of the two-term loop on purpose: merged
            # (Q = 0, the second half masked off) both ran slower
            if not two:
                for l in range(L):
                    r = R[n, k, l]
                    p = P[n, k, l]
                    z = p + bk
                    use_p = (z > 0) | (not gamma)
                    sd += r if (gamma & (z == 0)) else zero
                    d = ap * p + bpk
                    st = d + (eps if d >= 0 else -eps)
                    ok = use_p & (st != 0)
                    s_p = cp * r / (st if ok else one) if ok else zero
                    sd += cp * r if (use_p & (st == 0)) else zero
                    sb += s_p * bpk
                    ss += s_p * (st - d)
                    sp_sum += s_p * p
                    S[n, k, l] = s_p
                continue
            for l in range(L):
                r = R[n, k, l]
                p = P[n, k, l]
                q = Q[n, k, l]
                z = p + q + bk
                use_p = (z > 0) | (not gamma)
                use_n = (z < 0) | (not gamma)
                sd += r if (gamma & (z == 0)) else zero
                d = ap * p + bp * q + bpk
                st = d + (eps if d >= 0 else -eps)
                ok = use_p & (st != 0)
                s_p = cp * r / (st if ok else one) if ok else zero
                sd += cp * r if (use_p & (st == 0)) else zero
                sb += s_p * bpk
                ss += s_p * (st - d)
                sp_sum += s_p * p
                S[n, k, l] = s_p
                d = an * p + bn * q + bnk
                st = d + (eps if d >= 0 else -eps)
                ok = use_n & (st != 0)
                s_n = cn * r / (st if ok else one) if ok else zero
                sd += cn * r if (use_n & (st == 0)) else zero
                sb += s_n * bnk
                ss += s_n * (st - d)
                sn_sum -= s_n * q
                S[n, Co + k, l] = s_n
        shares[n, 0] = sb
        shares[n, 1] = ss
        shares[n, 2] = sd
        shares[n, 3] = sp_sum
        shares[n, 4] = sn_sum


def two_term_ratios(P, Q, R, bias, bias_p, bias_n, ap, bp, an, bn, cp, cn, eps, gamma):
    """Fused step 2 of LRP-gamma / alpha-beta / z+ / epsilon for non-negative inputs (see
    :func:`_two_term_ratios`). P, R: (N, Co, ...); Q like P, or None for one term; bias,
    bias_p, bias_n: (Co,). -> S (N, 2Co, ...) for two terms, else (N, Co, ...); shares (N, 5)
    float64."""
    N, Co = R.shape[:2]
    L = R.size // (N * Co)
    dt = R.dtype
    P3 = np.ascontiguousarray(P, dt).reshape(N, Co, L)
    Q3 = np.empty((N, 0, L), dt) if Q is None else np.ascontiguousarray(Q, dt).reshape(N, Co, L)
    S = np.empty((N, (1 if Q is None else 2) * Co) + R.shape[2:], dt)
    shares = np.zeros((N, 5))
    B = np.array([bias, bias_p, bias_n], dt).reshape(3, Co)
    C = np.array([ap, bp, an, bn, cp, cn, eps], dt)
    _split(_two_term_ratios, (P3, Q3, np.ascontiguousarray(R).reshape(N, Co, L), B, C, gamma,
                              S.reshape(N, -1, L), shares), 1, N, S.size)
    return S, shares


def two_term_ratios_ref(P, Q, R, bias, bias_p, bias_n, ap, bp, an, bn, cp, cn, eps, gamma):
    """NumPy twin of :func:`two_term_ratios`."""
    N, Co = R.shape[:2]
    shape = (1, Co) + (1,) * (R.ndim - 2)
    bias, bias_p, bias_n = (np.asarray(v).reshape(shape) for v in (bias, bias_p, bias_n))
    two = Q is not None
    Q = Q if two else np.zeros_like(P)
    z = P + Q + bias
    use_p = z > 0 if gamma else np.ones(P.shape, bool)
    use_n = (z < 0 if gamma else np.ones(P.shape, bool)) & two
    total = lambda v: v.reshape(N, -1).sum(axis=1)
    out, sums = [], np.zeros((N, 5))
    sums[:, 2] = total(np.where(gamma & (z == 0), R, 0))
    for use, a_, b_, bb, c, part, sign in ((use_p, ap, bp, bias_p, cp, P, 1), (use_n, an, bn, bias_n, cn, Q, -1)):
        d = a_ * P + b_ * Q + bb
        st = d + np.where(d >= 0, eps, -eps)
        ok = use & (st != 0)
        s = np.where(ok, c * R / np.where(ok, st, 1), 0)
        sums[:, 0] += total(s * bb)
        sums[:, 1] += total(s * (st - d))
        sums[:, 2] += total(np.where(use & (st == 0), c * R, 0))
        sums[:, 3 if sign > 0 else 4] += sign * total(s * part)
        out.append(s)
    return (np.concatenate(out, axis=1) if two else out[0]), sums


# --------------------------------------------------------------------------------------
# Max-pool relevance, ties split evenly (winner-take-all)
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, boundscheck=False)
def _maxpool_split_route(x, out, R, K, stride, res, c_lo, c_hi, b_lo, b_hi):
    """Planes p in [b_lo, b_hi): each window's R shared evenly among its entries equal to the
    window maximum ``out``, accumulated into the zeroed res (overlapping windows add up).
    Windows with R = 0 (common: relevance vanishes with the activation) are skipped."""
    Ho, Wo = R.shape[1], R.shape[2]
    for p in range(b_lo, b_hi):
        for oy in range(Ho):
            for ox in range(Wo):
                r = R[p, oy, ox]
                if r == 0:
                    continue
                y0 = oy * stride
                x0 = ox * stride
                m = out[p, oy, ox]
                count = 0
                for i in range(K):
                    for j in range(K):
                        count += x[p, y0 + i, x0 + j] == m
                share = r / count
                for i in range(K):
                    for j in range(K):
                        if x[p, y0 + i, x0 + j] == m:
                            res[p, y0 + i, x0 + j] += share


@njit(cache=True, nogil=True, boundscheck=False)
def _maxpool_split_tiled(x, out, R, K, res, c_lo, c_hi, b_lo, b_hi):
    """Ties-split routing for non-overlapping windows (stride = K), planes [b_lo, b_hi): every
    input a window covers is written exactly once, res = R / #ties where x equals the window
    maximum ``out``, else 0. No zeroing, no accumulation, no branches: faster than
    :func:`_maxpool_split_route`. Rows/columns no window covers are left to the caller."""
    Ho, Wo = R.shape[1], R.shape[2]
    one, zero = res.dtype.type(1), res.dtype.type(0)
    if K == 2:  # the common pool, unrolled (the generic loops below do not vectorise)
        for p in range(b_lo, b_hi):
            for oy in range(Ho):
                for ox in range(Wo):
                    m = out[p, oy, ox]
                    y, x0 = 2 * oy, 2 * ox
                    v0 = one if x[p, y, x0] == m else zero
                    v1 = one if x[p, y, x0 + 1] == m else zero
                    v2 = one if x[p, y + 1, x0] == m else zero
                    v3 = one if x[p, y + 1, x0 + 1] == m else zero
                    share = R[p, oy, ox] / (v0 + v1 + v2 + v3)
                    res[p, y, x0] = share * v0
                    res[p, y, x0 + 1] = share * v1
                    res[p, y + 1, x0] = share * v2
                    res[p, y + 1, x0 + 1] = share * v3
        return
    for p in range(b_lo, b_hi):
        for oy in range(Ho):
            for ox in range(Wo):
                m = out[p, oy, ox]
                count = 0
                for i in range(K):
                    for j in range(K):
                        count += x[p, oy * K + i, ox * K + j] == m
                share = R[p, oy, ox] / res.dtype.type(count)
                for i in range(K):
                    for j in range(K):
                        res[p, oy * K + i, ox * K + j] = share * (x[p, oy * K + i, ox * K + j] == m)




def maxpool_relevance(a, out, R, K, stride):
    """Winner-take-all relevance with ties split evenly: R_in[j] = sum over windows k
    holding j of R[k] [a_j == out_k] / #ties_k. a: (N, C, H, W); out: the pool's output
    (N, C, Ho, Wo); R like out."""
    N, C, H, W = a.shape
    Ho, Wo = R.shape[2:]
    planes = lambda v: np.ascontiguousarray(v).reshape((N * C,) + v.shape[2:])
    if stride != K:  # overlapping windows (or gaps): accumulate
        res = np.zeros((N * C, H, W), R.dtype)
        _split(_maxpool_split_route, (planes(a), planes(out), planes(R), K, stride, res), 1, N * C, res.size)
        return res.reshape(a.shape)
    res = np.empty((N * C, H, W), R.dtype)  # every input a window covers is written once
    if H > Ho * K or W > Wo * K:
        res[:, Ho * K:] = 0
        res[:, :, Wo * K:] = 0
    _split(_maxpool_split_tiled, (planes(a), planes(out), planes(R), K, res), 1, N * C, res.size)
    return res.reshape(a.shape)


def maxpool_relevance_ref(a, out, R, K, stride):
    """NumPy twin of :func:`maxpool_relevance`."""
    cols = windows(a, K, stride)
    ties = cols == out.reshape(1, -1)
    share = R.reshape(1, -1) / ties.sum(axis=0, keepdims=True)
    return unwindows(ties * share, K, stride, 0, a.shape)
