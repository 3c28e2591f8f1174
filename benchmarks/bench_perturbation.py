"""Region perturbation: MoRF curves with all 49 steps (4x4 regions, 28x28) for 1000 Fashion-MNIST
test images on the bundled LeNet CNN, minilrp against Quantus RegionPerturbation (softmax off,
logit score) and a hand-batched PyTorch loop, same weights, same heatmaps (minilrp's LRP
EpsilonPlusFlat), same fill (constant 0 = Quantus' "black"), in the same run.

Needs the reference environment (torch 2.13 CPU + Quantus: ../shared/reference-env/setup.sh):

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=. ~/.cache/minilrp-reference-venv/bin/python -m pytest benchmarks/bench_perturbation.py \\
        -q -s --benchmark-json=/tmp/bench_perturbation.json && python benchmarks/report.py /tmp/bench_perturbation.json

or, for the medians and ratios alone, ``PYTHONPATH=.:benchmarks ~/.cache/minilrp-reference-venv/bin/python
benchmarks/bench_perturbation.py [rounds] [model]`` (same environment variables; model: another
bundled model than the LeNet CNN, e.g. fmnist-vgg). Each peer's curves are checked
against minilrp's first, so the timings compare the same computation.
"""
from __future__ import annotations

import statistics
import time
import tracemalloc

import numpy as np
import pytest
from conftest import median_run

from minilrp import perturbation as P
from minilrp import load_model, load_samples

torch = pytest.importorskip("torch")
quantus = pytest.importorskip("quantus")

N_IMAGES, REGION, BATCH = 1000, 4, 512


def setup(model="fmnist-cnn"):
    torch.set_num_threads(2)
    net = load_model(model)
    images, _, _ = load_samples()
    x = net.preprocess(images[:N_IMAGES])
    heat = np.concatenate([net.relevance(x[i:i + 250], "EpsilonPlusFlat") for i in range(0, len(x), 250)])
    target = P.forward_batched(net, x).argmax(1)
    return net, x, heat, target


def torch_model(net):
    from peers import to_torch
    return to_torch(net)


class ScoreEveryStep(P.Constant):
    """Constant 0 with minilrp's skipping of no-op steps turned off (a step that distorts a
    blank region is scored again instead of reusing the previous score), to compare the engines
    doing the same number of forward passes."""
    mask_independent = False


def run_minilrp(net, x, heat, target, skip=True):
    regions = P.grid(x.shape[1:], REGION)
    order = P.order_regions(P.region_scores(heat, regions), "morf")
    fill = "constant:0" if skip else ScoreEveryStep(0.0)
    return P.perturbation_curves(net, x, regions, order, fill, target=target, batch_size=BATCH)


def run_torch(model, x, heat, target):
    """The loop a PyTorch user would write: region sums by avg-pooling, argsort, all cumulative
    masks of a chunk of images built at once, forward in batches of BATCH under inference_mode."""
    N, C, H, W = x.shape
    s = REGION
    R = (H // s) * (W // s)
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        h = torch.from_numpy(heat.astype(np.float32)).sum(1)
        scores = torch.nn.functional.avg_pool2d(h[:, None], s).reshape(N, R)
        order = torch.argsort(-scores, dim=1, stable=True)
        position = torch.empty_like(order)
        position.scatter_(1, order, torch.arange(R).expand(N, R))
        pix = position.reshape(N, H // s, W // s).repeat_interleave(s, 1).repeat_interleave(s, 2)
        t = torch.from_numpy(target)
        out = torch.empty(N, R + 1)
        out[:, 0] = model(xt)[torch.arange(N), t]
        steps = torch.arange(1, R + 1)
        chunk = max(1, BATCH // R)
        for a in range(0, N, chunk):
            xb = xt[a:a + chunk]
            n = len(xb)
            keep = (pix[a:a + chunk, None] >= steps[None, :, None, None])  # (n, R, H, W)
            xp = (xb[:, None] * keep[:, :, None]).reshape(n * R, C, H, W)  # fill 0
            out[a:a + n, 1:] = model(xp)[torch.arange(n * R), t[a:a + n].repeat_interleave(R)].reshape(n, R)
    return out.numpy().astype(np.float64)


def run_quantus(model, x, heat, target):
    metric = quantus.RegionPerturbation(patch_size=REGION, order="morf", regions_evaluation=(28 // REGION) ** 2,
                                        normalise=False, abs=False, perturb_baseline="black",
                                        disable_warnings=True, display_progressbar=False)
    drops = metric(model=model, x_batch=x, y_batch=target, a_batch=heat.sum(1, keepdims=True),
                   softmax=False, device="cpu", batch_size=256, channel_first=True)
    return np.asarray(drops, dtype=np.float64)  # (N, L): f(x_0) - f(x_k), k = 1..L


@pytest.fixture(scope="module")
def world():
    net, x, heat, target = setup()
    model = torch_model(net)
    ref = run_minilrp(net, x, heat, target)
    np.testing.assert_allclose(run_torch(model, x, heat, target), ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(run_quantus(model, x[:64], heat[:64], target[:64]),
                               ref[:64, :1] - ref[:64, 1:], rtol=1e-4, atol=1e-3)
    return net, model, x, heat, target


@pytest.mark.parametrize("impl", ["minilrp", "minilrp-every-step", "torch-hand-batched", "quantus"])
def test_morf_curves_1000_images(benchmark, impl, world):
    net, model, x, heat, target = world
    benchmark.group = "perturbation: MoRF curves, 49 steps, 1000 images, LeNet"
    fn = {"minilrp": lambda: run_minilrp(net, x, heat, target),
          "minilrp-every-step": lambda: run_minilrp(net, x, heat, target, skip=False),
          "torch-hand-batched": lambda: run_torch(model, x, heat, target),
          "quantus": lambda: run_quantus(model, x, heat, target)}[impl]
    median_run(benchmark, fn, rounds=3 if impl == "quantus" else 5)


def peak_memory(net, x, heat, target):
    tracemalloc.start()
    run_minilrp(net, x, heat, target)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_peak_memory_is_bounded_by_the_batch_not_the_images(world):
    """Peak traced memory of the scoring loop for one batch (512 images) and 1000 images: what
    grows with N is only the (N, L+1) curves and the (N, R) orders, not the N x L perturbed
    images (the images of a batch are scored step after step, the batch's activations kept)."""
    net, model, x, heat, target = world
    small, large = peak_memory(net, x[:BATCH], heat[:BATCH], target[:BATCH]), peak_memory(net, x, heat, target)
    all_images = N_IMAGES * 49 * x[0].nbytes
    print(f"\npeak memory: {BATCH} images {small / 2**20:.1f} MiB, 1000 images {large / 2**20:.1f} MiB "
          f"(all perturbed images would be {all_images / 2**20:.0f} MiB)")
    # bounded by the batch: twice the images, at most 20 % more memory (the batch's forward
    # temporaries dominate; on 28x28 images they exceed all perturbed images of 1000 together)
    assert large < 1.2 * small


def main(rounds=3, model="fmnist-cnn"):
    """Medians over ``rounds`` interleaved rounds (each round runs every implementation once, so a
    load change on a shared machine hits all of them alike), the ratios, and peak memory."""
    net, x, heat, target = setup(model)
    model = torch_model(net)
    ref = run_minilrp(net, x, heat, target)
    np.testing.assert_allclose(run_torch(model, x, heat, target), ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(run_quantus(model, x[:64], heat[:64], target[:64]),
                               ref[:64, :1] - ref[:64, 1:], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(run_minilrp(net, x, heat, target, skip=False), ref, rtol=1e-5, atol=1e-4)
    runs = {"minilrp": lambda: run_minilrp(net, x, heat, target),
            "minilrp, every step scored": lambda: run_minilrp(net, x, heat, target, skip=False),
            "torch hand-batched": lambda: run_torch(model, x, heat, target),
            "Quantus RegionPerturbation": lambda: run_quantus(model, x, heat, target)}
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, v in times.items():
        print(f"{name:28s} median {med[name]:.3f} s  ({', '.join(f'{t:.3f}' for t in v)})")
    print(f"ratio minilrp / Quantus:            {med['minilrp'] / med['Quantus RegionPerturbation']:.3f}")
    print(f"ratio minilrp / torch hand-batched: {med['minilrp'] / med['torch hand-batched']:.3f}")
    every = med["minilrp, every step scored"]
    print(f"every step scored: ratio / Quantus {every / med['Quantus RegionPerturbation']:.3f}, "
          f"/ torch {every / med['torch hand-batched']:.3f}")
    print(f"peak traced memory, {BATCH} / 1000 images: {peak_memory(net, x[:BATCH], heat[:BATCH], target[:BATCH]) / 2**20:.1f}"
          f" / {peak_memory(net, x, heat, target) / 2**20:.1f} MiB")


if __name__ == "__main__":
    import sys
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, *sys.argv[2:3])
