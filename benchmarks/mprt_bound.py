"""What the MPRT speed target of issue 17 asks of the hardware: the multiply-adds that
cascading model-parameter randomisation of 100 images with every default method needs on the
bundled LeNet CNN, and the time they take at the machine's sgemm peak (roofline.py), against
Quantus' time measured in the same run (bench_sanity.py) and the target ratio 0.2.

Counted as the least any engine must do: a forward of every distinct input (the image, shared
by SA, gradient, gradient x input and the LRP presets; SmoothGrad's 32 noisy copies; Integrated
Gradients' 32 scaled copies) and a backward per map (one gradient shared by the three gradient
methods, one per LRP preset, 32 + 32), each the multiply-adds of every Conv2d and Dense layer
(the first layer's input gradient included), nothing for pooling, ReLU, im2col or the
similarities, and LRP rules that need extra products (z+, gamma, alpha-beta) counted as one
backward. "With reuse": the forward of the layers below the lowest randomised layer computed
once per input for all randomisation steps (they are unchanged there), the least any reuse
across the cascade can reach.

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=.:benchmarks:tools ~/.cache/minilrp-reference-venv/bin/python benchmarks/mprt_bound.py [rounds]
"""
from __future__ import annotations

import math
import statistics
import sys

import bench_sanity as bs
from minilrp.engine.layers import Conv2d, Dense
from minilrp.evaluate import sanity as S
from roofline import sgemm_peak
from timing import timings

COPIES = {"smoothgrad": 32, "integrated_gradients": 32}  # inputs per image besides the image
GRADIENT = {"sa", "gradient", "gradient_x_input"}  # one gradient of the image between them


def macs(net):
    """Multiply-adds per image of each layer's forward (0 for layers without weights)."""
    out = []
    for layer, shape in zip(net.layers, net.shapes[1:]):  # shapes[0]: the input
        w = getattr(layer, "weight", None)
        k = math.prod(w.shape[1:]) if isinstance(layer, (Conv2d, Dense)) else 0
        out.append(k * math.prod(shape))  # each output value: one product per weight it reads
    return out


def main(rounds=3):
    net, model, x, t, explainers = bs.world()
    per_layer = macs(net)
    methods = bs.DEFAULT_METHODS
    inputs = len(x) * (1 + sum(COPIES.get(m, 0) for m in methods))
    backwards = len(x) * (sum(COPIES.get(m, 1) for m in methods if m not in GRADIENT | {"input"})
                          + bool(GRADIENT & set(methods)))
    steps = S.randomization_steps(net, "cascading")
    states = [()] + [layers for _, layers in steps]
    full = len(states) * (inputs + backwards) * sum(per_layer)
    # with reuse: the original's forward whole, each randomised state's from its lowest randomised layer up
    forward = sum(per_layer) + sum(sum(per_layer[min(layers):]) for layers in states[1:])
    reuse = inputs * forward + len(states) * backwards * sum(per_layer)
    peak = sgemm_peak() * 1e9
    quantus = statistics.median(timings(lambda: bs.run_quantus(model, x, t, explainers), rounds))
    print(f"{len(x)} images, {len(methods)} methods, {len(states)} states (original + {len(steps)} cascading "
          f"steps); per image and state {inputs // len(x)} forwards and {backwards // len(x)} backwards of "
          f"{sum(per_layer) / 1e6:.1f} M multiply-adds each")
    print(f"sgemm peak {peak / 1e9:.0f} GFLOP/s; Quantus MPRT median {quantus:.2f} s; target 0.2 x = {0.2 * quantus:.2f} s")
    for name, n in (("every pass whole", full), ("with reuse of the unchanged forward", reuse)):
        s = 2 * n / peak
        print(f"  {name:38s} {2 * n / 1e12:.2f} TFLOP: {s:.2f} s at peak = {s / quantus:.3f} x Quantus; "
              f"0.2 x Quantus needs {100 * s / (0.2 * quantus):.0f} % of peak sustained")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
