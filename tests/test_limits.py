"""At the edges: batches above the memory budget run in chunks with the results of one call;
non-finite values never come out silently (a clear error names the layer, the rule and the
likely cause); NaN weights are refused however they got there; the ledger accounts for every
unit of relevance under every rule, on both paths; a fuzz over random networks."""
import subprocess
import sys

import numpy as np
import pytest

import minilrp
from minilrp import (AlphaBeta, AvgPool2d, Composite, Conv2d, Dense, Epsilon, Flat, Flatten, Gamma, MaxPool2d,
                     MinilrpError, Network, Proportional, ReLU, WinnerTakeAll, WSquare, ZBox)
from minilrp import sensitivity
from test_lrp import images, relu_net


# ------------------------------------------------------------------------------ chunks
def test_chunks_give_the_results_of_one_call(rng):
    net = relu_net(rng)
    x = images(rng, 7)
    t = np.array([0, 1, 2, 0, 1, 2, 0])
    start = rng.uniform(0, 1, (7, 3))
    whole = {"logits": net.forward(x), "gradient": net.gradient(x, target=t),
             "weights": net.gradient(x, weights=start), "sa": sensitivity.sa(net, x),
             "ig": sensitivity.integrated_gradients(net, x, steps=4)}
    for fast in (True, False):
        whole[fast] = net.relevance(x, "EpsilonGammaBox", target=t, keep=True, fast=fast), net.ledger.rows
        whole["start", fast] = net.relevance(x, "EpsilonPlus", start=start, fast=fast)
    assert net.chunks(7, "relevance") == [slice(0, 7)]  # the default budget: one call
    sizes = [int(np.prod(s)) for s in net.shapes]
    net.memory_budget = 2 * 8 * (3 * sum(sizes) + 12 * max(sizes))  # two examples per relevance chunk
    assert [s.stop - s.start for s in net.chunks(7, "relevance")] == [2, 2, 2, 1]
    assert len(net.chunks(7, "forward")) < len(net.chunks(7, "relevance"))
    chunked = {"logits": net.forward(x), "gradient": net.gradient(x, target=t),
               "weights": net.gradient(x, weights=start), "sa": sensitivity.sa(net, x),
               "ig": sensitivity.integrated_gradients(net, x, steps=4)}
    for key, value in chunked.items():
        np.testing.assert_allclose(value, whole[key], rtol=1e-13, atol=1e-15, err_msg=key)
    for fast in (True, False):
        R = net.relevance(x, "EpsilonGammaBox", target=t, keep=True, fast=fast)
        np.testing.assert_allclose(R, whole[fast][0], rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(net.last_targets, t)
        for row, ref in zip(net.ledger.rows, whole[fast][1]):
            assert row.keys() == ref.keys()
            for k, v in ref.items():
                if isinstance(v, np.ndarray):
                    np.testing.assert_allclose(row[k], v, rtol=1e-13, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(net.relevance(x, "EpsilonPlus", start=start, fast=fast), whole["start", fast],
                                   rtol=1e-13, atol=1e-15)
    with pytest.raises(MinilrpError, match="5 targets for a batch of 7"):
        net.relevance(x, "LRP-0", target=[0] * 5)
    net.memory_budget = 100
    with pytest.raises(MinilrpError, match="one example needs about .* MiB for relevance.*memory_budget"):
        net.relevance(x[:1], "LRP-0")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc")
def test_relevance_of_20000_images_stays_within_its_memory():
    """LRP on 20,000 images with a 256 MiB budget, in a fresh process: the call's own peak
    resident memory (VmHWM, reset after loading and warming up, so numba compiling its kernels
    on a cold cache does not count) stays below 1 GiB."""
    code = (
        "import numpy as np, minilrp\n"
        "net = minilrp.load_model('fmnist-cnn')\n"
        "net.memory_budget = 256 << 20\n"
        "x = net.preprocess(np.tile(minilrp.load_samples()[0], (20, 1, 1)))\n"
        "net.relevance(x[:2], 'EpsilonGammaBox')\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "R = net.relevance(x, 'EpsilonGammaBox')\n"
        "assert R.shape == (20000, 1, 28, 28) and np.isfinite(R).all()\n"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1]) * 1024
    assert peak < 1 << 30, f"peak {peak / 2**20:.0f} MiB"


# ------------------------------------------------------------------------------ non-finite
def test_nan_weights_are_refused_however_they_got_there(rng):
    with pytest.raises(MinilrpError, match="Dense weight contains NaN or inf"):
        Dense(2, 2, weight=np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(MinilrpError, match="Conv2d bias contains NaN or inf"):
        Conv2d(1, 2, 3, bias=np.array([0.0, np.inf]))
    net = relu_net(rng)
    x = images(rng, 2)
    net.layers[3].weight[0, 0, 0, 0] = np.nan  # in place, after construction
    for call in (lambda: net.forward(x), lambda: net.gradient(x), lambda: net.relevance(x),
                 lambda: net.relevance(x, fast=False), lambda: sensitivity.sa(net, x)):
        with pytest.raises(MinilrpError, match=r"layer 3 \(Conv2d 4->6 .*\): its weight contain"):
            call()


def test_nan_in_a_max_pool_window_is_not_swallowed():
    """A NaN wins its max-pool window (as in PyTorch), so it reaches the output and is named."""
    net = Network([Conv2d(1, 1, 1, weight=np.ones((1, 1, 1, 1)), bias=np.zeros(1)), MaxPool2d(2), Flatten(),
                   Dense(4, 2, weight=np.ones((2, 4)))], (1, 4, 4)).astype(np.float64)
    x = np.ones((1, 1, 4, 4))
    net.forward(x)
    net.layers[0].weight[...] = np.nan
    with pytest.raises(MinilrpError, match="layer 0 .*its weight contain NaN"):
        net.forward(x)
    from minilrp.engine import kernels
    a = np.array([[[[1.0, np.nan], [3.0, 2.0]]]])
    out, arg = kernels.maxpool_forward(a, 2, 2)
    assert np.isnan(out).all()
    out3, _ = kernels.maxpool_forward(np.pad(a, ((0, 0), (0, 0), (0, 1), (0, 1))), 3, 1)
    assert np.isnan(out3).all()


def test_float32_overflow_names_the_layer_and_the_cure(rng):
    big = Network([Flatten(), Dense(4, 3, weight=np.full((3, 4), 1e20)), ReLU(), Dense(3, 2, weight=np.full((2, 3), 1e20))],
                  (1, 2, 2)).astype(np.float32)
    x = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(MinilrpError, match=r"layer 3 \(Dense 3->2\): float32 overflow.*net.astype\('float64'\)"):
        big.forward(x)
    big.astype(np.float64)
    assert np.isfinite(big.forward(x)).all()
    # finite logits, but w^2 overflows float32 inside the rule: named with the rule
    sq = Network([Flatten(), Dense(4, 2, weight=np.full((2, 4), 1e-3)), ReLU(), Dense(2, 2, weight=np.full((2, 2), 3e19))],
                 (1, 2, 2)).astype(np.float32)
    with pytest.raises(MinilrpError, match=r"layer 3 .* under WSquare.*float32 overflow"):
        sq.relevance(x, "WSquare")
    with pytest.raises(MinilrpError, match="beyond the range of float32"):
        sq.forward(np.full((1, 1, 2, 2), 1e39))


def test_preprocess_refuses_float_images_outside_0_1(rng):
    net = relu_net(rng)
    with pytest.raises(MinilrpError, match=r"float images must lie in \[0, 1\].*pass uint8, or divide by 255"):
        net.preprocess(rng.uniform(0, 255, (2, 8, 8)))
    with pytest.raises(MinilrpError, match=r"float images must lie in \[0, 1\]"):
        net.preprocess(np.full((1, 8, 8), -0.1))
    with pytest.raises(MinilrpError, match=r"float images must lie in \[0, 1\]"):
        net.preprocess(np.full((1, 8, 8), np.nan))
    assert net.preprocess(rng.uniform(0, 1, (2, 8, 8))).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("bad", [lambda: ZBox(low=float("nan")), lambda: ZBox(0.0, [0.0, np.inf]),
                                 lambda: AlphaBeta(float("nan"), 1.0), lambda: Gamma(float("inf")),
                                 lambda: Epsilon(relative="yes"), lambda: Flat(-1e-6)])
def test_every_rule_parameter_is_checked(bad, rng):
    net = relu_net(rng)
    with pytest.raises(MinilrpError, match="finite|True or False|>= 0"):
        net.relevance(images(rng, 1), bad())


# ------------------------------------------------------------------------------ ledger
RULES_EPS0 = [Epsilon(0.0), Gamma(0.25, epsilon=0.0), Gamma(1.0, epsilon=0.0, bias=False), AlphaBeta(2, 1, epsilon=0.0),
              AlphaBeta(1, 0, epsilon=0.0), AlphaBeta(3, 2, epsilon=0.0, bias=False), WSquare(0.0), Flat(0.0),
              ZBox(-1.0, 2.0, epsilon=0.0)]


@pytest.mark.parametrize("rule", RULES_EPS0, ids=lambda r: r.label())
@pytest.mark.parametrize("fast", [True, False])
def test_ledger_accounts_for_every_unit_at_eps_0(rule, fast, rng):
    """Zero denominators are common at eps = 0 after a ReLU (all-zero inputs, all-negative or
    all-positive weights): the relevance they drop is reported, so entering = leaving + bias +
    stabiliser + dropped at every layer, on both paths."""
    net = relu_net(rng)
    net.layers[3].weight[:3] = np.abs(net.layers[3].weight[:3])   # channels without negative part
    net.layers[7].weight[:2] = -np.abs(net.layers[7].weight[:2])  # units without positive part
    x = images(rng, 4)
    x[:, :, :4] = 0  # a blank band: zero inputs
    composite = Composite("eps0", default=rule if not isinstance(rule, ZBox) else Epsilon(0.0),
                          maxpool=Proportional(0.0), first=((Conv2d,), rule) if isinstance(rule, ZBox) else None)
    net.relevance(x, composite, fast=fast)
    scale = np.abs(net.ledger.rows[0]["entering"]).max()
    assert np.abs(net.ledger.residual()).max() <= 1e-9 * scale
    if isinstance(rule, AlphaBeta):
        rows = [r for r in net.ledger.rows if "positive" in r]
        assert all(np.allclose(r["positive"] - r["negative"], r["leaving"], rtol=1e-9, atol=1e-12 * scale) for r in rows)


# ------------------------------------------------------------------------------ fuzz
def random_net(rng, dtype, scale):
    """A random small network: convolutions, pools (max, average, overlapping), dense layers."""
    C, H = int(rng.integers(1, 3)), int(rng.integers(5, 9))
    layers, shape = [], (C, H, H)
    for _ in range(int(rng.integers(1, 3))):
        Co, K = int(rng.integers(1, 4)), int(rng.integers(1, min(4, shape[1] + 1)))
        layers += [Conv2d(shape[0], Co, K, stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, 2)),
                          weight=rng.standard_normal((Co, shape[0], K, K)) * scale, bias=rng.standard_normal(Co) * scale),
                   ReLU()]
        shape = layers[-2].output_shape(shape)
        if shape[1] >= 3 and rng.random() < 0.6:
            pool = MaxPool2d(2, int(rng.integers(1, 3))) if rng.random() < 0.5 else AvgPool2d(2, 1)
            layers.append(pool)
            shape = pool.output_shape(shape)
    n = int(np.prod(shape))
    layers += [Flatten(), Dense(n, 4, weight=rng.standard_normal((4, n)) * scale, bias=rng.standard_normal(4) * scale),
               ReLU(), Dense(4, 3, weight=rng.standard_normal((3, 4)) * scale)]
    return Network(layers, (C, H, H), input_range=(-3.0, 3.0)).astype(dtype)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow is the point: reported by our errors
def test_fuzz_random_networks_fail_only_with_our_errors_and_never_silently():
    rng = np.random.default_rng(20261203)
    methods = [lambda n, x: n.forward(x), lambda n, x: n.gradient(x), lambda n, x: sensitivity.sa(n, x),
               lambda n, x: sensitivity.gradient_x_input(n, x)]
    methods += [lambda n, x, p=p, f=f: n.relevance(x, p, fast=f) for p in minilrp.PRESETS for f in (True, False)]
    methods += [lambda n, x: n.relevance(x, Composite("wta1", default=Epsilon(), maxpool=WinnerTakeAll("first")))]
    outcomes = {"finite": 0, "error": 0}
    for k in range(240):
        dtype = (np.float32, np.float64)[k % 2]
        scale = 10.0 ** rng.choice([-30, -8, 0, 0, 0, 4, 10, 15, 20, 38])
        net = random_net(rng, dtype, scale)
        x = np.clip(rng.standard_normal((2,) + net.input_shape), -3, 3) * (10.0 ** rng.choice([0, 0, 5, 20]) if k % 7 == 0 else 1)
        for method in methods:
            try:
                out = method(net, x)
            except MinilrpError:
                outcomes["error"] += 1
                continue
            assert np.isfinite(out).all(), f"network {k} ({net.dtype}, scale {scale:g}): non-finite output without an error"
            outcomes["finite"] += 1
    assert outcomes["finite"] > 1000 and outcomes["error"] > 10, outcomes
