"""LRP through whole networks: conservation, LRP-0 = gradient x input, batch consistency,
targets and initial relevance, z^B bounds, composites and the ledger."""
import numpy as np
import pytest

import minilrp

from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, MinilrpError, Network, ReLU
from minilrp import PRESETS, Composite, get_composite
from minilrp import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus
from test_network import small_net


def relu_net(rng, bias=True):
    def b(n):
        return rng.standard_normal(n) if bias else None
    layers = [Conv2d(1, 4, 3, padding=1, weight=rng.standard_normal((4, 1, 3, 3)), bias=b(4), use_bias=bias),
              ReLU(), MaxPool2d(2),
              Conv2d(4, 6, 3, stride=1, padding=1, weight=rng.standard_normal((6, 4, 3, 3)) * 0.5, bias=b(6), use_bias=bias),
              ReLU(), AvgPool2d(2), Flatten(),
              Dense(24, 8, weight=rng.standard_normal((8, 24)) * 0.5, bias=b(8), use_bias=bias), ReLU(),
              Dense(8, 3, weight=rng.standard_normal((3, 8)), bias=b(3), use_bias=bias)]
    return Network(layers, (1, 8, 8), classes=["a", "b", "c"]).astype(np.float64)


def images(rng, n=4):
    return rng.uniform(0, 1, (n, 1, 8, 8))


CONSERVING = {
    "LRP-0": Composite("c0", default=Epsilon(0.0, bias=False)),
    "Gamma": Composite("cg", default=Gamma(0.5, epsilon=0.0, bias=False), by_type={Dense: Epsilon(0.0, bias=False)}),
    "Box+Gamma": Composite("cb", default=Epsilon(0.0, bias=False), by_type={Conv2d: Gamma(0.25, 0.0, bias=False)},
                           first=((Conv2d,), ZBox(epsilon=0.0))),
    "Flat+WSquare": Composite("cf", default=WSquare(0.0, bias=False), first=((Conv2d,), Flat(0.0))),
}


@pytest.mark.parametrize("name", CONSERVING)
def test_conservation_layer_by_layer(name, rng):
    net = relu_net(rng)
    R = net.relevance(images(rng), CONSERVING[name])
    for row in net.ledger.rows:
        np.testing.assert_allclose(row["leaving"], row["entering"], rtol=1e-10)
    top = net.ledger.rows[0]["entering"]
    np.testing.assert_allclose(R.sum((1, 2, 3)), top, rtol=1e-10)


def test_ledger_accounts_for_every_share(rng):
    net = relu_net(rng)
    x = images(rng)
    for name in PRESETS:
        net.relevance(x, name)
        assert np.abs(net.ledger.residual()).max() < 1e-9 * max(1.0, np.abs(net.ledger.rows[0]["entering"]).max()), name
    net.relevance(x, "EpsilonAlpha2Beta1")
    ab = [r for r in net.ledger.rows if "AlphaBeta" in r["rule"]]
    assert ab and all(np.allclose(r["positive"] - r["negative"], r["leaving"], rtol=1e-10) for r in ab)
    table = net.ledger.table()
    assert "entering" in table and "AlphaBeta" in table and len(table.splitlines()) == len(net.layers) + 2


def test_ledger_sums_do_not_follow_later_changes(rng):
    """The ledger's sums are those of every layer's relevance (kept with keep=True), and a
    caller changing the returned heatmap afterwards does not change them (the MLP's heatmap
    is a view of its first Dense layer's relevance)."""
    from minilrp import load_model, load_samples
    # the MLP starts with Flatten: its heatmap is a view of the first Dense layer's relevance
    mlp = load_model("fmnist-mlp").astype(np.float64)
    cases = [(relu_net(rng), images(rng)), (mlp, mlp.preprocess(load_samples()[0][:2]))]
    for (net, x), name in ((case, name) for case in cases for name in PRESETS):
        net.relevance(x, name, keep=True)
        eager = [(r["entering"], r["leaving"]) for r in net.ledger.rows]
        assert all(r["relevance"].ndim > 1 for r in net.ledger.rows)
        R = net.relevance(x, name)
        R *= 2  # the caller's array: its sum was taken during the call
        lazy = [(r["entering"], r["leaving"]) for r in net.ledger.rows]
        np.testing.assert_array_equal(np.array(lazy), np.array(eager))


def test_lrp0_equals_gradient_times_input_without_bias(rng):
    net = relu_net(rng, bias=False)
    x = images(rng)
    R = net.relevance(x, Epsilon(0.0))
    t = net.last_targets
    logits = net.forward(x)
    # relevance starts at the logit; x * grad of the logit
    np.testing.assert_allclose(R, x * net.gradient(x, target=t), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(R.sum((1, 2, 3)), logits[np.arange(4), t], rtol=1e-10)


def test_batch_equals_one_by_one(rng):
    net = relu_net(rng)
    x = images(rng, 5)
    targets = np.array([0, 2, 1, 1, 0])
    for name in PRESETS:
        whole = net.relevance(x, name, target=targets)
        for n in range(5):
            one = net.relevance(x[n:n + 1], name, target=targets[n])
            np.testing.assert_allclose(one[0], whole[n], rtol=1e-9, atol=1e-12, err_msg=name)


def test_targets_and_initial_relevance(rng):
    net = relu_net(rng)
    x = images(rng, 3)
    logits = net.forward(x)
    R_logit = net.relevance(x, "LRP-0", target=[0, 1, 2])
    R_onehot = net.relevance(x, "LRP-0", target=[0, 1, 2], start="onehot")
    # LRP-0 is linear in the initial relevance
    scale = logits[np.arange(3), [0, 1, 2]]
    np.testing.assert_allclose(R_logit, R_onehot * scale[:, None, None, None], rtol=1e-9, atol=1e-12)
    user = np.zeros((3, 3))
    user[:, 1] = 2.0
    np.testing.assert_allclose(net.relevance(x, "LRP-0", start=user),
                               2 * net.relevance(x, "LRP-0", target=1, start="onehot"), rtol=1e-9, atol=1e-12)
    net.relevance(x, "LRP-0")
    np.testing.assert_array_equal(net.last_targets, logits.argmax(1))


def test_bad_arguments(rng):
    net = relu_net(rng)
    x = images(rng, 2)
    with pytest.raises(MinilrpError, match="out of range"):
        net.relevance(x, "LRP-0", target=3)
    with pytest.raises(MinilrpError, match="initial relevance must be .* shape \\(2, 3\\)"):
        net.relevance(x, "LRP-0", start=np.ones((2, 4)))
    with pytest.raises(MinilrpError, match="start must be"):
        net.relevance(x, "LRP-0", start="logits")
    with pytest.raises(MinilrpError, match="unknown composite 'Nope'.*EpsilonGammaBox"):
        net.relevance(x, "Nope")
    with pytest.raises(MinilrpError, match="cannot serve"):
        net.relevance(x, Composite("bad", by_index={2: Epsilon()}))
    with pytest.raises(MinilrpError, match="ZBox needs bounds.*pixel layer"):
        net.relevance(x, Composite("bad", by_index={3: ZBox()}))
    with pytest.raises(MinilrpError, match="bad parameters"):
        get_composite("EpsilonPlus", gamma=3)


def test_zbox_bounds(rng):
    net = relu_net(rng)
    x = images(rng, 2)
    default = net.relevance(x, "EpsilonGammaBox")
    explicit = net.relevance(x, "EpsilonGammaBox", low=0.0, high=1.0)
    np.testing.assert_allclose(default, explicit)
    wider = net.relevance(x, "EpsilonGammaBox", low=-1.0, high=2.0)
    assert not np.allclose(default, wider)
    with pytest.raises(MinilrpError, match="z\\^B bounds do not contain the input"):
        net.relevance(x + 0.5, "EpsilonGammaBox")
    with pytest.raises(MinilrpError, match="per-channel"):
        net.relevance(x, "EpsilonGammaBox", low=[0.0, 0.0], high=[1.0, 1.0])


def test_composite_assignment(rng):
    net = relu_net(rng)
    names = {k: [type(r).__name__ if r else None for r in get_composite(k).rules(net)] for k in PRESETS}
    #            conv0   relu  pool            conv3  relu  avg       flat  dense7  relu dense9
    assert names["EpsilonGammaBox"] == ["ZBox", None, "WinnerTakeAll", "Gamma", None, "Epsilon", None, "Epsilon", None, "Epsilon"]
    assert names["EpsilonPlusFlat"] == ["Flat", None, "WinnerTakeAll", "AlphaBeta", None, "Epsilon", None, "Epsilon", None, "Epsilon"]
    assert names["EpsilonAlpha2Beta1"][0] == "AlphaBeta"
    rules = get_composite("Montavon").rules(net)
    assert isinstance(rules[0], ZBox) and isinstance(rules[3], Gamma)
    assert rules[7] == Epsilon(0.25, relative=True) and rules[9] == Epsilon(0.0)
    # custom: by type and by index
    c = Composite("mine", by_type={Conv2d: ZPlus()}, by_index={9: AlphaBeta(2, 1)})
    r = c.rules(net)
    assert r[0] == ZPlus() and r[9] == AlphaBeta(2, 1) and r[7] == Epsilon()
    # a single rule applies to every linear layer
    assert get_composite(Gamma(0.1)).rules(net)[3] == Gamma(0.1)
    # case-insensitive names from the one registry
    assert get_composite("epsilongammabox").name == "EpsilonGammaBox"


def test_mlp_box_rule_on_first_dense(rng):
    layers = [Flatten(), Dense(16, 5, weight=rng.standard_normal((5, 16)), bias=rng.standard_normal(5)), ReLU(),
              Dense(5, 2, weight=rng.standard_normal((2, 5)), bias=rng.standard_normal(2))]
    net = Network(layers, (1, 4, 4)).astype(np.float64)
    x = rng.uniform(0, 1, (3, 1, 4, 4))
    R = net.relevance(x, "Montavon")
    assert R.shape == x.shape and "ZBox" in net.ledger.rows[-2]["rule"]
    # EpsilonGammaBox follows Zennit: no conv, so no box
    assert not any("ZBox" in r["rule"] for r in (net.relevance(x, "EpsilonGammaBox"), net.ledger)[1].rows)


def test_keep_layers(rng):
    net = relu_net(rng)
    R = net.relevance(images(rng, 2), "EpsilonPlus", keep=True)
    assert net.ledger.rows[-1]["relevance"] is R
    assert [r["relevance"].shape[1:] for r in net.ledger.rows] == list(reversed(net.shapes[:-1]))


@pytest.mark.parametrize("preset", ["EpsilonGammaBox", "EpsilonPlusFlat", "EpsilonAlpha2Beta1"])
def test_weights_changed_in_place_or_replaced_are_followed(preset, rng, tmp_path):
    """Rules keep weight-derived arrays (w+, w-, w + g w+) and a preset's rule list between
    calls; changing a weight in place or assigning a new one must show in the next heatmap."""
    net, x = relu_net(rng), images(rng)
    before = net.relevance(x, preset)
    net.layers[3].weight *= -0.5           # in place
    net.layers[0].weight[0] = rng.standard_normal(net.layers[0].weight[0].shape)
    net.layers[7].weight = net.layers[7].weight[::-1].copy()   # replaced
    after = net.relevance(x, preset)
    path = tmp_path / "net.npz"
    minilrp.io.save(path, net)
    np.testing.assert_array_equal(after, minilrp.io.load(path).relevance(x, preset))
    assert not np.allclose(after, before)
