"""Speed on a busy machine: the same-run ratios against PyTorch, idle and under a fixed
background load that this script starts and stops itself (LOAD busy pure-Python processes,
``while True: pass``, default 2 on this 2-core machine), on the bundled LeNet CNN, 1000
Fashion-MNIST images: forward (``Network.forward``, which keeps every layer's cache, and the
inference forward of minilrp/fast/inference.py, which keeps none, as torch's inference_mode),
SA gradient, LRP EpsilonPlusFlat, MoRF curves (4x4 regions, 49 steps), minilrp with its
defaults and with one thread, against torch (2 threads), autograd, Zennit and the
hand-batched PyTorch curve loop of bench_perturbation.py.

Every round runs every (case, implementation) once, in an order that rotates from round to
round, so all see the same machine phases; the table gives medians over the rounds, the
spread (min-max) and, per case, minilrp / peer idle and loaded and loaded / idle of that ratio.

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=.:benchmarks ~/.cache/minilrp-reference-venv/bin/python benchmarks/contention.py [--rounds 5] [--load 2]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import bench_perturbation as bp
from bench_lrp import autograd_runner, zennit_runner
from minilrp.engine import kernels
from minilrp.fast import inference
from peers import to_torch


def cases():
    torch.set_num_threads(2)
    net, x, heat, target = bp.setup()
    model, tx = to_torch(net), torch.from_numpy(x)
    grad_peer, lrp_peer = autograd_runner(net, x), zennit_runner(net, x, "EpsilonPlusFlat")

    def forward_peer():
        with torch.inference_mode():
            return model(tx)
    return {
        "LeNet forward, batch 1000": (lambda: net.forward(x), forward_peer, "torch"),
        # what torch's inference_mode forward computes: the logits, no caches kept
        "LeNet inference forward, batch 1000": (lambda: inference.logits(net, x), forward_peer, "torch"),
        "SA gradient, batch 1000": (lambda: net.gradient(x), grad_peer, "autograd"),
        "LRP EpsilonPlusFlat, batch 1000": (lambda: net.relevance(x, "EpsilonPlusFlat"), lrp_peer, "zennit"),
        "MoRF curves, 1000 images x 49 steps": (lambda: bp.run_minilrp(net, x, heat, target),
                                                 lambda: bp.run_torch(model, x, heat, target), "torch loop"),
    }


def one_thread(fn):
    def run():
        saved, kernels.THREADS = kernels.THREADS, 1
        try:
            return fn()
        finally:
            kernels.THREADS = saved
    return run


def measure(table, rounds):
    runs = [(case, impl, fn) for case, (mine, peer, _) in table.items()
            for impl, fn in (("minilrp", mine), ("minilrp 1 thread", one_thread(mine)), ("peer", peer))]
    for _, _, fn in runs:  # warm up (numba, torch, caches)
        fn()
    times = {(case, impl): [] for case, impl, _ in runs}
    for r in range(rounds):
        k = r % 3  # rotate which implementation of a case goes first
        for case in table:
            mine = [run for run in runs if run[0] == case]
            for c, impl, fn in mine[k:] + mine[:k]:
                t0 = time.perf_counter()
                fn()
                times[c, impl].append(time.perf_counter() - t0)
    return times


def fmt(ts):
    med = statistics.median(ts)
    unit, f = ("s", 1) if med >= 1 else ("ms", 1e3)
    return f"{med * f:.3g} {unit} ({min(ts) * f:.3g}-{max(ts) * f:.3g})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--load", type=int, default=2, help="busy background processes in the loaded phase")
    args = ap.parse_args()
    table = cases()
    results = {"idle": measure(table, args.rounds)}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        time.sleep(1)
        results["loaded"] = measure(table, args.rounds)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    print(f"{args.rounds} rounds; loaded = {args.load} busy pure-Python processes on "
          f"{len(__import__('os').sched_getaffinity(0))} cores; medians (min-max)\n")
    print("| case | phase | minilrp | minilrp 1 thread | peer | peer median | minilrp / peer | "
          "default / 1 thread |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    ratios = {}
    for case, (_, _, peer) in table.items():
        for phase, times in results.items():
            med = {impl: statistics.median(times[case, impl]) for impl in ("minilrp", "minilrp 1 thread", "peer")}
            ratios[case, phase] = med["minilrp"] / med["peer"]
            print(f"| {case} | {phase} | {fmt(times[case, 'minilrp'])} | {fmt(times[case, 'minilrp 1 thread'])} | "
                  f"{peer} | {fmt(times[case, 'peer'])} | {ratios[case, phase]:.2f} | "
                  f"{med['minilrp'] / med['minilrp 1 thread']:.2f} |")
    print("\n| case | ratio idle | ratio loaded | loaded / idle |\n|---|---:|---:|---:|")
    for case in table:
        i, l = ratios[case, "idle"], ratios[case, "loaded"]
        print(f"| {case} | {i:.2f} | {l:.2f} | {l / i:.2f} |")


if __name__ == "__main__":
    main()
