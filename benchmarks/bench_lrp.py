"""LRP and SA speed against Zennit (PyTorch CPU, 2 threads) and autograd, same weights,
same run: EpsilonGammaBox and EpsilonPlusFlat on the bundled LeNet CNN at batch 1 and
1000, and on a VGG-16-shaped network (random weights, 224x224, batch 1); the SA gradient
likewise. Both start from the target logit times one-hot. LRP runs minilrp's fast path
("minilrp") and its readable reference path ("minilrp-reference", fast=False): the ratio
between the two is what the speed machinery of minilrp/fast/ buys."""
import numpy as np
import pytest

from conftest import median_run
from peers import to_torch, vgg16_shaped

PRESETS = ["EpsilonGammaBox", "EpsilonPlusFlat"]


@pytest.fixture(scope="module")
def vgg():
    net = vgg16_shaped()
    x = net.preprocess(np.random.default_rng(1).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32))
    return net, x


def zennit_runner(net, x, preset):
    torch = pytest.importorskip("torch")
    zc = pytest.importorskip("zennit.composites")
    from zennit.attribution import Gradient
    model = to_torch(net)
    tx = torch.from_numpy(x)
    with torch.no_grad():
        mask = torch.nn.functional.one_hot(model(tx).argmax(1), net.n_classes).to(tx.dtype)
    if preset == "EpsilonGammaBox":
        shape = (1,) + net.input_shape
        low = torch.from_numpy(np.broadcast_to(net.input_low.reshape(-1, 1, 1), net.input_shape).astype(x.dtype))
        high = torch.from_numpy(np.broadcast_to(net.input_high.reshape(-1, 1, 1), net.input_shape).astype(x.dtype))
        composite = zc.EpsilonGammaBox(low=low.expand((len(x),) + shape[1:]), high=high.expand((len(x),) + shape[1:]))
    else:
        composite = zc.EpsilonPlusFlat()
    attributor = Gradient(model, composite)
    attributor.__enter__()

    def run():
        _, R = attributor(tx, lambda out: out * mask)
        return R
    return run


def autograd_runner(net, x):
    torch = pytest.importorskip("torch")
    model = to_torch(net)
    tx = torch.from_numpy(x)
    with torch.no_grad():
        mask = torch.nn.functional.one_hot(model(tx).argmax(1), net.n_classes).to(tx.dtype)

    def run():
        xi = tx.clone().requires_grad_(True)
        (model(xi) * mask).sum().backward()
        return xi.grad
    return run


# impl varies fastest: minilrp and its peer run back to back on the same case, and at
# batch 1 each runs about 3 s, so both medians span the same machine phases
def lrp_runner(impl, net, x, preset):
    if impl == "zennit":
        return zennit_runner(net, x, preset)
    return lambda: net.relevance(x, preset, fast=impl == "minilrp")


@pytest.mark.parametrize("impl", ["minilrp", "minilrp-reference", "zennit"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("n", [1, 1000])
def test_lenet_lrp(benchmark, impl, n, preset, lenet, lenet_x):
    benchmark.group = f"LRP {preset}: LeNet, batch {n}"
    x = lenet_x[:n]
    fn = lrp_runner(impl, lenet, x, preset)
    median_run(benchmark, fn, rounds=None if n == 1 else 7, seconds=3 if n == 1 else None)


@pytest.mark.parametrize("impl", ["minilrp", "autograd"])
@pytest.mark.parametrize("n", [1, 1000])
def test_lenet_gradient(benchmark, impl, n, lenet, lenet_x):
    benchmark.group = f"SA gradient: LeNet, batch {n}"
    x = lenet_x[:n]
    fn = (lambda: lenet.gradient(x)) if impl == "minilrp" else autograd_runner(lenet, x)
    median_run(benchmark, fn, rounds=None if n == 1 else 7, seconds=3 if n == 1 else None)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("impl", ["minilrp", "minilrp-reference", "zennit"])
def test_vgg16_lrp(benchmark, impl, preset, vgg):
    benchmark.group = f"LRP {preset}: VGG-16-shaped, batch 1"
    net, x = vgg
    fn = lrp_runner(impl, net, x, preset)
    median_run(benchmark, fn, rounds=5)


@pytest.mark.parametrize("impl", ["minilrp", "autograd"])
def test_vgg16_gradient(benchmark, impl, vgg):
    benchmark.group = "SA gradient: VGG-16-shaped, batch 1"
    net, x = vgg
    fn = (lambda: net.gradient(x)) if impl == "minilrp" else autograd_runner(net, x)
    median_run(benchmark, fn, rounds=5)
