"""minilrp called from a Python thread other than the main one (a Dask worker's task thread, a
web server's request thread) against the same calls from the main thread: LeNet, 1000 bundled
images, forward, SA gradient and LRP EpsilonPlusFlat, medians (min-max) of 7 calls after one
warm-up, and the BLAS thread count a GEMM inside a call sees (it must be 1: minilrp's pieces are
the threads; threadpoolctl 3.8 silently ignored minilrp's setting from a second thread once the
main thread had set it, kernels.one_blas_thread now sets it directly).

    $MALLOC .venv/bin/python benchmarks/thread_call.py
    $MALLOC MALLOC_ARENA_MAX=1 .venv/bin/python benchmarks/thread_call.py

($MALLOC = the allocator settings in BENCHMARKS.md.) glibc gives every thread but the main one
its own arena, made of heaps of at most 64 MiB, so the 100 MB activations of a call from such a
thread are mmap'd afresh and page-faulted in at every call, whatever MALLOC_MMAP_THRESHOLD_
says; MALLOC_ARENA_MAX=1 keeps every thread on the main arena.
"""
import statistics
import threading
import time

from minilrp import load_model, load_samples
from minilrp.engine import kernels


def measure(net, x):
    seen, gemm = [], kernels.gemm_into

    def spy(*args):  # the BLAS thread count inside a call
        seen.append(max(lib.num_threads for lib in kernels._blas_controller().lib_controllers))
        return gemm(*args)
    out = {}
    for name, call in (("forward", lambda: net.forward(x)), ("SA gradient", lambda: net.gradient(x)),
                       ("LRP EpsilonPlusFlat", lambda: net.relevance(x, "EpsilonPlusFlat"))):
        call()
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            call()
            ts.append(time.perf_counter() - t0)
        out[name] = f"{statistics.median(ts) * 1e3:.0f} ms ({min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f})"
    kernels.gemm_into = spy
    try:
        net.forward(x[:8])
    finally:
        kernels.gemm_into = gemm
    out["BLAS threads inside"] = str(max(seen))
    return out


def main():
    net = load_model("fmnist-cnn")
    x = net.preprocess(load_samples()[0][:1000])
    rows = {"main thread": measure(net, x)}
    for lib in kernels._blas_controller().lib_controllers:  # the main thread takes threadpoolctl's
        lib.set_num_threads(lib.num_threads)  # control, as minilrp's first call did before the fix
    thread = threading.Thread(target=lambda: rows.__setitem__("second thread", measure(net, x)))
    thread.start()
    thread.join()
    print("| thread | " + " | ".join(rows["main thread"]) + " |\n|---|" + "---:|" * len(rows["main thread"]))
    for who, row in rows.items():
        print(f"| {who} | " + " | ".join(row.values()) + " |")


if __name__ == "__main__":
    main()
