"""Reproducing a published setup: draws keyed by the image's data-set index (not its place in a
call), user-supplied noise fields and tie-breaking keys, max-pool ties for every preset, and the
seed study's combined ordering."""
import numpy as np
import pytest

import minilrp
from minilrp import MinilrpError
from minilrp import perturbation as P
from minilrp.evaluate.perturbation import _FILL, _rng
from minilrp.evaluate.shards import composite


@pytest.fixture(scope="module")
def world():
    net = minilrp.load_model("fmnist-cnn")
    images, _, _ = minilrp.load_samples()
    x = net.preprocess(images[:10])
    regions = P.grid(x.shape[1:], 7)
    return net, x, regions


def test_draws_follow_the_data_set_index_not_the_position(world):
    net, x, regions = world
    order = P.random_order(10, regions.n_regions, seed=3)
    whole = P.perturb(net, x, regions, order, 5, "uniform", seed=3)
    part = P.perturb(net, x[6:9], regions, order[6:9], 5, "uniform", seed=3, index=np.arange(6, 9))
    assert np.array_equal(part, whole[6:9])
    assert np.array_equal(P.random_order(3, regions.n_regions, seed=3, index=[6, 7, 8]), order[6:9])
    s = P.region_scores(net.relevance(x, "EpsilonPlusFlat"), regions)
    assert np.array_equal(P.order_regions(s[6:9], "morf", 3, index=np.arange(6, 9)),
                          P.order_regions(s, "morf", 3)[6:9])
    with pytest.raises(MinilrpError, match=r"index must be an int array of shape \(3,\)"):
        P.random_order(3, 16, index=[1, 2])


def test_a_noise_field_reproduces_the_draws_it_records(world, tmp_path):
    """A field holding exactly the fills minilrp's uniform noise draws for images 100..109
    gives the uniform-noise curves of those images (with index 100..109), bit for bit."""
    net, x, regions = world
    uniform = P.get_perturbation("uniform").resolve(net, x)
    index = np.arange(100, 110)
    field = np.zeros((110,) + x.shape[1:], np.float32)
    field[index] = [uniform.draw(x[n], _rng(0, _FILL, i, 0)) for n, i in enumerate(index)]
    np.save(tmp_path / "noise.npy", field)
    order = P.order_regions(P.region_scores(net.relevance(x, "EpsilonGammaBox"), regions), "morf", index=index)
    mine = P.perturbation_curves(net, x, regions, order, "uniform", index=index)
    theirs = P.perturbation_curves(net, x, regions, order, f"field:{tmp_path / 'noise.npy'}", index=index)
    assert np.array_equal(mine, theirs)
    # the field is indexed by the data-set index: positions 0..9 have a zero field
    zero = P.perturbation_curves(net, x, regions, order, P.NoiseField(field))  # index 0..9
    assert np.array_equal(zero, P.perturbation_curves(net, x, regions, order, "constant:0"))
    with pytest.raises(MinilrpError, match="has fills for 110 images; image 110 has none"):
        P.perturbation_curves(net, x[:1], regions, order[:1], P.NoiseField(field), index=[110])
    with pytest.raises(MinilrpError, match="outside the valid input range"):
        P.perturbation_curves(net, x[:1], regions, order[:1], P.NoiseField(field + 5), index=[0])
    with pytest.raises(MinilrpError, match="do not fit images"):
        P.perturbation_curves(net, x, regions, order, P.NoiseField(field[..., :27]))
    with pytest.raises(MinilrpError, match="needs a file"):
        P.get_perturbation("field")


def test_tie_keys(world):
    scores = np.array([[0.0, 2.0, 0.0, 1.0, 0.0]])
    # "index": equal scores in region order, as a stable argsort
    assert P.order_regions(scores, "morf", ties="index").tolist() == [[1, 3, 0, 2, 4]]
    assert np.array_equal(P.order_regions(scores, "lerf", ties="index"),
                          np.argsort(scores, axis=1, kind="stable"))
    # a user's key: ascending key first among equal scores
    key = np.array([[5, 0, 1, 0, 3]])
    assert P.order_regions(scores, "morf", ties=key).tolist() == [[1, 3, 2, 4, 0]]
    # the default: a seeded permutation, the same for every method
    assert sorted(P.order_regions(scores, "morf", seed=9)[0, 2:]) == [0, 2, 4]
    with pytest.raises(MinilrpError, match=r"shape \(1, 5\)"):
        P.order_regions(scores, "morf", ties=np.zeros((1, 4)))


def test_the_study_ordering_is_the_disagreement_map_largest_first():
    rng = np.random.default_rng(0)
    sa, lrp = rng.random((4, 9)), rng.normal(size=(4, 9))
    d = P.rank_normalise(sa) - P.rank_normalise(lrp)
    order = P.combined_order(sa, lrp, "sa_minus_lrp", ties="index")
    assert np.array_equal(order, np.argsort(-d, axis=1, kind="stable"))
    assert "sa_minus_lrp" in P.STUDY_COMBINED and "lrp_negative" in P.STUDY_COMBINED


def test_maxpool_ties_first_for_any_preset(world):
    net, x, _ = world
    for name in ("EpsilonGammaBox", "Montavon"):
        first = net.relevance(x, composite(name, "first"))
        c = minilrp.get_composite(name)
        assert isinstance(composite(name, "first").maxpool, minilrp.WinnerTakeAll)
        c.maxpool = minilrp.WinnerTakeAll(ties="first")
        assert np.array_equal(first, net.relevance(x, c))
        assert not np.array_equal(first, net.relevance(x, name))  # the CNN has tied maxima
    assert composite("EpsilonGammaBox", "split") == "EpsilonGammaBox"
