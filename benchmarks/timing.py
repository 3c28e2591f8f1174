"""The timing loop the benchmark scripts share (the pytest-benchmark cases use conftest.median_run)."""
import time


def timings(fn, rounds, warmup=1):
    """Seconds of each of ``rounds`` calls of fn, after ``warmup`` calls left out (numba
    compilation, first-touch page faults)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out
