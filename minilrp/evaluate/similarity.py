"""How similar are two heatmaps? The measures of the sanity checks (Adebayo et al. 2018).

Every function compares two batches of maps image by image and returns one value per image:

    a, b: (N, ...) maps of the same shape  ->  (N,) float64

    spearman(a, b)             rank correlation of the N pairs of flattened maps (ties share their
                               average rank, as scipy.stats.spearmanr); NaN where a map is constant
    ssim(a, b)                 structural similarity (Wang et al. 2004) with skimage's defaults: a
                               7-wide uniform window over every map axis, sample covariance,
                               K1 = 0.01, K2 = 0.03, the window's border cropped
    topk_intersection(a, b)    share of a's k largest entries that are among b's k largest

Signs: the measures compare the maps as given. The sanity checks compare signed maps and their
absolute values (Adebayo et al. report Spearman "with and without absolute values"):
:func:`compare` computes all four of :data:`MEASURES` at once.
"""
from __future__ import annotations

import numpy as np

from ..errors import MinilrpError
from .perturbation import rank_normalise

MEASURES = ("spearman", "spearman_abs", "ssim", "topk")
LABELS = {"spearman": "Spearman", "spearman_abs": "Spearman |.|", "ssim": "SSIM |.|",
          "topk": "top-k |.|"}
DEFAULT_TOPK = 0.1  # share of the pixels in the top-k intersection


def _pair(a, b, what="maps"):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim < 2 or a.shape[0] == 0:
        raise MinilrpError(f"{what} must be two batches (N, ...) of the same shape, got "
                           f"{a.shape} and {b.shape}")
    if a.dtype.kind not in "fiu" or b.dtype.kind not in "fiu":
        raise MinilrpError(f"{what} must be numeric, got {a.dtype} and {b.dtype}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MinilrpError(f"{what} contain NaN or inf")
    return a, b


def spearman(a, b) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps: the Pearson correlation of their
    average ranks (equal values share the mean of their positions). (N, ...) x 2 -> (N,);
    NaN where a map is constant (its ranks carry no order)."""
    a, b = _pair(a, b)
    N = len(a)
    ra = rank_normalise(a.reshape(N, -1))
    rb = rank_normalise(b.reshape(N, -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def ssim(a, b, win_size=7, data_range=None, k1=0.01, k2=0.03) -> np.ndarray:
    """Mean structural similarity of each pair of maps, skimage's ``structural_similarity``
    (uniform window, ``use_sample_covariance=True``) written out:

        mu  = window means,  v = NP/(NP-1) (window mean of squares - mu^2)  (NP = win_size^d)
        S   = (2 mu_a mu_b + C1)(2 v_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(v_a + v_b + C2)),
        C1  = (k1 R)^2, C2 = (k2 R)^2, averaged over the positions at least (win_size-1)/2
              from the border (filters mirror the map at its edges: ndimage's "reflect").

    a, b: (N, ...) maps with d = a.ndim - 1 axes, each at least win_size long. data_range R:
    None = max - min over both maps of the pair (what Quantus passes); a number for all pairs.
    Two constant equal maps (R = 0) have SSIM 1 (R is taken as 1 there)."""
    from scipy.ndimage import uniform_filter
    a, b = _pair(a, b)
    if isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer)) or win_size < 1 \
            or win_size % 2 == 0:
        raise MinilrpError(f"SSIM's win_size must be an odd positive int, got {win_size!r}")
    if min(a.shape[1:]) < win_size:
        raise MinilrpError(f"SSIM's window ({win_size}) is larger than the maps {a.shape[1:]}")
    d = a.ndim - 1
    if data_range is None:
        R = np.maximum(a.reshape(len(a), -1).max(1), b.reshape(len(b), -1).max(1)) \
            - np.minimum(a.reshape(len(a), -1).min(1), b.reshape(len(b), -1).min(1))
    else:
        R = np.full(len(a), float(data_range))
        if not R[0] > 0:
            raise MinilrpError(f"SSIM's data_range must be positive, got {data_range!r}")
    R = np.where(R > 0, R, 1.0).reshape((-1,) + (1,) * d)
    size = (1,) + (int(win_size),) * d  # no filtering across the batch axis

    def mean(v):
        return uniform_filter(v, size=size)

    NP = win_size ** d
    cov = NP / (NP - 1) if NP > 1 else 1.0
    ua, ub = mean(a), mean(b)
    va = cov * (mean(a * a) - ua * ua)
    vb = cov * (mean(b * b) - ub * ub)
    vab = cov * (mean(a * b) - ua * ub)
    C1, C2 = (k1 * R) ** 2, (k2 * R) ** 2
    S = (2 * ua * ub + C1) * (2 * vab + C2) / ((ua * ua + ub * ub + C1) * (va + vb + C2))
    pad = (win_size - 1) // 2
    inner = (slice(None),) + (slice(pad, -pad if pad else None),) * d
    return S[inner].reshape(len(a), -1).mean(axis=1)


def _k(k, n):
    if isinstance(k, float) and not isinstance(k, bool):
        if not 0 < k <= 1:
            raise MinilrpError(f"top-k as a share of the pixels must be in (0, 1], got {k}")
        return max(1, int(round(k * n)))
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= n:
        return int(k)
    raise MinilrpError(f"top-k needs an int in 1..{n} or a share in (0, 1], got {k!r}")


def topk_intersection(a, b, k=DEFAULT_TOPK) -> np.ndarray:
    """|top_k(a) & top_k(b)| / k per pair of maps, top_k = the indices of the k largest entries
    (Ghorbani et al. 2019's measure of explanation change); equal values are ranked by position,
    so the result is deterministic. k: an int, or a share of the entries (default 0.1).
    -> (N,) in [0, 1]."""
    a, b = _pair(a, b)
    N = len(a)
    a, b = a.reshape(N, -1), b.reshape(N, -1)
    k = _k(k, a.shape[1])
    top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
    in_b = np.zeros(a.shape, bool)
    np.put_along_axis(in_b, top_b, True, axis=1)
    return np.take_along_axis(in_b, top_a, axis=1).mean(axis=1)


def normalise(maps) -> np.ndarray:
    """Each map divided by its largest |value| (all-zero maps stay zero): SSIM then compares
    shapes on one scale [-1, 1] whatever the method's units."""
    m = np.asarray(maps, dtype=np.float64)
    s = np.abs(m).reshape(len(m), -1).max(axis=1).reshape((-1,) + (1,) * (m.ndim - 1))
    return m / np.where(s > 0, s, 1.0)


def compare(a, b, k=DEFAULT_TOPK) -> dict:
    """All :data:`MEASURES` of each pair of maps (N, H, W): Spearman of the signed maps and of
    their absolute values, SSIM of the absolute values each scaled to [0, 1] by its maximum
    (:func:`normalise`, data range 1), and the top-k intersection of the absolute values.
    -> {measure: (N,)}."""
    a, b = _pair(a, b)
    aa, ab = np.abs(a), np.abs(b)
    return {"spearman": spearman(a, b), "spearman_abs": spearman(aa, ab),
            "ssim": ssim(normalise(aa), normalise(ab), data_range=1.0),
            "topk": topk_intersection(aa, ab, k)}
