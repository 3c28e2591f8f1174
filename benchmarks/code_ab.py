"""A/B of two checkouts of minilrp on the same machine, alternated: each round runs the old
code, then the new, each in its own process (so each imports its own minilrp), on a bundled
model and the bundled test images. Times: batch 1 (forward, SA gradient, LRP EpsilonPlusFlat;
min and median over 15 blocks of 100 calls) and batch 1000 (forward, inference forward,
gradient, LRP fast and reference path; medians of 5 calls). ``--compare``: instead of times,
whether the two give the same numbers (300 images, float32 and float64: logits, inference
logits, SA gradient, LRP fast and reference path), bit for bit or the largest difference
relative to the largest value.

    git worktree add /tmp/old <commit>
    $MALLOC python benchmarks/code_ab.py /tmp/old . [--model fmnist-cnn] [--rounds 2] [--compare]

($MALLOC = the allocator settings in BENCHMARKS.md.) Only old against new: no peer here.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def block_times(fn, blocks, calls):
    out = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t0) / calls)
    return out


def worker(model):
    from minilrp import load_model, load_samples
    net = load_model(model)
    x = net.preprocess(load_samples()[0][:1000])
    x1 = x[:1]
    small = {"forward": lambda: net.forward(x1), "gradient": lambda: net.gradient(x1),
             "LRP EpsilonPlusFlat": lambda: net.relevance(x1, "EpsilonPlusFlat")}
    large = {"forward": lambda: net.forward(x), "gradient": lambda: net.gradient(x),
             "LRP EpsilonPlusFlat": lambda: net.relevance(x, "EpsilonPlusFlat"),
             "LRP reference path": lambda: net.relevance(x, "EpsilonPlusFlat", fast=False)}
    try:
        from minilrp.fast import inference
        large["inference forward"] = lambda: inference.logits(net, x)
    except ImportError:  # a checkout before the inference forward
        pass
    parts = []
    for name, fn in small.items():
        block_times(fn, 2, 50)
        ts = block_times(fn, 15, 100)
        parts.append(f"b1 {name} {min(ts) * 1e3:.3f}/{statistics.median(ts) * 1e3:.3f} ms")
    for name, fn in large.items():
        fn()
        parts.append(f"b1000 {name} {statistics.median(block_times(fn, 5, 1)) * 1e3:.1f} ms")
    print("; ".join(parts))


def outputs(model, path):
    from minilrp import load_model, load_samples
    from minilrp.fast import inference
    res = {}
    for dtype in (np.float32, np.float64):
        net = load_model(model, dtype=dtype)
        x = net.preprocess(load_samples()[0][:300]).astype(dtype)
        key = np.dtype(dtype).name
        res[f"{key} logits"], res[f"{key} inference logits"] = net.forward(x), inference.logits(net, x)
        res[f"{key} SA gradient"] = net.gradient(x)
        res[f"{key} LRP EpsilonPlusFlat"] = net.relevance(x, "EpsilonPlusFlat")
        res[f"{key} LRP EpsilonGammaBox, reference path"] = net.relevance(x, "EpsilonGammaBox", fast=False)
    np.savez(path, **res)


def run(checkout, *args):
    """This script as a worker in its own process, importing the minilrp of ``checkout``."""
    root = os.path.abspath(checkout)
    return subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *args], cwd=root,
                          env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True, check=True).stdout


def compare(args):
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"{label}.npz") for label in ("old", "new")]
        for checkout, path in zip((args.old, args.new), paths):
            run(checkout, "--model", args.model, "--save", path)
        old, new = (np.load(p) for p in paths)
        for key in old.files:
            a, b = old[key], new[key]
            diff = np.abs(a - b).max() / np.abs(a).max()
            print(f"{args.model}, {key}: " + ("bit for bit" if np.array_equal(a, b) else
                                              f"{np.count_nonzero(a != b)} of {a.size} differ, largest {diff:.1e} of the largest value"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", nargs="?", help="the checkout of the old code (required)")
    ap.add_argument("new", nargs="?", default=".")
    ap.add_argument("--model", default="fmnist-cnn")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compare", action="store_true", help="compare the numbers, not the times")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return outputs(args.model, args.save) if args.save else worker(args.model)
    if args.old is None:
        ap.error("the old checkout is required")
    if args.compare:
        return compare(args)
    for r in range(args.rounds):
        for label, checkout in (("old", args.old), ("new", args.new)):
            out = run(checkout, "--model", args.model)
            print(f"round {r + 1}, {label} ({checkout}), {args.model}: {out.strip()}", flush=True)


if __name__ == "__main__":
    main()
