"""LRP on the bundled LeNet at batch 1: where the time goes, measured inside one process.

    $MALLOC PYTHONPATH=. ~/.cache/minilrp-reference-venv/bin/python benchmarks/lrp_batch1.py interleaved
    $MALLOC PYTHONPATH=. python benchmarks/lrp_batch1.py steps [--preset EpsilonPlusFlat]
    $MALLOC PYTHONPATH=. python benchmarks/lrp_batch1.py derived

``interleaved``: minilrp and Zennit (bench_lrp's runner) alternate in blocks of 30 calls,
20 blocks, so both see the same machine phases; prints medians, the ratio of medians and the
10th percentiles. ``steps``: the forward and each rule's ``relevance`` timed through
wrappers (10th percentile and median per call); the rest of the call (targets, ledger,
set-up) is the total minus their sum. ``derived``: A/B of the kept rule-modified weights
(``rules._derived``) against rebuilding them on every call, alternating blocks.
($MALLOC = the allocator settings in BENCHMARKS.md.)
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from minilrp import load_model, load_samples, network, rules  # noqa: E402

PRESETS = ("EpsilonGammaBox", "EpsilonPlusFlat")


def blocks(fns, n_blocks=20, per_block=30, before=None):
    """Alternate fns (name -> callable) in blocks; before(name) runs ahead of each block."""
    times = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(20):
            f()
    for _ in range(n_blocks):
        for k, f in fns.items():
            if before:
                before(k)
            for _ in range(per_block):
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return {k: np.array(v) * 1e3 for k, v in times.items()}


def interleaved(net, x):
    import torch
    torch.set_num_threads(2)
    from bench_lrp import zennit_runner
    fns = {}
    for p in PRESETS:
        fns[p, "minilrp"] = lambda p=p: net.relevance(x, p)
        fns[p, "zennit"] = zennit_runner(net, x, p)
    t = blocks(fns)
    for p in PRESETS:
        m, z = t[p, "minilrp"], t[p, "zennit"]
        print(f"{p}: minilrp {np.median(m):.3f} ms, zennit {np.median(z):.3f} ms, ratio "
              f"{np.median(m) / np.median(z):.3f} (p10 {np.percentile(m, 10):.3f} / {np.percentile(z, 10):.3f} ms)")


def steps(net, x, preset):
    acc = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            acc.setdefault(name, []).append(time.perf_counter() - t)
            return out
        return wrapper

    classes = {type(r) for r in net._rules(preset, {}) if r is not None}
    for cls in classes:
        cls.relevance = timed(cls.__name__, cls.relevance)
    network.Network._forward_for = timed("forward", network.Network._forward_for)
    total = blocks({"total": lambda: net.relevance(x, preset)})["total"]
    n = len(total)
    print(f"{preset}, batch 1: total p10 {np.percentile(total, 10):.3f} ms, median {np.median(total):.3f} ms")
    parts = 0.0
    for name, v in acc.items():
        v = np.array(v[-n * (len(v) // n):]).reshape(n, -1).sum(axis=1) * 1e3  # per call
        parts += np.median(v)
        print(f"  {name:15s} p10 {np.percentile(v, 10):.3f} ms  median {np.median(v):.3f} ms")
    print(f"  {'rest':15s} median {np.median(total) - parts:.3f} ms (targets, initial relevance, ledger, set-up)")


def derived(net, x):
    kept = rules._derived
    rebuilt = lambda layer, key, make, ctx=None: make(layer.weight)  # noqa: E731
    fns = {(p, mode): (lambda p=p: net.relevance(x, p)) for p in PRESETS for mode in ("kept", "rebuilt")}
    t = blocks(fns, before=lambda k: setattr(rules, "_derived", kept if k[1] == "kept" else rebuilt))
    rules._derived = kept
    for p in PRESETS:
        a, b = np.median(t[p, "kept"]), np.median(t[p, "rebuilt"])
        print(f"{p}: kept {a:.3f} ms, rebuilt every call {b:.3f} ms ({(b - a) / b * 100:+.1f}% of the call)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("interleaved", "steps", "derived"))
    ap.add_argument("--preset", default="EpsilonPlusFlat", choices=PRESETS)
    args = ap.parse_args()
    net = load_model("fmnist-cnn")
    x = net.preprocess(load_samples()[0][:1])
    {"interleaved": lambda: interleaved(net, x), "steps": lambda: steps(net, x, args.preset),
     "derived": lambda: derived(net, x)}[args.mode]()


if __name__ == "__main__":
    main()
