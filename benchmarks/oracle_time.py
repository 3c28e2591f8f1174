"""The oracle (each 4x4 region of 200 test images distorted alone, uniform noise, 4 draws: 200 x
49 x 4 scored images) on a bundled model, median of 3 after a warm-up; runs whichever minilrp
PYTHONPATH points at, so two checkouts compare in one session (the scorer's gain, BENCHMARKS.md):

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=<checkout> ~/.cache/minilrp-reference-venv/bin/python benchmarks/oracle_time.py fmnist-cnn
"""
import statistics
import sys

import minilrp
from minilrp import perturbation as P
from timing import timings

net = minilrp.load_model(sys.argv[1] if len(sys.argv) > 1 else "fmnist-cnn")
x = net.preprocess(minilrp.load_samples()[0][:200])
regions = P.grid(x.shape[2:], 4)
P.oracle_scores(net, x[:5], regions, "uniform", n_draws=1)  # warm-up (numba compile)
runs = []
times = timings(lambda: runs.append(P.oracle_scores(net, x, regions, "uniform", n_draws=4)), 3, warmup=0)
scores = runs[-1]
print(f"{minilrp.__file__}: {net.name} oracle of 200 images x 49 regions x 4 draws: median {statistics.median(times):.2f} s "
      f"({', '.join(f'{t:.2f}' for t in times)}); scores[0, :3] = {scores[0, :3]}")
