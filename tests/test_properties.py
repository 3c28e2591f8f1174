"""Property test: for finite input, no heatmap of any preset or SA variant holds NaN or inf,
including all-zero images, dead ReLU layers (every unit off) and zero weights."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from minilrp import sensitivity as S
from minilrp import PRESETS


@st.composite
def networks(draw):
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    C, H = draw(st.integers(1, 3)), draw(st.integers(4, 9))
    shape = (C, H, H)
    layers = []
    mode = draw(st.sampled_from(["normal", "dead", "zero"]))

    def params(*shp):
        if mode == "zero":
            return np.zeros(shp)
        w = rng.standard_normal(shp)
        return -np.abs(w) if mode == "dead" else w
    for _ in range(draw(st.integers(1, 2))):
        K = draw(st.integers(1, min(3, shape[1])))
        Co = draw(st.integers(1, 4))
        layers += [Conv2d(shape[0], Co, K, stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, 1)),
                          weight=params(Co, shape[0], K, K), bias=params(Co)), ReLU()]
        shape = layers[-2].output_shape(shape)
        if shape[1] >= 2 and draw(st.booleans()):
            layers.append(draw(st.sampled_from([MaxPool2d(2, 1), MaxPool2d(2), AvgPool2d(2, 1)])))
            shape = layers[-1].output_shape(shape)
    layers.append(Flatten())
    n = int(np.prod(shape))
    layers += [Dense(n, 4, weight=params(4, n), bias=params(4)), ReLU(), Dense(4, 3, weight=rng.standard_normal((3, 4)), bias=rng.standard_normal(3))]
    net = Network(layers, (C, H, H)).astype(np.float64)
    kind = draw(st.sampled_from(["zeros", "ones", "uniform"]))
    x = {"zeros": np.zeros, "ones": np.ones}.get(kind, lambda s: rng.uniform(0, 1, s))((2, C, H, H))
    return net, x


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_no_nan_or_inf_in_any_heatmap(case):
    net, x = case
    for name in PRESETS:
        R = net.relevance(x, name)
        assert np.all(np.isfinite(R)), name
    for fn in (S.gradient, S.sa, S.gradient_x_input, S.abs_gradient):
        assert np.all(np.isfinite(fn(net, x)))
    assert np.all(np.isfinite(S.smoothgrad(net, x, n_samples=2)))
    assert np.all(np.isfinite(S.integrated_gradients(net, x, steps=3)))
