"""Peak memory of VGG-16 (224x224) explanations, each case in a fresh process.

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=. ~/.cache/minilrp-reference-venv/bin/python benchmarks/vgg16_memory.py

Cases: minilrp forward / SA gradient / EpsilonGammaBox LRP, PyTorch forward (no_grad) /
autograd SA, Zennit EpsilonGammaBox LRP; batch 1 and 8. Each child process builds its model,
reads its resident set (``setup``: libraries + weights + input), resets the kernel's peak-RSS
counter (``/proc/self/clear_refs`` 5), runs the task twice (warm-up + measured) and reads the
peak resident set ``VmHWM`` (``peak``, the whole process). ``work`` = peak - setup is what the
computation itself needs. The children inherit this process's environment, allocator settings
included.

The minilrp children never import torch: the parent imports VGG-16 once with ``from_torch``
and saves it in the minilrp format (cached in ``--cache``), the children ``minilrp.load`` it.
Needs torch (and zennit for the Zennit rows: run it with the reference venv's python).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = [("minilrp", "forward"), ("minilrp", "gradient"), ("minilrp", "lrp"),
         ("pytorch", "forward"), ("pytorch", "gradient"), ("zennit", "lrp")]


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB -> bytes
    raise KeyError(key)


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(impl, task, n, cache):
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO))
    import numpy as np
    from bench_vgg16 import images
    x = images(n)
    if impl == "minilrp":
        import minilrp
        net = minilrp.load(cache)
        run = {"forward": lambda: net.forward(x), "gradient": lambda: net.gradient(x),
               "lrp": lambda: net.relevance(x, "EpsilonGammaBox")}[task]
        exit_ = None
    else:
        import torch
        torch.set_num_threads(2)
        from bench_vgg16 import torch_forward, torch_gradient, vgg16_torch
        model = vgg16_torch(torch)
        if task == "forward":
            run, exit_ = torch_forward(torch, model, x), None
        elif task == "gradient":
            run, exit_ = torch_gradient(torch, model, x), None
        else:
            import zennit.composites as zc
            from zennit.attribution import Gradient
            tx = torch.from_numpy(x)
            lo = np.asarray([(0 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
            hi = np.asarray([(1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
            low = torch.from_numpy(np.broadcast_to(lo.reshape(1, 3, 1, 1), x.shape).astype(np.float32))
            high = torch.from_numpy(np.broadcast_to(hi.reshape(1, 3, 1, 1), x.shape).astype(np.float32))
            with torch.no_grad():
                mask = torch.nn.functional.one_hot(model(tx).argmax(1), 1000).to(tx.dtype)
            attributor = Gradient(model, zc.EpsilonGammaBox(low=low, high=high))
            attributor.__enter__()

            def run():
                return attributor(tx, lambda out: out * mask)
            exit_ = attributor
    setup_peak, setup = status("VmHWM"), status("VmRSS")
    reset_peak()
    t = time.perf_counter()
    run()
    first = time.perf_counter() - t
    t = time.perf_counter()
    run()
    second = time.perf_counter() - t
    peak = status("VmHWM")
    if exit_ is not None:
        exit_.__exit__(None, None, None)
    print(json.dumps({"impl": impl, "task": task, "n": n, "setup": setup, "setup_peak": setup_peak,
                      "peak": peak, "work": peak - setup, "seconds": [first, second]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--cache", default="/tmp/minilrp-vgg16-bench.npz",
                    help="where the imported VGG-16 is saved for the minilrp children")
    ap.add_argument("--only", help="comma-separated impls to run (minilrp,pytorch,zennit)")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "TASK", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, task, n = args.child
        return child(impl, task, int(n), args.cache)
    if not os.path.exists(args.cache):
        sys.path.insert(0, str(REPO / "benchmarks"))
        sys.path.insert(0, str(REPO))
        import torch
        import minilrp
        from bench_vgg16 import vgg16_torch
        from minilrp.models.importers import IMAGENET_MEAN, IMAGENET_STD, from_torch
        net = from_torch(vgg16_torch(torch), (3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)
        minilrp.save(args.cache, net)
        del net
    only = set(args.only.split(",")) if args.only else None
    rows = []
    print("| impl | task | batch | setup RSS | peak RSS | work (peak - setup) | time (2nd call) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for n in [int(b) for b in args.batches.split(",")]:
        for impl, task in CASES:
            if only and impl not in only:
                continue
            r = subprocess.run([sys.executable, __file__, "--cache", args.cache, "--child", impl, task, str(n)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"| {impl} | {task} | {n} | failed: {r.stderr.strip().splitlines()[-1:]} |||")
                continue
            row = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(row)
            gib = 1 << 30
            print(f"| {impl} | {task} | {n} | {row['setup'] / gib:.2f} GiB | {row['peak'] / gib:.2f} GiB | "
                  f"{row['work'] / gib:.2f} GiB | {row['seconds'][1]:.2f} s |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
