"""minilrp's sanity checks against Quantus 0.6 on the bundled CNN, where the definitions coincide.

tests/fixtures/quantus_sanity_reference.npz holds Quantus' MPRT (cascading, Spearman with and
without |.|, Quantus' 1-D SSIM of |.|) and random-logit scores for 8 images and four methods,
computed in the reference environment by tools/quantus_sanity_reference.py with torch + Zennit
explanations. Here the same weights are rebuilt (Quantus re-initialises a layer with
``torch.manual_seed(seed + 1); reset_parameters()``: regenerated with torch and checked against
the weights' fingerprints), minilrp explains with its own engine and scores with its own
similarity functions, and the numbers must agree to 1e-9 (they do to ~5e-14: float64 on both sides).
"""
import json
from pathlib import Path

import numpy as np
import pytest

import minilrp
from minilrp.evaluate import sanity as S
from minilrp.evaluate import similarity as sim

FIXTURE = Path(__file__).parent / "fixtures" / "quantus_sanity_reference.npz"
METHODS = {"gradient": "gradient", "gradient_x_input": "gradient_x_input",
           "EpsilonGammaBox": "EpsilonGammaBox", "EpsilonAlpha2Beta1": "EpsilonAlpha2Beta1"}


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as f:
        data = {k: f[k] for k in f.files}
    data["meta"] = json.loads(data["meta"].tobytes().decode())
    return data


def quantus_weights(net, seed):
    """{layer index: (weight, bias)} as Quantus' MPRT re-initialises them (float64 modules)."""
    torch = pytest.importorskip("torch")
    from torch import nn
    out = {}
    for i in S.parameter_layers(net):
        layer = net.layers[i]
        if isinstance(layer, minilrp.Conv2d):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
        else:
            m = nn.Linear(layer.in_features, layer.out_features)
        m = m.double()
        torch.manual_seed(seed + 1)
        m.reset_parameters()
        out[i] = (m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
    return out


@pytest.mark.slow
def test_mprt_and_random_logit_agree_with_quantus(ref):
    meta = ref["meta"]
    net = minilrp.load_model("fmnist-cnn", dtype="float64")
    x, t = ref["inputs"], ref["targets"]
    np.testing.assert_array_equal(net.forward(x).argmax(1), t)
    weights = quantus_weights(net, meta["seed"])
    for i, (w, b) in weights.items():  # the regenerated weights are Quantus' weights
        for name, v in (("weight", w), ("bias", b)):
            fp = ref[f"fingerprint.{i}.{name}"]
            np.testing.assert_array_equal(v.reshape(-1)[:len(fp) - 1], fp[:-1])
            np.testing.assert_allclose(v.sum(), fp[-1], rtol=1e-12)
    top_down = S.parameter_layers(net)[::-1]
    assert meta["mprt layers"] == ["original"] + [str(i) for i in top_down]
    methods = {k: S.method(v) for k, v in METHODS.items()}
    originals = {k: m.maps(net, x, t) for k, m in methods.items()}
    twin = S.copy_network(net)
    worst = 0.0
    for step, i in enumerate(top_down):  # cascading: layer i joins the randomised ones
        twin.layers[i].weight, twin.layers[i].bias = weights[i]
        for key, m in methods.items():
            a, r = originals[key], m.maps(twin, x, t)
            n = len(a)
            mine = {"spearman": sim.spearman(a, r),
                    "spearman_abs": sim.spearman(np.abs(a), np.abs(r)),
                    # Quantus compares flattened maps: its SSIM window runs along the 784-vector
                    "ssim_abs": sim.ssim(np.abs(a).reshape(n, -1), np.abs(r).reshape(n, -1))}
            for measure, v in mine.items():
                q = ref[f"mprt.{key}.{measure}"][step + 1]
                np.testing.assert_allclose(v, q, atol=1e-9, err_msg=f"{key} {measure} layer {i}")
                worst = max(worst, float(np.abs(v - q).max()))
    # random logit: the classes Quantus drew, minilrp's maps and Spearman
    for key, m in methods.items():
        r = S.random_logit(net, x, [m], target=t, others=ref["logit.others"])
        np.testing.assert_allclose(r["similarity"][m.name]["spearman"], ref[f"logit.{key}.spearman"], atol=1e-9)
    print(f"largest |minilrp - Quantus| over MPRT scores: {worst:.1e}")
    assert worst < 1e-9


def test_quantus_input_invariance_is_not_exact_on_a_padded_conv(ref):
    """Where the definitions differ, the difference is explained: Quantus compensates a padded
    first conv per channel with the smallest response to the constant image, which changes the
    model's function (logits move by tens), so it flags even the gradient; minilrp makes the
    padding part of the input and the logits stay equal to ~1e-14 (test_sanity tests the
    verdicts)."""
    assert ref["invariance.fmnist-cnn.logit_change"] > 1
    assert not ref["invariance.fmnist-cnn.gradient"].any()
    net = minilrp.load_model("fmnist-cnn")
    r = S.input_invariance(net, ref["inputs"].astype(np.float32), ["gradient"], ref["meta"]["shift"])
    assert r["logit_change"].max() < 1e-10
    assert r["invariant"]["Gradient"].all()
