"""Why threads lost on a busy machine: the same cases in one fresh process per thread
configuration (the environment variables a user would set), idle and under a background load
this script starts and stops itself, plus the two facts about OpenBLAS that shaped the fix.

    $MALLOC PYTHONPATH=. python benchmarks/thread_configs.py [--code DIR] [--load 2]
    $MALLOC PYTHONPATH=. python benchmarks/thread_configs.py --blas

Configurations: the defaults, MINILRP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1 and both. Cases
(bundled LeNet, 1000 images): forward, SA gradient, LRP EpsilonGammaBox, MoRF curves of 300
images (4x4 regions, 49 steps, constant-0 fill); medians in ms. ``--code DIR`` measures the
minilrp checked out in DIR (e.g. a ``git worktree`` of an older commit) instead of this one.
``--load N`` busy pure-Python processes (``while True: pass``) make the loaded phase.

``--blas`` prints (1) how far OpenBLAS's products move between 1 and 2 of its threads for a
few shapes (a thread count that followed the load would make results follow it too), and
(2) one image's second LeNet convolution GEMM (64 x 800 by 800 x 196) whole on one thread,
split in two pieces over minilrp's pool, and on OpenBLAS's 2 threads, in microseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np
from timing import timings

CONFIGS = {"defaults": {}, "MINILRP_NUM_THREADS=1": {"MINILRP_NUM_THREADS": "1"},
           "OPENBLAS_NUM_THREADS=1": {"OPENBLAS_NUM_THREADS": "1"},
           "both 1": {"MINILRP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}}


def median_ms(fn, reps):
    return statistics.median(timings(fn, reps)) * 1e3


def child():
    from minilrp import load_model, load_samples
    from minilrp import perturbation as P
    net = load_model("fmnist-cnn")
    x = net.preprocess(load_samples()[0][:1000])
    target = net.forward(x).argmax(1)
    regions = P.grid(x.shape[1:], 4)
    order = P.order_regions(P.region_scores(net.relevance(x[:300], "EpsilonPlusFlat"), regions), "morf")
    times = [median_ms(lambda: net.forward(x), 7), median_ms(lambda: net.gradient(x), 5),
             median_ms(lambda: net.relevance(x, "EpsilonGammaBox"), 3),
             median_ms(lambda: P.perturbation_curves(net, x[:300], regions, order, "constant:0",
                                                     target=target[:300], batch_size=512), 3)]
    print(json.dumps([round(t) for t in times]))


def run_configs(code, n_load):
    rows = {}
    for phase in ("idle", "loaded"):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_load if phase == "loaded" else 0)]
        try:
            for name, env in CONFIGS.items():
                out = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONPATH": code, **env}).stdout
                rows.setdefault(name, {})[phase] = json.loads(out.splitlines()[-1])
        finally:
            for p in busy:
                p.kill()
                p.wait()
    print(f"minilrp from {code}; loaded = {n_load} busy processes; medians in ms: forward / gradient / "
          "EpsilonGammaBox LRP / curves of 300 images\n\n| configuration | idle | loaded |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {' / '.join(map(str, r['idle']))} | {' / '.join(map(str, r['loaded']))} |")


def blas_facts():
    from threadpoolctl import threadpool_limits
    from minilrp.engine import kernels
    rng = np.random.default_rng(0)
    print("OpenBLAS, 1 against 2 threads: max |difference| of a @ b")
    for m, k, n in [(1000, 400, 120), (120, 1000, 400), (300, 2000, 700), (64, 800, 2548)]:
        for dt in (np.float32, np.float64):
            a, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt)
            with threadpool_limits(1, "blas"):
                one = a @ b
            with threadpool_limits(2, "blas"):
                two = a @ b
            print(f"  ({m} x {k}) @ ({k} x {n}) {dt.__name__}: {np.abs(one - two).max():.3g}")
    a = rng.random((64, 800), dtype=np.float32)
    b = rng.random((800, 196), dtype=np.float32)
    out = np.empty((64, 196), np.float32)

    def halves():
        kernels.each(2, lambda i, _: np.matmul(a[32 * i:32 * (i + 1)], b, out=out[32 * i:32 * (i + 1)]))
    with kernels.one_blas_thread():
        whole, split = median_ms(lambda: np.matmul(a, b, out=out), 2000), median_ms(halves, 2000)
    with threadpool_limits(2, "blas"):
        blas2 = median_ms(lambda: np.matmul(a, b, out=out), 2000)
    print(f"64 x 800 by 800 x 196: whole on one thread {whole * 1e3:.0f} us, two pieces on minilrp's pool "
          f"{split * 1e3:.0f} us, OpenBLAS on 2 threads {blas2 * 1e3:.0f} us (medians of 2000)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", default=os.getcwd(), help="the folder holding the minilrp package to measure")
    ap.add_argument("--load", type=int, default=2)
    ap.add_argument("--blas", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child()
    elif args.blas:
        blas_facts()
    else:
        run_configs(os.path.abspath(args.code), args.load)


if __name__ == "__main__":
    main()
