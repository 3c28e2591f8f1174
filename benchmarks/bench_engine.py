"""Engine speed against PyTorch CPU (2 threads) in the same run: the bundled LeNet CNN's
forward at batch 1 and 1000, and one VGG-16-sized conv (64 -> 64, 3x3, 224x224, batch 1)
forward and input gradient."""
import numpy as np
import pytest

from conftest import median_run, torch_or_skip
from minilrp import kernels


@pytest.mark.parametrize("n", [1, 1000])
@pytest.mark.parametrize("impl", ["minilrp", "torch"])
def test_lenet_forward(benchmark, impl, n, lenet, lenet_x):
    benchmark.group = f"engine: LeNet forward, batch {n}"
    x = lenet_x[:n]
    if impl == "minilrp":
        median_run(benchmark, lambda: lenet.forward(x))
        return
    torch = torch_or_skip()
    from peers import to_torch
    model, tx = to_torch(lenet), torch.from_numpy(x)
    with torch.inference_mode():
        median_run(benchmark, lambda: model(tx))


@pytest.fixture(scope="module")
def vgg_conv():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 224, 224), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32) * 0.05
    b = rng.standard_normal(64, dtype=np.float32)
    g = rng.standard_normal((1, 64, 224, 224), dtype=np.float32)
    return x, w, b, g


@pytest.mark.parametrize("impl", ["minilrp", "torch"])
def test_vgg_conv_forward(benchmark, impl, vgg_conv):
    benchmark.group = "engine: VGG-sized conv 64->64 224x224 forward"
    x, w, b, _ = vgg_conv
    if impl == "minilrp":
        median_run(benchmark, lambda: kernels.conv2d(x, w, b, 1, 1))
        return
    torch = torch_or_skip()
    tx, tw, tb = map(torch.from_numpy, (x, w, b))
    with torch.inference_mode():
        median_run(benchmark, lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1))


@pytest.mark.parametrize("impl", ["minilrp", "torch"])
def test_vgg_conv_input_gradient(benchmark, impl, vgg_conv):
    benchmark.group = "engine: VGG-sized conv 64->64 224x224 input gradient"
    x, w, _, g = vgg_conv
    if impl == "minilrp":
        median_run(benchmark, lambda: kernels.conv2d_transpose(g, w, 1, 1, (224, 224)))
        return
    torch = torch_or_skip()
    tw, tg = torch.from_numpy(w), torch.from_numpy(g)
    with torch.inference_mode():
        median_run(benchmark, lambda: torch.nn.grad.conv2d_input(x.shape, tw, tg, padding=1))
