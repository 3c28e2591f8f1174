"""The scorer's one tunable, ``inference.Scorer.FULL`` (a window above that fraction of a layer's
output recomputes the layer whole): 49 steps of 500 images, each step one more 4x4 region set to
0 in a random order, for several values, best of 3 rounds each, on the bundled CNN and VGG:

    $MALLOC PYTHONPATH=. .venv/bin/python benchmarks/scorer_threshold.py
"""
import numpy as np

import minilrp
from minilrp.fast import inference
from timing import timings

N, STEPS, VALUES = 500, 49, (0.3, 0.45, 0.6, 0.8)


def region_steps(x, seed=0):
    """The images after each step: image n's regions (7 x 7 grid of 4 x 4) zeroed in its own order."""
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(STEPS) for _ in range(len(x))]
    cur, out = x.copy(), []
    for k in range(STEPS):
        for n, order in enumerate(orders):
            y, c = divmod(order[k], 7)
            cur[n, :, 4 * y:4 * y + 4, 4 * c:4 * c + 4] = 0
        out.append(cur.copy())
    return out


def curves(net, x, steps):
    scorer = inference.Scorer(net, x)
    for xk in steps:
        scorer.update(np.arange(len(x)), xk)


for model in ("fmnist-cnn", "fmnist-vgg"):
    net = minilrp.load_model(model)
    x = net.preprocess(np.resize(minilrp.load_samples()[0], (N, 28, 28)))
    steps = region_steps(x)
    best = {}
    for full in VALUES:
        inference.Scorer.FULL = full
        best[full] = min(timings(lambda: curves(net, x, steps), 3))
    print(f"{model}: " + ", ".join(f"FULL={f}: {t:.2f} s" for f, t in best.items()))
