"""Sanity checks on tiny networks whose answers are known by construction, and their invariants
(seeding, batch independence, exact compensation, conservation identities)."""
import numpy as np
import pytest

from minilrp import (Composite, Conv2d, Dense, Epsilon, Flatten, MaxPool2d, MinilrpError, Network,
                     ReLU)
from minilrp.evaluate import sanity as S
from minilrp.evaluate.similarity import MEASURES
from test_lrp import images, relu_net


def linear_net(rng, n=64, k=4):
    """f(x) = W x + b: its gradient is a row of W, whatever x is."""
    w, b = rng.standard_normal((k, n)), rng.standard_normal(k)
    return Network([Flatten(), Dense(n, k, weight=w, bias=b)], (1, 8, 8)).astype(np.float64)


def test_randomisation_is_seeded_by_layer_and_leaves_the_original_alone(rng):
    net = relu_net(rng)
    before = [layer.weight.copy() for layer in net.layers if hasattr(layer, "weight") and layer.bias is not None]
    layers = S.parameter_layers(net)
    assert layers == [0, 3, 7, 9]
    a = S.randomized(net, [9], seed=3)
    b = S.randomized(net, [9, 7], seed=3)
    c = S.randomized(net, [9], seed=4)
    np.testing.assert_array_equal(a.layers[9].weight, b.layers[9].weight)  # keyed by layer, not step
    assert not np.array_equal(a.layers[9].weight, c.layers[9].weight)
    np.testing.assert_array_equal(a.layers[7].weight, net.layers[7].weight)  # others untouched
    bound = 1 / np.sqrt(8)  # PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 8
    assert np.abs(a.layers[9].weight).max() <= bound and np.abs(a.layers[9].bias).max() <= bound
    assert np.abs(a.layers[9].weight).max() > 0.5 * bound
    bound0 = 1 / np.sqrt(1 * 3 * 3)  # conv: fan_in = C_in k k
    assert np.abs(S.randomized(net, [0]).layers[0].weight).max() <= bound0
    after = [layer.weight for layer in net.layers if hasattr(layer, "weight") and layer.bias is not None]
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)
    assert S.randomization_steps(net, "cascading") == [(9, (9,)), (7, (9, 7)), (3, (9, 7, 3)), (0, (9, 7, 3, 0))]
    assert S.randomization_steps(net, "independent") == [(9, (9,)), (7, (7,)), (3, (3,)), (0, (0,))]
    with pytest.raises(MinilrpError, match="no weights"):
        S.randomized(net, [1])
    with pytest.raises(MinilrpError, match="order"):
        S.randomization_steps(net, "bottom_up")


def test_the_input_as_a_map_fails_randomisation_and_the_gradient_passes(rng):
    """Known by construction: the input ignores the model (similarity 1 at every step); the
    gradient of a linear model is its weight row, and a re-drawn weight row is independent of
    the original one (rank correlation ~ 0, |rho| < 0.35 with 64 pixels)."""
    net = linear_net(rng)
    x = images(rng, 6)
    r = S.mprt(net, x, ["input", "gradient"], seed=1, keep=2)
    assert r.labels == ["1 Dense 64->4"]
    for s in MEASURES:
        np.testing.assert_array_equal(r.similarity["Input (control)"][s], 1.0)
    t = net.forward(x).argmax(1)
    w_new = S.randomized(net, [1], seed=1).layers[1].weight
    from scipy.stats import spearmanr
    expected = [spearmanr(net.layers[1].weight[k], w_new[k])[0] for k in t]
    np.testing.assert_allclose(r.similarity["Gradient"]["spearman"][0], expected, atol=1e-12)
    assert np.abs(r.similarity["Gradient"]["spearman"]).max() < 0.35
    assert r.maps["Gradient"].shape == (2, 2, 8, 8)
    np.testing.assert_allclose(r.maps["Gradient"][1, 0], w_new[t[0]].reshape(8, 8))
    s = S.interval(r.similarity["Gradient"]["spearman_abs"][0])
    assert S.similarity_verdict(s) == "changed"
    assert S.similarity_verdict(S.interval(r.similarity["Input (control)"]["spearman_abs"][0])) == "unchanged"


def test_mprt_does_not_depend_on_the_chunk_size(rng):
    net = relu_net(rng)
    x = images(rng, 7)
    a = S.mprt(net, x, ["sa", "EpsilonGammaBox"], "independent", seed=2, chunk=3)
    b = S.mprt(net, x, ["sa", "EpsilonGammaBox"], "independent", seed=2, chunk=256)
    for m in a.similarity:  # equal up to the GEMMs' summation order
        for s in MEASURES:
            np.testing.assert_allclose(a.similarity[m][s], b.similarity[m][s], atol=1e-12)
    # the first images give the same numbers whatever else is in the run
    c = S.mprt(net, x[:4], ["sa"], "independent", seed=2)
    np.testing.assert_allclose(c.similarity["SA"]["ssim"], a.similarity["SA"]["ssim"][:, :4], atol=1e-12)


def test_random_logit_classes_and_scores(rng):
    t = rng.integers(0, 10, 500)
    o = S.off_targets(t, 10, seed=5)
    assert np.all(o != t) and o.min() >= 0 and o.max() <= 9
    counts = np.bincount((o - t) % 10, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 30  # every other class is drawn
    np.testing.assert_array_equal(S.off_targets(t[:20], 10, seed=5), o[:20])  # keyed by image
    net = linear_net(rng)
    x = images(rng, 5)
    r = S.random_logit(net, x, ["gradient", "input"], seed=5)
    tt = net.forward(x).argmax(1)
    from scipy.stats import spearmanr
    W = net.layers[1].weight
    expected = [spearmanr(W[a], W[b])[0] for a, b in zip(tt, r["others"])]
    np.testing.assert_allclose(r["similarity"]["Gradient"]["spearman"], expected, atol=1e-12)
    np.testing.assert_array_equal(r["similarity"]["Input (control)"]["spearman"], 1.0)
    with pytest.raises(MinilrpError, match="equals"):
        S.random_logit(net, x, ["gradient"], target=tt, others=tt)


def first_dense_net(rng):
    layers = [Flatten(), Dense(64, 10, weight=rng.standard_normal((10, 64)) * 0.3, bias=rng.standard_normal(10)),
              ReLU(), Dense(10, 3, weight=rng.standard_normal((3, 10)), bias=rng.standard_normal(3))]
    return Network(layers, (1, 8, 8)).astype(np.float64)


@pytest.mark.parametrize("make", [first_dense_net, relu_net])
def test_input_invariance_is_exact_for_the_gradient_and_fails_for_gradient_x_input(make, rng):
    """b' = b - W c makes g(x + c) = f(x) exactly (a padded first conv after its padding is made
    part of the input); the gradient is then the same map, gradient x input changes by exactly
    c * gradient."""
    net = make(rng)
    x = images(rng, 5)
    c = -0.7
    r = S.input_invariance(net, x, ["gradient", "gradient_x_input", "EpsilonGammaBox", "input"], c)
    assert r["padding"] == (1 if make is relu_net else 0)
    assert r["logit_change"].max() < 1e-12
    assert r["difference"]["Gradient"].max() < 1e-12 and r["invariant"]["Gradient"].all()
    g = net.gradient(x)[:, 0]
    expected = np.abs(c * g).reshape(5, -1).max(1) / np.abs(x[:, 0] * g).reshape(5, -1).max(1)
    np.testing.assert_allclose(r["difference"]["Gradient x Input"], expected, rtol=1e-9)
    assert not r["invariant"]["Gradient x Input"].any()
    if make is relu_net:  # z^B on the first conv, bounds moving with the input range: the
        # numerator x w - l w+ - h w- is unchanged
        assert r["difference"]["LRP EpsilonGammaBox"].max() < 1e-9
    else:  # EpsilonGammaBox puts z^B on the first *conv*: an MLP's first layer gets epsilon
        assert r["difference"]["LRP EpsilonGammaBox"].min() > 1e-3
    np.testing.assert_allclose(r["difference"]["Input (control)"], np.abs(c) / np.abs(x).reshape(5, -1).max(1))


def test_shifted_and_padded_networks_compute_the_same_function(rng):
    net = relu_net(rng)
    x = images(rng, 3)
    padded, p = S.explicit_padding(net)
    assert p == 1 and padded.input_shape == (1, 10, 10) and padded.layers[0].padding == 0
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_allclose(padded.forward(xp), net.forward(x), atol=1e-12)
    moved = S.shifted_network(padded, 2.5)
    np.testing.assert_allclose(moved.forward(xp + 2.5), net.forward(x), atol=1e-12)
    np.testing.assert_allclose(moved.input_low, net.input_low + 2.5)
    assert net.layers[0].padding == 1  # the original is untouched
    with pytest.raises(MinilrpError, match="explicit_padding"):
        S.shifted_network(net, 1.0)
    bad = Network([Conv2d(1, 2, 3, weight=rng.standard_normal((2, 1, 3, 3))), ReLU(), MaxPool2d(2), Flatten(),
                   Dense(18, 2, weight=rng.standard_normal((2, 18)))], (1, 8, 8))
    no_bias = S.shifted_network(Network([Flatten(), Dense(64, 2, weight=rng.standard_normal((2, 64)), use_bias=False)],
                                        (1, 8, 8)).astype(np.float64), 1.0)
    assert no_bias.layers[1].bias is not None  # a bias is added to absorb the shift
    S.shifted_network(bad, 1.0)  # an unpadded conv needs no explicit padding
    with pytest.raises(MinilrpError, match="starts with"):
        S.shifted_network(Network([ReLU(), Flatten(), Dense(64, 2)], (1, 8, 8)), 1.0)


def test_conservation_identities(rng):
    """Bias-free ReLU network: LRP-0 passes the whole logit to the pixels and equals gradient x
    input; with biases, the sum plus the ledger's shares is the logit; Integrated Gradients sums
    to f(x) - f(x0) up to the integration error."""
    net = relu_net(rng, bias=False)
    x = images(rng, 4)
    lrp0 = Composite("LRP-0 plain", default=Epsilon(0.0, bias=False))
    c = S.conservation(net, x, [lrp0, "gradient_x_input", "sa"])
    assert set(c) == {"LRP LRP-0 plain", "Gradient x Input"}  # SA is not an attribution
    f = net.forward(x)[np.arange(4), net.forward(x).argmax(1)]
    np.testing.assert_allclose(c["LRP LRP-0 plain"]["total"], f, rtol=1e-10)
    np.testing.assert_allclose(c["Gradient x Input"]["total"], f, rtol=1e-10)
    layers = c["LRP LRP-0 plain"]["layers"]
    assert [row["index"] for row in layers] == list(range(len(net.layers)))[::-1]
    net = relu_net(rng)
    c = S.conservation(net, x, ["LRP-0", "integrated_gradients"], chunk=3)
    e = c["LRP LRP-0"]
    absorbed = sum(row["bias"] + row["stabiliser"] + row["dropped"] for row in e["layers"])
    np.testing.assert_allclose(e["total"] + absorbed, e["score"], rtol=1e-9)
    assert max(np.abs(row["residual"]).max() for row in e["layers"]) < 1e-10
    ig = c["Integrated Gradients"]
    np.testing.assert_allclose(ig["total"], ig["score"], rtol=0.05)


def test_methods_resolve_and_bad_input_is_named(rng):
    import minilrp
    assert minilrp.sanity is S and minilrp.similarity.MEASURES == MEASURES  # the short names
    assert S.method("SA").name == "SA" and S.method("Gradient-x-Input").name == "Gradient x Input"
    assert S.method("epsilongammabox").name == "LRP EpsilonGammaBox"
    assert S.method(Epsilon(0.1)).sums_to == "f(x)"
    with pytest.raises(MinilrpError, match="unknown method 'saliency'"):
        S.method("saliency")
    with pytest.raises(MinilrpError, match="twice"):
        S.methods_from(["sa", "SA"])
    with pytest.raises(MinilrpError, match="no method"):
        S.methods_from([])
    net = relu_net(rng)
    with pytest.raises(MinilrpError, match="seed"):
        S.mprt(net, images(rng, 2), ["sa"], seed=-1)
    with pytest.raises(MinilrpError, match="shape"):
        S.mprt(net, np.zeros((2, 1, 5, 5)), ["sa"])
    with pytest.raises(MinilrpError, match="finite"):
        S.input_invariance(net, images(rng, 2), ["sa"], shift=np.inf)
    assert S.interval([np.nan, np.nan])["undefined"] == 2
    s = S.interval([0.1, np.nan, 0.3])
    assert s["n"] == 2 and s["undefined"] == 1 and np.isclose(s["mean"], 0.2)
    assert S.similarity_verdict({"mean": 0.5, "low": 0.4, "high": 0.6}) == "inconclusive"
