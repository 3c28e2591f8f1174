"""Similarity measures of the sanity checks, against scipy.stats.spearmanr, a loop-by-loop SSIM
written from Wang et al.'s formula with ndimage's mirrored borders, and hand-counted top-k sets.
(skimage's own SSIM is matched through Quantus in test_sanity_quantus.)"""
import numpy as np
import pytest
from scipy.stats import spearmanr

from minilrp import MinilrpError
from minilrp.evaluate import similarity as sim


def test_spearman_equals_scipy_with_ties(rng):
    a = np.round(rng.standard_normal((6, 9, 9)), 1)  # many ties
    b = a + rng.standard_normal((6, 9, 9))
    a[0, :4] = 0.0
    b[1] = np.round(b[1])
    expected = [spearmanr(u.ravel(), v.ravel())[0] for u, v in zip(a, b)]
    np.testing.assert_allclose(sim.spearman(a, b), expected, atol=1e-13)
    np.testing.assert_allclose(sim.spearman(a, a), 1.0)
    np.testing.assert_allclose(sim.spearman(a, -a), -1.0)
    np.testing.assert_allclose(sim.spearman(a, np.exp(a)), 1.0)  # ranks only
    assert np.isnan(sim.spearman(np.zeros((1, 4, 4)), rng.standard_normal((1, 4, 4))))[0]


def ssim_loops(a, b, win, R, k1=0.01, k2=0.03):
    """SSIM of two 2-D maps, window by window: mirrored borders (ndimage "reflect" = numpy
    "symmetric"), sample (co)variances over each win x win window, mean over the positions at
    least (win - 1) / 2 from the border."""
    p = win // 2
    A, B = np.pad(a, p, mode="symmetric"), np.pad(b, p, mode="symmetric")
    C1, C2 = (k1 * R) ** 2, (k2 * R) ** 2
    vals = []
    for i in range(p, a.shape[0] - p):
        for j in range(p, a.shape[1] - p):
            u, v = A[i:i + win, j:j + win].ravel(), B[i:i + win, j:j + win].ravel()
            cov = np.cov(u, v, ddof=1)
            vals.append((2 * u.mean() * v.mean() + C1) * (2 * cov[0, 1] + C2)
                        / ((u.mean() ** 2 + v.mean() ** 2 + C1) * (cov[0, 0] + cov[1, 1] + C2)))
    return np.mean(vals)


def test_ssim_equals_the_window_formula(rng):
    a = rng.uniform(0, 1, (3, 12, 10))
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1)
    for win in (3, 7):
        R = np.maximum(a.max((1, 2)), b.max((1, 2))) - np.minimum(a.min((1, 2)), b.min((1, 2)))
        expected = [ssim_loops(u, v, win, r) for u, v, r in zip(a, b, R)]
        np.testing.assert_allclose(sim.ssim(a, b, win_size=win), expected, rtol=1e-10)
        np.testing.assert_allclose(sim.ssim(a, b, win_size=win, data_range=1.0),
                                   [ssim_loops(u, v, win, 1.0) for u, v in zip(a, b)], rtol=1e-10)
    # a 7 x 7 map has one window, the whole map: the global formula
    u, v = a[0, :7, :7], b[0, :7, :7]
    cov = np.cov(u.ravel(), v.ravel())
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    glob = ((2 * u.mean() * v.mean() + C1) * (2 * cov[0, 1] + C2)
            / ((u.mean() ** 2 + v.mean() ** 2 + C1) * (cov[0, 0] + cov[1, 1] + C2)))
    np.testing.assert_allclose(sim.ssim(u[None], v[None], data_range=1.0), [glob], rtol=1e-12)
    np.testing.assert_allclose(sim.ssim(a, a), 1.0)
    np.testing.assert_allclose(sim.ssim(np.zeros((2, 7, 7)), np.zeros((2, 7, 7))), 1.0)  # R = 0


def test_topk_intersection_by_hand():
    a = np.array([[5.0, 4, 3, 2, 1, 0]])
    b = np.array([[0.0, 4, 5, 1, 2, 3]])
    # top 2: a {0, 1}, b {2, 1} -> 1/2; top 3: a {0, 1, 2}, b {2, 1, 5} -> 2/3
    np.testing.assert_allclose(sim.topk_intersection(a, b, 2), [0.5])
    np.testing.assert_allclose(sim.topk_intersection(a, b, 3), [2 / 3])
    np.testing.assert_allclose(sim.topk_intersection(a, b, 0.5), [2 / 3])  # a share: round(3)
    np.testing.assert_allclose(sim.topk_intersection(a, a, 1), [1.0])
    # ties are ranked by position: deterministic
    np.testing.assert_allclose(sim.topk_intersection(np.zeros((1, 6)), np.zeros((1, 6)), 2), [1.0])


def test_compare_measures_and_normalise(rng):
    a = rng.standard_normal((4, 10, 10))
    out = sim.compare(a, 3 * a)
    assert set(out) == set(sim.MEASURES)
    for v in out.values():
        np.testing.assert_allclose(v, 1.0)
    out = sim.compare(a, -a)  # the sign flips: signed rank correlation -1, |.| unchanged
    np.testing.assert_allclose(out["spearman"], -1.0)
    np.testing.assert_allclose(out["spearman_abs"], 1.0)
    n = sim.normalise(np.stack([a[0], np.zeros_like(a[0])]))
    assert np.abs(n[0]).max() == 1 and not n[1].any()


def test_bad_input_is_named():
    with pytest.raises(MinilrpError, match="same shape"):
        sim.spearman(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(MinilrpError, match="NaN"):
        sim.ssim(np.full((1, 8, 8), np.nan), np.zeros((1, 8, 8)))
    with pytest.raises(MinilrpError, match="window"):
        sim.ssim(np.zeros((1, 5, 5)), np.zeros((1, 5, 5)))
    with pytest.raises(MinilrpError, match="odd"):
        sim.ssim(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), win_size=4)
    with pytest.raises(MinilrpError, match="top-k"):
        sim.topk_intersection(np.zeros((1, 4)), np.zeros((1, 4)), 0)
    with pytest.raises(MinilrpError, match="top-k"):
        sim.topk_intersection(np.zeros((1, 4)), np.zeros((1, 4)), 1.5)
