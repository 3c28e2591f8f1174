"""Model-parameter randomisation, cascading from the top: 100 Fashion-MNIST test images, every
method of ``python -m minilrp.experiments sanity`` (the input control, SA, gradient, gradient x
input, SmoothGrad 32 samples, Integrated Gradients 32 steps, LRP-0, EpsilonGammaBox,
EpsilonPlusFlat, EpsilonPlus, EpsilonAlpha2Beta1) on the bundled LeNet CNN: minilrp's
``sanity.mprt`` against Quantus' ``MPRT`` (``layer_order="top_down"``) with the explanations a
user would pick (Captum's NoiseTunnel and IntegratedGradients, Zennit's composites, autograd), in
the same run, in the same process, float32 on both sides.

The work is not identical to minilrp's disadvantage: Quantus computes one similarity (Spearman,
its default) per call, minilrp four (Spearman signed and of |.|, 2-D SSIM, top-k); Captum batches
SmoothGrad's and IG's 32 copies into one forward of 3200 images, minilrp runs 32 batches of 100.

Needs the reference environment plus numba, scipy, matplotlib, pytest-benchmark in it
(../shared/reference-env/setup.sh, see benchmarks/conftest.py):

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=.:benchmarks:tools ~/.cache/minilrp-reference-venv/bin/python benchmarks/bench_sanity.py 3

prints the medians over 3 interleaved rounds and the ratio (``... bench_sanity.py 3 smoothgrad,
integrated_gradients`` leaves those methods out: they are 32 gradient passes each and dominate
both sides); ``-m pytest benchmarks/bench_sanity.py`` runs it under pytest-benchmark.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from minilrp import load_model, load_samples  # noqa: E402
from minilrp.evaluate import sanity as S  # noqa: E402
from minilrp.evaluate.sanity_study import DEFAULT_METHODS  # noqa: E402

torch = pytest.importorskip("torch")
quantus = pytest.importorskip("quantus")
captum = pytest.importorskip("captum")

N_IMAGES, SEED = 100, 0
LRP = ("LRP-0", "EpsilonGammaBox", "EpsilonPlusFlat", "EpsilonPlus", "EpsilonAlpha2Beta1")


def setup():
    torch.set_num_threads(2)
    net = load_model("fmnist-cnn")
    images, _, _ = load_samples()
    x = net.preprocess(images[:N_IMAGES])
    t = net.forward(x).argmax(1)
    return net, x, t


def peer_explainers(record):
    """{method: explain_func(model, inputs, targets) -> (N, 1, H, W) float32} as a PyTorch user
    would write them: autograd, Captum, Zennit (stock max-pool gradient)."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    from zennit.attribution import Gradient
    from zennit_reference import zennit_composite

    def grad(model, x, t):
        xt = torch.from_numpy(np.asarray(x, np.float32)).requires_grad_(True)
        out = model(xt)
        out[torch.arange(len(x)), torch.as_tensor(t)].sum().backward()
        return xt.grad.numpy()

    def smoothgrad(model, inputs, targets, **kw):
        x, t = inputs, targets
        nt = NoiseTunnel(Saliency(model))
        return nt.attribute(torch.from_numpy(np.asarray(x, np.float32)), nt_type="smoothgrad", nt_samples=32,
                            stdevs=0.15, target=torch.as_tensor(t), abs=False).detach().numpy()

    def ig(model, inputs, targets, **kw):
        x, t = inputs, targets
        return IntegratedGradients(model).attribute(
            torch.from_numpy(np.asarray(x, np.float32)), target=torch.as_tensor(t), n_steps=32,
            method="riemann_middle").detach().numpy()

    def lrp(name):
        def fn(model, inputs, targets, **kw):
            x, t = np.asarray(inputs, np.float32), targets
            comp = zennit_composite(name, record, x.astype(np.float64))
            xt = torch.from_numpy(x).requires_grad_(True)
            onehot = torch.zeros(len(x), 10)
            onehot[torch.arange(len(x)), torch.as_tensor(t)] = 1
            with Gradient(model=model, composite=comp) as attributor:
                _, R = attributor(xt, lambda out: out.detach() * onehot)
            return R.detach().numpy()
        return fn

    # Quantus calls explain_func(model=, inputs=, targets=, ...)
    out = {"input": lambda model, inputs, targets, **kw: np.asarray(inputs, np.float32),
           "sa": lambda model, inputs, targets, **kw: (grad(model, inputs, targets) ** 2).sum(1, keepdims=True),
           "gradient": lambda model, inputs, targets, **kw: grad(model, inputs, targets),
           "gradient_x_input": lambda model, inputs, targets, **kw: np.asarray(inputs, np.float32) * grad(
               model, inputs, targets),
           "smoothgrad": smoothgrad, "integrated_gradients": ig}
    out.update({name: lrp(name) for name in LRP})
    return out


def bounds_as_float32():
    """Zennit's EpsilonGammaBox gets its bounds from tools/zennit_reference.input_bounds in float64;
    a float32 model needs float32 bounds: patch that helper for this process."""
    import zennit_reference as Z
    original = Z.input_bounds

    def input_bounds(record, x):
        low, high = original(record, x)
        return low.astype(np.float32), high.astype(np.float32)
    Z.input_bounds = input_bounds


def run_minilrp(net, x, t, methods=DEFAULT_METHODS):
    return S.mprt(net, x, methods, "cascading", target=t, seed=SEED)


def run_quantus(model, x, t, explainers, methods=DEFAULT_METHODS):
    scores = {}
    for name in methods:
        metric = quantus.MPRT(layer_order="top_down", seed=SEED, disable_warnings=True, display_progressbar=False)
        scores[name] = metric(model=model, x_batch=x, y_batch=t, a_batch=None, explain_func=explainers[name],
                              batch_size=N_IMAGES, device="cpu", channel_first=True)
    return scores


def world():
    from peers import to_torch
    from zennit_reference import REPO, read_weight_file
    bounds_as_float32()
    net, x, t = setup()
    model = to_torch(net)
    record, _ = read_weight_file(REPO / "weights" / "fmnist-cnn.npz")
    return net, model, x, t, peer_explainers(record)


@pytest.mark.parametrize("impl", ["minilrp", "quantus"])
def test_mprt_cascading_100_images_all_methods(benchmark, impl):
    from conftest import median_run
    net, model, x, t, explainers = world()
    benchmark.group = "sanity: MPRT cascading, 100 images, 11 methods, LeNet"
    fn = {"minilrp": lambda: run_minilrp(net, x, t), "quantus": lambda: run_quantus(model, x, t, explainers)}[impl]
    median_run(benchmark, fn, rounds=3)


def main(rounds=3, without=()):
    methods = [m for m in DEFAULT_METHODS if m not in without]
    print(f"{N_IMAGES} images, methods: {', '.join(methods)}")
    net, model, x, t, explainers = world()
    r = run_minilrp(net, x, t, methods)  # warm-up (numba compile), and the sanity of both results:
    q = run_quantus(model, x, t, explainers, methods)  # Quantus' rows: original, then layers top down
    assert list(q["gradient"]) == ["original", "9", "7", "3", "0"]
    print("mean Spearman |.| with every layer randomised, minilrp / Quantus (different random weights):")
    for name, m in zip(methods, S.methods_from(methods)):
        print(f"  {m.name:24s} {np.nanmean(r.similarity[m.name]['spearman_abs'][-1]):6.3f} "
              f"{np.nanmean(q[name]['0']):6.3f}")
    runs = {"minilrp sanity.mprt": lambda: run_minilrp(net, x, t, methods),
            "Quantus MPRT": lambda: run_quantus(model, x, t, explainers, methods)}
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, v in times.items():
        print(f"{name:22s} median {med[name]:.2f} s  ({', '.join(f'{s:.2f}' for s in v)})")
    print(f"ratio minilrp / Quantus: {med['minilrp sanity.mprt'] / med['Quantus MPRT']:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, sys.argv[2].split(",") if len(sys.argv) > 2 else ())
