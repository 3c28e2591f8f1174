"""LRP on the bundled LeNet at batch 1: where the time goes, measured inside one process.

    $MALLOC PYTHONPATH=. ~/.cache/minilrp-reference-venv/bin/python benchmarks/lrp_batch1.py interleaved
    $MALLOC PYTHONPATH=. python benchmarks/lrp_batch1.py steps [--preset EpsilonPlusFlat] [--path reference]
    $MALLOC PYTHONPATH=. python benchmarks/lrp_batch1.py derived

``interleaved``: minilrp's fast path, its reference path (``fast=False``) and Zennit
(bench_lrp's runner) alternate in blocks of 30 calls, 20 blocks, so all see the same machine
phases; prints medians, the ratios of medians to Zennit's and the 10th percentiles.
``steps``: the forward and each layer's rule (the fast twin, or with ``--path reference``
the reference rule) timed through wrappers (10th percentile and median per call); the rest
of the call (targets, ledger, set-up) is the total minus their sum. ``derived``: A/B of the
fast path's kept rule-modified weights (``fast.rules.kept``) against rebuilding them on every
call, alternating blocks. ($MALLOC = the allocator settings in BENCHMARKS.md.)
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from minilrp import load_model, load_samples  # noqa: E402
from minilrp.fast import relevance as fast_relevance, rules as fast_rules  # noqa: E402

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
        fns[p, "fast"] = lambda p=p: net.relevance(x, p)
        fns[p, "reference"] = lambda p=p: net.relevance(x, p, fast=False)
        fns[p, "zennit"] = zennit_runner(net, x, p)
    t = blocks(fns)
    for p in PRESETS:
        f, r, z = (t[p, k] for k in ("fast", "reference", "zennit"))
        print(f"{p}: minilrp fast {np.median(f):.3f} ms, reference {np.median(r):.3f} ms, zennit "
              f"{np.median(z):.3f} ms; ratio to zennit: fast {np.median(f) / np.median(z):.3f}, reference "
              f"{np.median(r) / np.median(z):.3f} (p10 {np.percentile(f, 10):.3f} / {np.percentile(r, 10):.3f} / "
              f"{np.percentile(z, 10):.3f} ms)")


def steps(net, x, preset, path):
    acc = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            acc.setdefault(name, []).append(time.perf_counter() - t)
            return out
        return wrapper

    from minilrp import get_composite
    classes = {type(r) for r in get_composite(preset).rules(net) if r is not None}
    fast = path == "fast"
    for cls in classes:
        if fast and cls in fast_rules.TWINS:
            fast_rules.TWINS[cls] = timed(cls.__name__, fast_rules.TWINS[cls])
        else:
            cls.relevance = timed(cls.__name__, cls.relevance)
    if fast:
        fast_relevance.forward = timed("forward", fast_relevance.forward)
    else:
        net.forward = timed("forward", net.forward)
    total = blocks({"total": lambda: net.relevance(x, preset, fast=fast)})["total"]
    n = len(total)
    print(f"{preset}, batch 1, {path} path: total p10 {np.percentile(total, 10):.3f} ms, median {np.median(total):.3f} ms")
    parts = 0.0
    for name, v in acc.items():
        v = np.array(v[-n * (len(v) // n):]).reshape(n, -1).sum(axis=1) * 1e3  # per call
        parts += np.median(v)
        print(f"  {name:15s} p10 {np.percentile(v, 10):.3f} ms  median {np.median(v):.3f} ms")
    print(f"  {'rest':15s} median {np.median(total) - parts:.3f} ms (targets, initial relevance, ledger, set-up)")


def derived(net, x):
    kept = fast_rules.kept
    rebuilt = lambda ctx, layer, key, make: make(layer.weight)  # noqa: E731
    fns = {(p, mode): (lambda p=p: net.relevance(x, p)) for p in PRESETS for mode in ("kept", "rebuilt")}
    t = blocks(fns, before=lambda k: setattr(fast_rules, "kept", kept if k[1] == "kept" else rebuilt))
    fast_rules.kept = kept
    for p in PRESETS:
        a, b = np.median(t[p, "kept"]), np.median(t[p, "rebuilt"])
        print(f"{p}: kept {a:.3f} ms, rebuilt every call {b:.3f} ms ({(b - a) / b * 100:+.1f}% of the call)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("interleaved", "steps", "derived"))
    ap.add_argument("--preset", default="EpsilonPlusFlat", choices=PRESETS)
    ap.add_argument("--path", default="fast", choices=("fast", "reference"))
    args = ap.parse_args()
    net = load_model("fmnist-cnn")
    x = net.preprocess(load_samples()[0][:1])
    {"interleaved": lambda: interleaved(net, x), "steps": lambda: steps(net, x, args.preset, args.path),
     "derived": lambda: derived(net, x)}[args.mode]()


if __name__ == "__main__":
    main()
