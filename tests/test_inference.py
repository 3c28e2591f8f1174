"""The inference-only forward (minilrp/fast/inference.py) equals Network.forward: bit for bit
in one batch (the fusions are exact), to 1e-12 (float64) / 1e-5 (float32) in batches of other
sizes (BLAS rounds a GEMM's dot products differently for other matrix sizes), on every bundled
model and on random networks, without touching the network's caches."""
import numpy as np
import pytest

import minilrp
from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, MinilrpError, Network, ReLU
from minilrp.fast import inference
from test_limits import random_net


@pytest.mark.parametrize("model", ["fmnist-mlp", "fmnist-cnn", "fmnist-vgg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_forward_on_the_bundled_models(model, dtype):
    net = minilrp.load_model(model, dtype=dtype)
    x = net.preprocess(minilrp.load_samples()[0][:40])
    np.testing.assert_array_equal(inference.logits(net, x), net.forward(x))
    close(inference.logits(net, x, batch_size=16), net.forward(x))


def close(got, want):
    tol = 1e-12 if want.dtype == np.float64 else 1e-5
    assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_fuses_relu_and_max_pool_in_either_order(rng):
    net = minilrp.load_model("fmnist-cnn")
    plan = [(type(layer).__name__, pool is not None, relu) for layer, pool, relu in inference.steps(net)]
    assert plan == [("Conv2d", True, True), ("Conv2d", True, True), ("Flatten", False, False),
                    ("Dense", False, True), ("Dense", False, False)]
    layers = [Conv2d(1, 2, 3, weight=rng.standard_normal((2, 1, 3, 3)), bias=rng.standard_normal(2)), MaxPool2d(2), ReLU(),
              Conv2d(2, 2, 1, weight=rng.standard_normal((2, 2, 1, 1)), use_bias=False), MaxPool2d(3, 1), AvgPool2d(2, 1),
              ReLU(), ReLU(), Flatten(), Dense(2, 3, weight=rng.standard_normal((3, 2)))]
    net = Network(layers, (1, 10, 10)).astype(np.float64)
    assert [(pool is not None, relu) for _, pool, relu in inference.steps(net)] == \
        [(True, True), (True, False), (False, False), (False, False), (False, False), (False, False), (False, False)]
    x = rng.standard_normal((5, 1, 10, 10))
    np.testing.assert_array_equal(inference.logits(net, x), net.forward(x))
    close(inference.logits(net, x, batch_size=2), net.forward(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_forward_on_random_networks(dtype):
    rng = np.random.default_rng(7)
    for _ in range(40):
        net = random_net(rng, dtype, 1.0)
        x = rng.standard_normal((3,) + net.input_shape).astype(dtype)
        np.testing.assert_array_equal(inference.logits(net, x), net.forward(x))
        close(inference.logits(net, x, batch_size=2), net.forward(x))


def test_leaves_the_caches_and_names_non_finite_layers(rng):
    net = minilrp.load_model("fmnist-cnn")
    x = net.preprocess(minilrp.load_samples()[0][:3])
    net.forward(x[:1])
    cached = [layer.a for layer in net.layers]
    inference.logits(net, x)
    assert all(layer.a is a for layer, a in zip(net.layers, cached))
    net.layers[3].weight[0, 0, 0, 0] = np.inf
    with pytest.raises(MinilrpError, match="layer 3 .*its weight contain NaN or inf"):
        inference.logits(net, x)


def change_regions(rng, x, n, size):
    """n of the images x with one size x size region set to 0 (rows, new images)."""
    rows = rng.choice(len(x), n, replace=False)
    new = x[rows].copy()
    H, W = x.shape[2:]
    for img in new:
        y, c = rng.integers(0, H - size + 1), rng.integers(0, W - size + 1)
        img[:, y:y + size, c:c + size] = 0
    return rows, new


@pytest.mark.parametrize("model", ["fmnist-mlp", "fmnist-cnn", "fmnist-vgg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scorer_follows_images_changing_region_by_region(model, dtype):
    """49 steps of a region perturbation: each step's logits equal a whole forward of the new
    images (to float32 / float64 rounding: the windows' GEMMs are of other sizes; on this
    machine's OpenBLAS float32 came out bit for bit, which no test relies on)."""
    rng = np.random.default_rng(0)
    net = minilrp.load_model(model, dtype=dtype)
    x = net.preprocess(minilrp.load_samples()[0][:30])
    scorer = inference.Scorer(net, x)
    np.testing.assert_array_equal(scorer.logits, net.forward(x))
    for _ in range(49):
        rows, new = change_regions(rng, x, 20, 4)
        x[rows] = new
        close(scorer.update(rows, new), net.forward(new))
    close(scorer.update(np.arange(30), x), net.forward(x))  # nothing changed: the kept logits


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scorer_on_random_networks(dtype):
    """Strides, padding, average and overlapping pools, a ReLU alone, boxes at the borders,
    keep=False (the kept images stay; rows may repeat)."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        net = random_net(rng, dtype, 1.0)
        x = rng.standard_normal((6,) + net.input_shape).astype(dtype)
        scorer = inference.Scorer(net, x)
        for k in range(6):
            rows = rng.choice(6, 3, replace=k % 2 == 0)
            new = x[rows].copy()
            if k < 4:  # a box of 1-3 pixels a side, anywhere (the borders included)
                y, c = rng.integers(0, new.shape[2], 2)
                new[:, :, y:y + rng.integers(1, 4), c:c + rng.integers(1, 4)] += 1
            else:  # a few pixels anywhere
                new += rng.uniform(size=new.shape) < 0.05
            close(scorer.update(rows, new, keep=k % 2 == 1), net.forward(new))
            if k % 2:
                x[rows] = new
            close(scorer.update(np.arange(6), x, keep=False), net.forward(x))


def test_scorer_names_bad_rows():
    net = minilrp.load_model("fmnist-cnn")
    x = net.preprocess(minilrp.load_samples()[0][:4])
    scorer = inference.Scorer(net, x)
    for rows, keep in [([0, 4], True), ([-1, 0], True), ([1, 1], True), ([0.0, 1.0], True), ([0], True)]:
        with pytest.raises(MinilrpError, match="rows must be 2 indices"):
            scorer.update(rows, x[:2], keep=keep)
    close(scorer.update([1, 1], x[:2], keep=False), net.forward(x[:2]))  # repeats: fine without keep
    with pytest.raises(MinilrpError, match="empty|no images|batch"):
        scorer.update([], x[:0])
