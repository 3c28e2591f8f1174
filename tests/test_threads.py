"""No shared mutable state: networks in separate threads give the results they give alone,
bit for bit; one network used from two threads at once refuses with a clear error; no call
keeps scratch memory after it returns."""
import gc
import os
import threading
import tracemalloc
import weakref

import numpy as np
import pytest

import minilrp
from minilrp import Composite, Epsilon, MinilrpError, Rule
from minilrp.engine import kernels

PRESETS = ("EpsilonGammaBox", "EpsilonPlusFlat", "EpsilonAlpha2Beta1")


CALLS = [lambda net, x: net.forward(x), lambda net, x: net.gradient(x)] + \
    [lambda net, x, p=p: net.relevance(x, p) for p in PRESETS] + \
    [lambda net, x: net.relevance(x, PRESETS[0], fast=False)]


def test_networks_in_threads_give_their_serial_results_bit_for_bit(monkeypatch):
    # small work already goes to the kernels' worker threads, and convolutions run in
    # several im2col chunks: every piece of scratch memory a call could share is in play
    monkeypatch.setattr(kernels, "PARALLEL_MIN_WORK", 1 << 10)
    monkeypatch.setattr(kernels, "COLS_BUDGET", 1 << 17)
    images = minilrp.load_samples()[0]
    nets = [minilrp.load_model("fmnist-cnn") for _ in range(2)]
    xs = [net.preprocess(images[6 * t:6 * (t + 1)]) for t, net in enumerate(nets)]
    serial = [[call(net, x) for call in CALLS] for net, x in zip(nets, xs)]
    mismatches, errors = [], []

    def work(t):
        try:
            for i in range(50):
                j = (i + 3 * t) % len(CALLS)  # the threads run different calls at the same time
                if not np.array_equal(CALLS[j](nets[t], xs[t]), serial[t][j]):
                    mismatches.append((t, i, j))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert not mismatches, f"{len(mismatches)} results differ from the serial run, first: {mismatches[:3]}"


class Waiting(Rule):
    """Epsilon that waits inside its relevance until told to go on: a call held open."""

    def __init__(self, inside, go):
        self.inside, self.go = inside, go

    def relevance(self, layer, a, R, ctx=None):
        self.inside.set()
        self.go.wait(10)
        return Epsilon().relevance(layer, a, R, ctx)


@pytest.mark.parametrize("fast", [True, False])
def test_one_network_from_two_threads_is_refused(fast):
    net = minilrp.load_model("fmnist-mlp")
    x = net.preprocess(minilrp.load_samples()[0][:2])
    inside, go = threading.Event(), threading.Event()
    held = Composite("held", default=Waiting(inside, go))
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("R", net.relevance(x, held, fast=fast)))
    th.start()
    assert inside.wait(10)
    try:
        for call in (lambda: net.forward(x), lambda: net.gradient(x), lambda: net.relevance(x, "LRP-0"),
                     lambda: net.predict(x)):
            with pytest.raises(MinilrpError, match="busy with a call from another thread.*net.copy()"):
                call()
    finally:
        go.set()
        th.join()
    np.testing.assert_allclose(result["R"], net.relevance(x, "Epsilon", epsilon=1e-6), rtol=1e-6, atol=1e-9)
    # a copy is independent: usable while the original is in use, same results
    twin = net.copy()
    np.testing.assert_array_equal(twin.forward(x), net.forward(x))


def test_backward_of_another_threads_forward_is_refused():
    net = minilrp.load_model("fmnist-mlp")
    x = net.preprocess(minilrp.load_samples()[0][:2])
    th = threading.Thread(target=net.forward, args=(x,))
    th.start()
    th.join()
    with pytest.raises(MinilrpError, match="another thread than the forward"):
        net.backward(np.ones((2, 10), np.float32))


def test_network_pickles_and_copies_without_its_lock():
    import pickle
    net = minilrp.load_model("fmnist-cnn")
    x = net.preprocess(minilrp.load_samples()[0][:2])
    R = net.relevance(x, "EpsilonGammaBox")
    back = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(back.relevance(x, "EpsilonGammaBox"), R)


def test_no_memory_is_kept_after_a_call():
    """A VGG-sized convolution and its transposed conv leave nothing allocated behind (the
    im2col columns, padded images and GEMM results belong to the call)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    kernels.conv2d(x, w, None, 1, 1)  # compile and warm up outside the trace
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = kernels.conv2d(x, w, None, 1, 1)
        back = kernels.conv2d_transpose(out, w, 1, 1, (56, 56))
        del out, back
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before > 8 << 20  # the call did allocate its scratch (so the trace sees numpy)...
    assert after - before < 64 << 10  # ...and released it


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_the_thread_count(monkeypatch, dtype):
    # pieces are fixed by the shapes, never by how many threads take them (OpenBLAS's own
    # threading changes its kernels, and so its rounding, with its thread count)
    monkeypatch.setattr(kernels, "COLS_BUDGET", 1 << 18)  # several chunks at this batch
    monkeypatch.setattr(kernels, "GEMM_MIN_FLOP", 1 << 16)  # GEMMs that split, inside pieces or not
    net = minilrp.load_model("fmnist-cnn", dtype=dtype)
    x = net.preprocess(minilrp.load_samples()[0][:40])
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(dtype)
    big = np.random.default_rng(1).random((1, 3, 90, 90)).astype(dtype)  # one image, many GEMM blocks

    def results():
        return [call(net, x) for call in CALLS] + [kernels.conv2d(big, w, None, 1, 1),
                                                   kernels.conv2d_transpose(kernels.conv2d(big, w, None, 1, 1), w, 1, 1, (90, 90))]
    counts = {}
    for threads in (1, 2, 3):
        monkeypatch.setattr(kernels, "THREADS", threads)
        counts[threads] = results()
    for threads in (2, 3):
        for got, want in zip(counts[threads], counts[1]):
            assert np.array_equal(got, want)


def test_blas_threads_are_restored_after_a_call():
    from threadpoolctl import threadpool_info
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    net = minilrp.load_model("fmnist-cnn")
    net.relevance(net.preprocess(minilrp.load_samples()[0][:4]), "EpsilonPlusFlat")
    with pytest.raises(MinilrpError):
        net.forward(np.full((1, 1, 28, 28), np.nan))
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before


def test_blas_is_on_one_thread_inside_a_call_from_any_thread():
    """threadpoolctl (3.8) lets only the first Python thread that set OpenBLAS's thread count
    change it and silently ignores the others: a call from a second thread (a Dask worker,
    a web server) must still run its GEMMs on one BLAS thread, and leave the count as it was."""
    from threadpoolctl import threadpool_limits
    libs = kernels._blas_controller().lib_controllers
    inside, after = [], []

    def call():
        with kernels.one_blas_thread():
            inside.append([lib.num_threads for lib in libs])
        after.append([lib.num_threads for lib in libs])

    # this thread takes threadpoolctl's control, and sets more than one thread (something to check)
    with threadpool_limits(2, user_api="blas"):
        before = [lib.num_threads for lib in libs]
        t = threading.Thread(target=call)
        t.start()
        t.join()
    assert inside == [[1] * len(libs)] and after == [before], (inside, after, before)


def test_pieces_run_once_each_and_errors_reach_the_caller():
    done = []
    kernels.each(50, lambda i, buf: done.append((i, buf)), scratch=lambda: threading.get_ident())
    assert sorted(i for i, _ in done) == list(range(50))
    assert all(buf is not None for _, buf in done)

    def fail(i, _):
        if i == 7:
            raise ValueError("piece 7")
    with pytest.raises(ValueError, match="piece 7"):
        kernels.each(20, fail)
    nested = []
    kernels.each(4, lambda i, _: kernels.each(3, lambda j, __: nested.append((i, j, threading.get_ident()))))
    assert len(nested) == 12
    by_outer = {}
    for i, _, t in nested:
        by_outer.setdefault(i, set()).add(t)
    assert all(len(ts) == 1 for ts in by_outer.values())  # a nested each stays on its piece's thread


def test_a_cancelled_helper_keeps_no_data(monkeypatch):
    """A helper the caller did not wait for (cancelled while every pool thread was busy) stays in
    the pool's queue until a thread takes it; meanwhile it must not keep the call's arrays alive
    (test_no_memory_is_kept_after_a_call failed on that, now and then, in the whole suite)."""
    monkeypatch.setattr(kernels, "THREADS", 2)
    pool = kernels._pool(os.getpid())
    gate = threading.Event()
    busy = [pool.submit(gate.wait) for _ in range(pool._max_workers)]
    try:
        data = np.ones(1000)
        alive = weakref.ref(data)
        kernels.each(4, lambda i, _, d=data: d.sum())  # the caller takes every piece
        del data
        gc.collect()
        assert alive() is None
    finally:
        gate.set()
        for f in busy:
            f.result()
