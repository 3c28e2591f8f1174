"""VGG-16 at 224x224, imported from PyTorch: forward, SA gradient and EpsilonGammaBox LRP at
batch 1 and 8, minilrp against PyTorch (forward, autograd SA; torch.set_num_threads(2)) and
Zennit (LRP), in the same run, on the same weights (torchvision layout, random He-scaled
weights from ``random_vgg_state_dict``; the same ImageNet-normalised inputs). Every method
starts from the target logit (predicted class) times one-hot.

Runs under the reference venv so that the peers are importable (see benchmarks/VGG16.md):

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=. ~/.cache/minilrp-reference-venv/bin/python -m pytest benchmarks/bench_vgg16.py \\
        --benchmark-json=/tmp/vgg16.json && python benchmarks/report.py /tmp/vgg16.json

Peak memory is measured separately, each case in a fresh process: benchmarks/vgg16_memory.py.
"""
import numpy as np
import pytest

from minilrp.models.importers import (IMAGENET_MEAN, IMAGENET_STD, from_torch, load_state_dict_strict,
                               random_vgg_state_dict, vgg)

BATCHES = [1, 8]
ROUNDS = {1: 5, 8: 3}


def vgg16_torch(torch):
    """torchvision-layout VGG-16 with the benchmark weights (float32, eval mode)."""
    with torch.device("meta"):  # no PyTorch random init: the weights come from numpy
        m = vgg("vgg16")
    load_state_dict_strict(m, random_vgg_state_dict("vgg16", seed=0), assign=True)
    return m.eval()


def images(n, seed=1):
    rng = np.random.default_rng(seed)
    mean = np.asarray(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD).reshape(1, 3, 1, 1)
    return ((rng.uniform(0, 1, (n, 3, 224, 224)) - mean) / std).astype(np.float32)


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


@pytest.fixture(scope="module")
def model(torch):
    return vgg16_torch(torch)


@pytest.fixture(scope="module")
def net(model):
    return from_torch(model, (3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, check=False)


def timed(benchmark, fn, n):
    fn()  # warm-up: numba compile / page faults
    return benchmark.pedantic(fn, rounds=ROUNDS[n], iterations=1, warmup_rounds=0)


def torch_forward(torch, model, x):
    tx = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            return model(tx)
    return run


def torch_gradient(torch, model, x):
    tx = torch.from_numpy(x)
    with torch.no_grad():
        mask = torch.nn.functional.one_hot(model(tx).argmax(1), 1000).to(tx.dtype)

    def run():
        xi = tx.clone().requires_grad_(True)
        (model(xi) * mask).sum().backward()
        return xi.grad
    return run


def zennit_lrp(torch, model, net, x):
    """Zennit's EpsilonGammaBox with the same per-channel z^B bounds; returns (enter, run, exit)."""
    zc = pytest.importorskip("zennit.composites")
    from zennit.attribution import Gradient
    tx = torch.from_numpy(x)
    low = torch.from_numpy(np.broadcast_to(net.input_low.reshape(1, 3, 1, 1), x.shape).astype(np.float32))
    high = torch.from_numpy(np.broadcast_to(net.input_high.reshape(1, 3, 1, 1), x.shape).astype(np.float32))
    with torch.no_grad():
        mask = torch.nn.functional.one_hot(model(tx).argmax(1), 1000).to(tx.dtype)
    return Gradient(model, zc.EpsilonGammaBox(low=low, high=high)), tx, mask


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("impl", ["minilrp", "pytorch"])
def test_vgg16_forward(benchmark, torch, model, net, impl, n):
    benchmark.group = f"VGG-16 forward, batch {n}"
    x = images(n)
    fn = (lambda: net.forward(x)) if impl == "minilrp" else torch_forward(torch, model, x)
    timed(benchmark, fn, n)
    net.clear()


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("impl", ["minilrp", "pytorch"])
def test_vgg16_gradient(benchmark, torch, model, net, impl, n):
    benchmark.group = f"VGG-16 SA gradient, batch {n}"
    x = images(n)
    fn = (lambda: net.gradient(x)) if impl == "minilrp" else torch_gradient(torch, model, x)
    timed(benchmark, fn, n)
    net.clear()


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("impl", ["minilrp", "zennit"])
def test_vgg16_lrp(benchmark, torch, model, net, impl, n):
    benchmark.group = f"VGG-16 EpsilonGammaBox LRP, batch {n}"
    x = images(n)
    if impl == "minilrp":
        timed(benchmark, lambda: net.relevance(x, "EpsilonGammaBox"), n)
        net.clear()
        return
    attributor, tx, mask = zennit_lrp(torch, model, net, x)
    with attributor:  # hooks removed on exit, so the other benchmarks see a plain model
        timed(benchmark, lambda: attributor(tx, lambda out: out * mask), n)
