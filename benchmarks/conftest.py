"""Benchmarks: minilrp against the peer a user would pick instead, measured in the same run.

Run (peers need the reference venv: bash ../shared/reference-env/setup.sh, plus
`pip install numba scipy matplotlib pytest-benchmark` into it):

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \\
    PYTHONPATH=. ~/.cache/minilrp-reference-venv/bin/python -m pytest benchmarks -q \\
        --benchmark-json=/tmp/bench.json && python benchmarks/report.py /tmp/bench.json
"""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def lenet():
    import minilrp
    return minilrp.load_model("fmnist-cnn")


@pytest.fixture(scope="session")
def samples():
    import minilrp
    images, labels, _ = minilrp.load_samples()
    return images, labels


@pytest.fixture(scope="session")
def lenet_x(lenet, samples):
    return lenet.preprocess(samples[0])


def torch_or_skip():
    return pytest.importorskip("torch")


def median_run(benchmark, fn, rounds=None, seconds=None):
    """pytest-benchmark with a few warm-up calls (numba compile, page faults) excluded.
    seconds: run for about that long (the median then spans the machine's phases, which on
    these VMs shift a fast call's time by up to 1.5x within seconds)."""
    for _ in range(2):
        fn()
    if seconds is not None:
        import time
        t = time.perf_counter()
        for _ in range(20):
            fn()
        rounds = max(50, int(seconds / ((time.perf_counter() - t) / 20)))
    if rounds is None:
        return benchmark(fn)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
