"""Two checkouts' engine kernels (minilrp/engine/kernels.py) in one process, alternated call
by call: conv2d of 1000 random images on five layer shapes (the LeNet's two convolutions and
three VGG-style 3x3 layers), float32, with a bias; medians of 9 calls each, and whether the two
outputs are equal bit for bit. Finer than code_ab.py (separate processes) for changes of a few
per cent in one kernel.

    git worktree add /tmp/old <commit>
    $MALLOC .venv/bin/python benchmarks/conv_ab.py /tmp/old [.]

($MALLOC = the allocator settings in BENCHMARKS.md.)
"""
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SHAPES = [(1, 32, 28, 5, 2), (32, 64, 14, 5, 2), (32, 32, 28, 3, 1), (64, 64, 14, 3, 1), (128, 128, 7, 3, 1)]


def kernels_of(checkout, name):
    spec = importlib.util.spec_from_file_location(name, Path(checkout) / "minilrp/engine/kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    old, new = kernels_of(sys.argv[1], "kernels_old"), kernels_of(sys.argv[2] if len(sys.argv) > 2 else ".", "kernels_new")
    rng = np.random.default_rng(0)
    for C, Co, H, K, pad in SHAPES:
        x = rng.standard_normal((1000, C, H, H)).astype(np.float32)
        w, b = rng.standard_normal((Co, C, K, K)).astype(np.float32), rng.standard_normal(Co).astype(np.float32)
        same = np.array_equal(old.conv2d(x, w, b, 1, pad), new.conv2d(x, w, b, 1, pad))  # also warms up
        times = {old: [], new: []}
        for r in range(9):
            for k in (old, new) if r % 2 else (new, old):
                t0 = time.perf_counter()
                k.conv2d(x, w, b, 1, pad)
                times[k].append(time.perf_counter() - t0)
        t_old, t_new = statistics.median(times[old]), statistics.median(times[new])
        print(f"{C:3d} -> {Co:3d} channels, {H}x{H}, {K}x{K}: old {t_old * 1e3:.1f} ms, new {t_new * 1e3:.1f} ms, "
              f"new / old {t_new / t_old:.3f}, {'bit for bit' if same else 'outputs differ'}")


if __name__ == "__main__":
    main()
