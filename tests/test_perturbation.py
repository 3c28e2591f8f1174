"""Region perturbation: regions, orderings, fills, cumulative batched curves and AOPC, checked
against hand-made curves, a linear model's analytic curve, an independent step-by-step loop,
and the bundled CNN."""
import subprocess
import sys

import numpy as np
import pytest

import minilrp
from minilrp import Dense, Flatten, MinilrpError, Network
from minilrp import perturbation as P
from minilrp import sensitivity as S
from test_lrp import images, relu_net
from test_network import small_net


def linear_net(rng, shape=(1, 8, 8), n_classes=3):
    n = int(np.prod(shape))
    w = rng.standard_normal((n_classes, n))
    b = rng.standard_normal(n_classes)
    net = Network([Flatten(), Dense(n, n_classes, weight=w, bias=b)], shape).astype(np.float64)
    return net, w, b


# ------------------------------------------------------------------------------ results

def test_aopc_abpc_on_hand_made_curves():
    falling = np.array([[4.0, 3.0, 2.0, 1.0, 0.0]])
    rising = np.array([[4.0, 5.0, 4.0, 6.0, 6.0]])
    # 1/(L+1) sum_k (f0 - fk): (0+1+2+3+4)/5 = 2; (0-1-0-2-2)/5 = -1
    np.testing.assert_allclose(P.aopc(falling), [2.0])
    np.testing.assert_allclose(P.aopc(rising), [-1.0])
    np.testing.assert_allclose(P.aopc(np.vstack([falling, rising])), [2.0, -1.0])
    np.testing.assert_allclose(P.abpc(falling, rising), P.aopc(falling) - P.aopc(rising))
    np.testing.assert_allclose(P.abpc(falling, rising), [(0 + 2 + 2 + 5 + 6) / 5])
    np.testing.assert_allclose(P.relative_to(rising, falling), rising - falling)
    assert P.aopc(np.ones((3, 1))).tolist() == [0, 0, 0]  # a curve of only f(x_0)


def test_summarize_standard_error_and_bootstrap():
    v = np.array([1.0, 2.0, 3.0, 4.0])
    s = P.summarize(v)
    se = np.std(v, ddof=1) / 2
    assert s["mean"] == 2.5 and s["n"] == 4
    np.testing.assert_allclose(s["se"], se)
    np.testing.assert_allclose([s["low"], s["high"]], [2.5 - 1.959964 * se, 2.5 + 1.959964 * se], rtol=1e-6)
    b = P.summarize(v, ci="bootstrap", seed=3)
    assert b == P.summarize(v, ci="bootstrap", seed=3)
    assert 1.0 <= b["low"] < 2.5 < b["high"] <= 4.0
    assert np.isnan(P.summarize([1.0])["se"])


# ------------------------------------------------------------------------------ regions

def test_grid_exact_and_remainders():
    r = P.grid((1, 28, 28))
    assert r.size == 4 and r.n_regions == 49 and r.labels.shape == (28, 28)
    assert np.array_equal(np.bincount(r.labels.ravel()), np.full(49, 16))
    assert r.labels[5, 9] == 1 * 7 + 2
    assert P.grid((3, 224, 224)).size == 9
    part = P.grid((9, 10), 4)  # 3 x 3 regions, the last row 1 px high, the last column 2 px wide
    assert part.n_regions == 9 and (part.labels >= 0).all()
    assert np.array_equal(np.bincount(part.labels.ravel()), [16, 16, 8, 16, 16, 8, 4, 4, 2])
    drop = P.grid((9, 10), 4, remainder="drop")
    assert drop.n_regions == 4 and (drop.labels[8] == -1).all() and (drop.labels[:, 8:] == -1).all()
    assert np.array_equal(np.bincount(drop.labels[drop.labels >= 0]), np.full(4, 16))


def test_region_scores_sum_channels_then_regions(rng):
    h = rng.standard_normal((3, 2, 9, 10))
    regions = P.grid((9, 10), 4)
    s = P.region_scores(h, regions)
    m = h.sum(1)
    for r in range(regions.n_regions):
        np.testing.assert_allclose(s[:, r], m[:, regions.labels == r].sum(1))
    np.testing.assert_allclose(P.region_scores(m, regions), s)
    painted = regions.paint(s)
    assert painted.shape == (3, 9, 10) and painted[1, 0, 0] == s[1, 0]


def test_sliding_windows_pick_greedy_non_overlapping(rng):
    h = rng.random((2, 12, 12))
    h[0, 2:5, 6:9] += 10  # a hot 3 x 3 spot
    reg = P.sliding_windows(h, 3, "morf")
    assert reg.labels.shape == (2, 12, 12) and reg.n_regions >= 1
    assert np.array_equal(np.argwhere(reg.labels[0] == 0).min(0), [2, 6])  # first pick: the spot
    for n in range(2):
        counts = np.bincount(reg.labels[n][reg.labels[n] >= 0], minlength=reg.n_regions)
        assert np.all(counts == 9)  # full, non-overlapping windows
    scores = P.region_scores(h, reg)
    assert np.all(np.diff(scores[0]) <= 1e-12)  # greedy picks come in non-increasing order
    lerf = P.sliding_windows(h, 3, "lerf")
    assert np.all(np.diff(P.region_scores(h, lerf)[0]) >= -1e-12)


# ------------------------------------------------------------------------------ orderings

def test_morf_lerf_random_orders():
    s = np.array([[0.5, -2.0, 3.0, 0.0, 1.0]])
    assert P.order_regions(s, "morf").tolist() == [[2, 4, 0, 3, 1]]
    assert P.order_regions(s, "lerf").tolist() == [[1, 3, 0, 4, 2]]
    r = P.random_order(4, 5, seed=1)
    assert all(sorted(row) == list(range(5)) for row in r.tolist())
    assert np.array_equal(r, P.random_order(4, 5, seed=1))
    assert np.array_equal(r[:2], P.random_order(2, 5, seed=1))  # per-image streams
    assert not np.array_equal(r, P.random_order(4, 5, seed=2))


def test_exact_ties_are_broken_by_a_seeded_permutation_not_by_position():
    s = np.zeros((200, 10))
    s[:, 7] = 1.0
    o = P.order_regions(s, "morf", seed=0)
    assert (o[:, 0] == 7).all()
    # the tied regions do not come in index order: every region leads the ties sometimes
    assert len(set(o[:, 1].tolist())) == 9
    assert np.array_equal(o, P.order_regions(s, "morf", seed=0))


def test_rank_normalise_matches_scipy_average_ranks():
    from scipy.stats import rankdata
    rng = np.random.default_rng(3)
    s = rng.integers(-3, 4, size=(50, 17)).astype(float)  # many ties
    s[0] = 0.0                                               # one all-tied row
    expected = (rankdata(s, axis=1, method="average") - 1) / 16
    np.testing.assert_allclose(P.rank_normalise(s), expected, rtol=0, atol=1e-15)
    assert np.all(P.rank_normalise(s[:0]).shape == (0, 17))


def test_combined_orderings_follow_their_definitions():
    #            region: 0     1     2     3     4     5
    sa = np.array([[0.9, 0.1, 0.5, 0.2, 0.8, 0.3]])
    lrp = np.array([[2.0, -0.2, 0.5, -3.0, -1.0, 0.1]])
    r_sa, r_lrp = P.rank_normalise(sa), P.rank_normalise(lrp)
    np.testing.assert_allclose(r_sa, [[1.0, 0.0, 0.6, 0.2, 0.8, 0.4]])
    np.testing.assert_allclose(r_lrp, [[1.0, 0.4, 0.8, 0.0, 0.2, 0.6]])
    # (a) outside LRP's top half (regions 1, 3, 4) by SA descending, then LRP's top half ascending
    assert P.combined_order(sa, lrp, "sa_not_lrp").tolist() == [[4, 3, 1, 5, 2, 0]]
    # (b) LRP ascending
    assert P.combined_order(sa, lrp, "lrp_negative").tolist() == [[3, 4, 1, 5, 2, 0]]
    # (c) negative regions 1, 3, 4 by r(-LRP) * r_SA: 1: 0.6*0, 3: 1*0.2, 4: 0.8*0.8 -> 4, 3, 1;
    #     then the rest by ascending LRP
    assert P.combined_order(sa, lrp, "counter_evidence").tolist() == [[4, 3, 1, 5, 2, 0]]
    # (d) max(r_SA, r_LRP): 0:1, 1:0.4, 2:0.8, 3:0.2, 4:0.8, 5:0.6; tie 2/4 by the sum (1.4 vs 1.0)
    assert P.combined_order(sa, lrp, "consensus_irrelevant").tolist() == [[3, 1, 5, 4, 2, 0]]
    regions = P.grid((2, 3), 1)
    d = P.disagreement(sa, lrp, regions)
    np.testing.assert_allclose(d.reshape(1, -1), r_sa - r_lrp)


# ------------------------------------------------------------------------------ fills

ALL_FILLS = ["uniform", "constant", "constant:min", "constant:mean", "constant:background",
             "constant:0.25", "blur", "blur:0.7", "road", "road:0.1"]


@pytest.mark.parametrize("name", ALL_FILLS)
def test_fills_touch_only_the_mask_and_stay_in_range(name, rng):
    net = small_net(rng)  # 2 channels, 9 x 10, input range given per channel below
    net.input_low, net.input_high = np.array([-1.0, 0.0]), np.array([1.0, 3.0])
    x = np.stack([rng.uniform(-1, 1, (4, 9, 10)), rng.uniform(0, 3, (4, 9, 10))], axis=1)
    pert = P.get_perturbation(name).resolve(net, x)
    mask = rng.random((4, 9, 10)) < 0.4
    mask[3] = True  # a fully distorted image
    fill = np.stack([pert.draw(x[n], np.random.default_rng(n)) for n in range(4)])
    out = pert.apply(x, fill, mask)
    assert out.shape == x.shape and out.dtype == x.dtype
    keep = np.broadcast_to(~mask[:, None], x.shape)
    assert np.array_equal(out[keep], x[keep])
    low = np.broadcast_to(net.input_low.reshape(1, 2, 1, 1), x.shape)
    high = np.broadcast_to(net.input_high.reshape(1, 2, 1, 1), x.shape)
    inside = ~keep
    assert np.all(out[inside] >= low[inside]) and np.all(out[inside] <= high[inside])
    if name == "uniform":  # really spread over the range, per channel
        assert out[3, 1].max() > 2 and out[3, 0].min() < -0.5


def test_constant_values_are_the_ones_stated(rng):
    net = small_net(rng)
    net.input_low, net.input_high = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    x = rng.uniform(-0.5, 0.5, (5, 2, 9, 10))
    x[:, :, 0, :] = x[:, :, -1, :] = x[:, :, :, 0] = x[:, :, :, -1] = -0.75  # border = background
    one = np.random.default_rng(0)
    assert np.all(P.get_perturbation("constant").resolve(net, x).draw(x[0], one) == 0)
    np.testing.assert_allclose(P.get_perturbation("constant:background").resolve(net, x).draw(x[0], one), -0.75)
    np.testing.assert_allclose(P.get_perturbation("constant:mean").resolve(net, x).draw(x[0], one)[:, 0, 0],
                               x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(P.get_perturbation("constant:min").resolve(net, x).draw(x[2], one)[:, 3, 3],
                               x[2].min(axis=(1, 2)))


def test_road_imputation_is_the_neighbour_mean_and_keeps_a_linear_ramp(rng):
    net = relu_net(rng)
    i, j = np.mgrid[:8, :8]
    x = ((i + 2 * j) / 21.0)[None, None]  # a linear ramp in [0, 1]
    road = P.NoisyLinearImputation(noise=0.0).resolve(net, x)
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 2:6, 3:6] = True
    out = road.apply(x, np.zeros_like(x), mask)
    np.testing.assert_allclose(out, x, atol=1e-12)  # the 8-neighbour mean reproduces linear ramps
    y = rng.random((1, 1, 8, 8))
    one = np.zeros((1, 8, 8), bool)
    one[0, 4, 4] = True
    w = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12
    np.testing.assert_allclose(road.apply(y, np.zeros_like(y), one)[0, 0, 4, 4], (w * y[0, 0, 3:6, 3:6]).sum())


# ------------------------------------------------------------------------------ curves

def test_linear_model_morf_order_and_curve_are_analytic(rng):
    net, w, b = linear_net(rng)
    x = images(rng, 5)
    t = np.array([0, 1, 2, 0, 1])
    h = S.gradient_x_input(net, x, target=t)
    np.testing.assert_allclose(h.reshape(5, -1), w[t] * x.reshape(5, -1))
    regions = P.grid((8, 8), 2)
    contrib = np.stack([[(w[t[n]] * x[n].ravel())[regions.labels.ravel() == r].sum() for r in range(16)]
                        for n in range(5)])
    order = P.order_regions(P.region_scores(h, regions), "morf")
    assert np.array_equal(order, np.argsort(-contrib, axis=1, kind="stable"))
    curves = P.perturbation_curves(net, x, regions, order, "constant:0", target=t)
    f0 = (w[t] * x.reshape(5, -1)).sum(1) + b[t]
    expected = f0[:, None] - np.concatenate([np.zeros((5, 1)), np.cumsum(-np.sort(-contrib, axis=1), axis=1)], axis=1)
    np.testing.assert_allclose(curves, expected, rtol=1e-12, atol=1e-12)
    # MoRF falls at least as fast as any other order on a linear model: its AOPC is the largest
    other = P.perturbation_curves(net, x, regions, P.random_order(5, 16), "constant:0", target=t)
    assert np.all(P.aopc(curves) >= P.aopc(other) - 1e-12)
    # the oracle of single regions is the regions' contributions exactly
    np.testing.assert_allclose(P.oracle_scores(net, x, regions, "constant:0", target=t), contrib, atol=1e-12)
    # the softmax probability on request
    probs = P.perturbation_curves(net, x, regions, order, "constant:0", target=t, score="probability")
    np.testing.assert_allclose(probs[:, 0], net.predict(x)[0][np.arange(5), t])


def test_linear_model_uniform_noise_curve(rng):
    net, w, b = linear_net(rng)
    x = images(rng, 3)
    regions = P.grid((8, 8), 4)
    order = P.random_order(3, 4, seed=5)
    curves = P.perturbation_curves(net, x, regions, order, "uniform", seed=7)
    t = net.forward(x).argmax(1)
    fill = P.perturb(net, x, regions, order, 4, "uniform", seed=7)  # every region distorted = the fill
    assert np.all((fill >= 0) & (fill <= 1))
    for k in range(5):
        mask = np.stack([np.isin(regions.labels, order[n, :k]) for n in range(3)])
        xk = np.where(mask[:, None], fill, x)
        np.testing.assert_allclose(curves[:, k], (w[t] * xk.reshape(3, -1)).sum(1) + b[t], rtol=1e-12)


@pytest.mark.parametrize("name", ["uniform", "constant:background", "blur"])
def test_batched_equals_step_by_step(name, rng):
    net = small_net(rng)
    x = rng.uniform(0, 1, (3, 2, 9, 10))
    regions = P.grid((9, 10), 3)
    order = P.random_order(3, regions.n_regions, seed=2)
    curves = P.perturbation_curves(net, x, regions, order, name, seed=4, batch_size=64)
    # independently: distort one region per step, in place, forward each step alone
    fill = P.perturb(net, x, regions, order, regions.n_regions, name, seed=4)
    t = net.forward(x).argmax(1)
    xk = x.copy()
    loop = [net.forward(xk)[np.arange(3), t]]
    for k in range(regions.n_regions):
        for n in range(3):
            m = regions.labels == order[n, k]
            xk[n][:, m] = fill[n][:, m]
        loop.append(net.forward(xk)[np.arange(3), t])
    np.testing.assert_allclose(curves, np.stack(loop, 1), rtol=1e-10, atol=1e-12)
    for bs in (1, 7, 1000):  # the batch size changes nothing but memory
        np.testing.assert_allclose(P.perturbation_curves(net, x, regions, order, name, seed=4, batch_size=bs),
                                   curves, rtol=1e-10, atol=1e-12)


def test_road_curves_batch_independent(rng):
    net = relu_net(rng)
    x = images(rng, 3)
    regions = P.grid((8, 8), 2)
    order = P.random_order(3, 16, seed=1)
    a = P.perturbation_curves(net, x, regions, order, "road", seed=1, batch_size=5)
    np.testing.assert_allclose(a, P.perturbation_curves(net, x, regions, order, "road", seed=1), rtol=1e-10)
    assert a.shape == (3, 17) and np.all(np.isfinite(a))


def test_seed_gives_bit_identical_results(rng):
    net = relu_net(rng)
    x = images(rng, 4)
    h = S.sa(net, x)
    kw = dict(region_size=2, seed=11, n_draws=3)
    a = P.heatmap_curves(net, x, h, "morf", "uniform", **kw)
    assert np.array_equal(a, P.heatmap_curves(net, x, h, "morf", "uniform", **kw))
    assert not np.array_equal(a, P.heatmap_curves(net, x, h, "morf", "uniform", region_size=2, seed=12, n_draws=3))
    r = P.heatmap_curves(net, x, h, "random", "uniform", **kw)
    assert np.array_equal(r, P.heatmap_curves(net, x, h, "random", "uniform", **kw))
    regions = P.grid((8, 8), 2)
    o = P.oracle_scores(net, x, regions, "uniform", n_draws=2, seed=3)
    assert np.array_equal(o, P.oracle_scores(net, x, regions, "uniform", n_draws=2, seed=3))


def test_several_draws_are_averaged(rng):
    net = relu_net(rng)
    x = images(rng, 2)
    regions = P.grid((8, 8), 4)
    order = P.random_order(2, 4)
    t = net.forward(x).argmax(1)
    per_draw = []
    for d in range(3):
        fill = P.perturb(net, x, regions, order, 4, "uniform", seed=9, draw=d)
        steps = []
        for k in range(5):
            mask = np.stack([np.isin(regions.labels, order[n, :k]) for n in range(2)])
            steps.append(net.forward(np.where(mask[:, None], fill, x))[np.arange(2), t])
        per_draw.append(steps)
    expected = np.mean(np.array(per_draw), axis=0).T
    np.testing.assert_allclose(P.perturbation_curves(net, x, regions, order, "uniform", seed=9, n_draws=3),
                               expected, rtol=1e-10)


def test_steps_cut_the_curve(rng):
    net = relu_net(rng)
    x = images(rng, 2)
    regions = P.grid((8, 8), 2)
    order = P.random_order(2, 16)
    full = P.perturbation_curves(net, x, regions, order, "constant")
    np.testing.assert_allclose(P.perturbation_curves(net, x, regions, order, "constant", steps=5), full[:, :6])


def test_sliding_window_regions_give_curves(rng):
    net = relu_net(rng)
    x = images(rng, 3)
    h = S.sa(net, x)
    reg = P.sliding_windows(h, 3, "morf")
    order = np.tile(np.arange(reg.n_regions), (3, 1))
    c = P.perturbation_curves(net, x, reg, order, "constant")
    assert c.shape == (3, reg.n_regions + 1) and np.all(np.isfinite(c))
    last = P.perturb(net, x, reg, order, reg.n_regions, "constant")
    untouched = reg.labels < 0
    assert np.array_equal(last[:, 0][untouched], x[:, 0][untouched])  # uncovered pixels stay


# ------------------------------------------------------------------------------ bundled CNN

@pytest.mark.slow
def test_random_curve_lies_between_morf_and_lerf_on_the_bundled_cnn():
    from minilrp import available_models, load_model, load_samples
    if "fmnist-cnn" not in available_models():
        pytest.skip("the bundled fmnist-cnn weights are not in this checkout")
    net = load_model("fmnist-cnn")
    images_, _, _ = load_samples()
    x = net.preprocess(images_[:100])
    h = net.relevance(x, "EpsilonPlusFlat")
    regions = P.grid(x.shape[1:])
    scores = P.region_scores(h, regions)
    for fill in ("constant:background", "uniform"):
        curves = {o: P.perturbation_curves(net, x, regions, P.order_regions(scores, o), fill)
                  for o in ("morf", "lerf", "random")}
        a = {o: P.aopc(c).mean() for o, c in curves.items()}
        assert a["morf"] > a["random"] > a["lerf"], (fill, a)
        if fill == "constant:background":  # step by step too (uniform noise: see the experiment)
            mean = {o: c.mean(0) for o, c in curves.items()}
            between = (mean["morf"] <= mean["random"]) & (mean["random"] <= mean["lerf"])
            assert between[1:-1].mean() >= 0.9, between
            assert np.all(mean["morf"][5:-5] < mean["random"][5:-5])
            assert np.all(mean["random"][5:-5] < mean["lerf"][5:-5])


# ------------------------------------------------------------------------------ plots

@pytest.mark.slow
def test_plots_are_figures_without_pyplot(tmp_path):
    code = (
        "import numpy as np, sys\n"
        "from minilrp import perturbation as P, plots\n"
        "rng = np.random.default_rng(0)\n"
        "c = {'a': rng.random((5, 8)), 'b': rng.random((5, 8))}\n"
        "fig = plots.plot_curves(c, relative='b')\n"
        f"fig.savefig(r'{tmp_path / 'c.png'}')\n"
        "regions = P.grid((8, 8), 2)\n"
        "d = P.disagreement(rng.random((2, 16)), rng.standard_normal((2, 16)), regions)\n"
        "assert d.min() >= -1 and d.max() <= 1\n"
        f"plots.plot_disagreement(rng.random((2, 1, 8, 8)), d).savefig(r'{tmp_path / 'd.png'}')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "d.png").stat().st_size > 1000


# ------------------------------------------------------------------------------ bad input

def bad_calls(rng):
    net = relu_net(rng)
    x = images(rng, 2)
    regions = P.grid((8, 8), 2)
    order = P.random_order(2, 16)
    h = S.sa(net, x)
    return {
        "heatmap shape": (lambda: P.heatmap_curves(net, x, h[:, :7], "morf"), "does not match"),
        "heatmap batch": (lambda: P.heatmap_curves(net, x, h[:1], "morf"), "does not match"),
        "scores shape": (lambda: P.region_scores(np.zeros((2, 7, 8)), regions), "does not match"),
        "region size 0": (lambda: P.grid((8, 8), 0), "region size must be >= 1"),
        "region size -3": (lambda: P.grid((8, 8), -3), "region size must be >= 1"),
        "region size too large": (lambda: P.grid((8, 8), 9), "larger than the image"),
        "region size float": (lambda: P.grid((8, 8), 2.5), "must be an int"),
        "region size via heatmap_curves": (lambda: P.heatmap_curves(net, x, h, "morf", region_size=20), "larger than the image"),
        "steps > regions": (lambda: P.perturbation_curves(net, x, regions, order, steps=17), "more steps (17) than regions (16)"),
        "order too long": (lambda: P.perturbation_curves(net, x, P.grid((8, 8), 4), order), "only 4 regions"),
        "order repeats": (lambda: P.perturbation_curves(net, x, regions, np.zeros((2, 3), int)), "twice"),
        "unknown ordering": (lambda: P.order_regions(np.zeros((2, 16)), "mostrelevant"), "unknown ordering"),
        "combined via order_regions": (lambda: P.order_regions(np.zeros((2, 16)), "sa_not_lrp"), "combined_order"),
        "unknown combined": (lambda: P.combined_order(np.zeros((2, 16)), np.zeros((2, 16)), "morf"), "unknown combined"),
        "unknown perturbation": (lambda: P.perturbation_curves(net, x, regions, order, "gaussian"), "unknown perturbation"),
        "bad parameter": (lambda: P.get_perturbation("blur:wide"), "not a number"),
        "constant outside range": (lambda: P.perturbation_curves(net, x, regions, order, "constant:5"), "outside the valid input range"),
        "target out of range": (lambda: P.perturbation_curves(net, x, regions, order, target=3), "out of range"),
        "negative target": (lambda: P.oracle_scores(net, x, regions, target=-1), "out of range"),
        "score name": (lambda: P.perturbation_curves(net, x, regions, order, score="prob"), "score must be"),
        "seed": (lambda: P.random_order(2, 16, seed=-1), "seed must be"),
        "n_draws": (lambda: P.perturbation_curves(net, x, regions, order, n_draws=0), "n_draws must be >= 1"),
        "regions of other size": (lambda: P.perturbation_curves(net, x, P.grid((9, 9), 3), P.random_order(2, 9)), "do not fit"),
        "nan heatmap": (lambda: P.region_scores(np.full((2, 8, 8), np.nan), regions), "NaN"),
        "scores mismatch": (lambda: P.combined_order(np.zeros((2, 16)), np.zeros((2, 15)), "sa_not_lrp"), "differ in shape"),
        "curves shape": (lambda: P.abpc(np.zeros((2, 5)), np.zeros((2, 4))), "differ in shape"),
        "non-image network": (lambda: P.perturbation_curves(Network([Dense(4, 2)], (4,)), np.zeros((1, 4)), regions, order), "image inputs"),
        "remainder": (lambda: P.grid((8, 8), 3, remainder="pad"), "remainder"),
        "step past order": (lambda: P.perturb(net, x, regions, order, 17), "past the order"),
    }


CASES = list(bad_calls(np.random.default_rng(0)))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises_a_clear_error(case, rng):
    call, message = bad_calls(rng)[case]
    with pytest.raises(MinilrpError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize("model", ["fmnist-cnn", "fmnist-vgg"])
@pytest.mark.parametrize("name", ["constant", "uniform", "road"])
def test_curves_of_the_bundled_models_equal_whole_forwards(model, name):
    """The curves rescore only what each step changes (fast/inference.Scorer); on the bundled
    float32 models every point equals a whole forward of that step's images (perturb), with
    two draws, skipped no-op steps (constant 0 on the background) and chains split in batches."""
    net = minilrp.load_model(model)
    x = net.preprocess(minilrp.load_samples()[0][:5])
    regions = P.grid(x.shape[2:], 4)
    order = P.random_order(5, regions.n_regions, seed=3)
    curves = P.perturbation_curves(net, x, regions, order, name, seed=2, n_draws=2, batch_size=3)
    t = net.forward(x).argmax(1)
    D = 2 if name != "constant" else 1
    want = np.mean([[net.forward(P.perturb(net, x, regions, order, k, name, seed=2, draw=d))[np.arange(5), t]
                     for k in range(regions.n_regions + 1)] for d in range(D)], axis=0).T
    np.testing.assert_allclose(curves, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_the_scorer_keeps_within_the_memory_budget(monkeypatch):
    """The scorer keeps every layer's input for its images: net.memory_budget bounds how many
    it takes at a time (here 2 images' forward), for the curves and the oracle alike, and the
    results stay the same."""
    from minilrp.fast import inference
    net = minilrp.load_model("fmnist-cnn")
    x = net.preprocess(minilrp.load_samples()[0][:5])
    regions = P.grid(x.shape[2:], 7)
    order = P.random_order(5, regions.n_regions, seed=1)
    curves = P.perturbation_curves(net, x, regions, order, "uniform", n_draws=2)
    oracle = P.oracle_scores(net, x, regions, "uniform", n_draws=2)
    kept = []

    class Counting(inference.Scorer):
        def __init__(self, net, x):
            kept.append(len(x))
            super().__init__(net, x)

    monkeypatch.setattr(inference, "Scorer", Counting)
    sizes = [np.prod(s) for s in net.shapes]
    net.memory_budget = 2 * 4 * (sum(sizes) + 2 * max(sizes))  # Network.chunks: 2 images per forward
    scale = 1e-5 * np.abs(curves).max()  # float32, GEMMs of other sizes
    np.testing.assert_allclose(P.perturbation_curves(net, x, regions, order, "uniform", n_draws=2), curves, atol=scale)
    np.testing.assert_allclose(P.oracle_scores(net, x, regions, "uniform", n_draws=2), oracle, atol=scale)
    assert kept and max(kept) <= 2
