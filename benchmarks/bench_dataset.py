"""Dataset-scale throughput: MoRF curves (bundled CNN, 4x4 regions, 49 steps, constant-0 fill,
LRP EpsilonPlusFlat heatmaps) in images per second, measured in one run:

  today      one perturbation_curves call over all images (the API as it was), default threads
  blocks     the runner's way: blocks of 100 images aligned to the image index, in one process,
             with the default threads and with 1 thread (MINILRP_NUM_THREADS=1, OpenBLAS 1)
  2 plain    two 1-thread processes side by side, each on half the images (no Dask): the
             same cores and load as the cluster, so the cluster's overhead is cluster / this
  cluster    a Dask LocalCluster of 2 worker processes (1 thread each, as --scheduler local:2
             starts them), shards of 500 images as tasks, the model loaded once per worker by a
             worker plugin, curves returned to the driver; per worker = total / 2

The cluster's curves are checked equal, bit for bit, to the in-process blocks'. Then the peak
resident memory of each worker (getrusage in the worker) for 1,000 and for 10,000 images (the
Debian package's test set, or the bundled 1,000 tiled when it is not installed), each on a fresh
cluster.

    .venv/bin/python benchmarks/bench_dataset.py [rounds] [--no-memory]   # default 2 rounds, interleaved

On these 2-core machines a cluster of 2 one-thread workers uses the same cores as one process
with 2 threads: compare the per-worker figure with the 1-thread process (the overhead of
scheduling and transfer) and the cluster's total with the default-threads process.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

N, BLOCK, SHARD, REGION = 1000, 100, 500, 4
ONE_THREAD = {"MINILRP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def images(n):
    import minilrp
    from minilrp.models.imagesets import FASHION_MNIST, open_images
    if os.path.exists(os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz")):
        return open_images("fashion-mnist").read(0, n)
    raw = minilrp.load_samples()[0]
    return np.concatenate([raw] * (-(-n // len(raw))))[:n]


def morf_block(net, raw, start):
    """MoRF curves of one block (what a shard computes per block); start = its first index."""
    from minilrp import perturbation as P
    x = net.preprocess(raw)
    index = np.arange(start, start + len(x))
    regions = P.grid(x.shape[1:], REGION)
    order = P.order_regions(P.region_scores(net.relevance(x, "EpsilonPlusFlat"), regions), "morf", index=index)
    return P.perturbation_curves(net, x, regions, order, "constant:0", index=index)


def morf_blocks(net, raw, start):
    return np.concatenate([morf_block(net, raw[a:a + BLOCK], start + a) for a in range(0, len(raw), BLOCK)])


def today(net, raw):
    from minilrp import perturbation as P
    x = net.preprocess(raw)
    regions = P.grid(x.shape[1:], REGION)
    heat = np.concatenate([net.relevance(x[i:i + 250], "EpsilonPlusFlat") for i in range(0, len(x), 250)])
    order = P.order_regions(P.region_scores(heat, regions), "morf")
    return P.perturbation_curves(net, x, regions, order, "constant:0")


def in_process(kind, part=None):
    """Run in a fresh process (threads are fixed at import): prints seconds (JSON). part "k/2":
    the k-th half of the images only (two such processes side by side = two plain workers)."""
    import minilrp
    net = minilrp.load_model("fmnist-cnn")
    raw = images(N)
    if part:
        k = int(part.split("/")[0])
        raw = raw[k * N // 2:(k + 1) * N // 2]
    fn = today if kind == "today" else morf_blocks
    fn(net, raw[:100]) if kind == "today" else fn(net, raw[:100], 0)  # warm-up (numba, pages)
    t = time.perf_counter()
    curves = fn(net, raw) if kind == "today" else fn(net, raw, 0)
    seconds = time.perf_counter() - t
    if kind == "blocks" and not part:
        np.save("/tmp/bench_dataset_blocks.npy", curves)
    print(json.dumps({"seconds": seconds}))


def pair():
    """Two plain 1-thread processes side by side, each on half the images: the same cores and
    the same load as the 2-worker cluster, without Dask. -> seconds until both are done."""
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--child", "blocks", f"{k}/2"],
                              stdout=subprocess.DEVNULL, env={**os.environ, **ONE_THREAD}) for k in (0, 1)]
    for p in procs:
        if p.wait():
            raise SystemExit("a plain worker process failed")
    return time.perf_counter() - t  # includes their start-up and warm-up (about 5 s each)


def child(kind, env=None):
    r = subprocess.run([sys.executable, __file__, "--child", kind], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]


class ModelPlugin:
    """Loads the model once per worker (as minilrp.evaluate.cluster's job plugin does)."""
    name = "bench-model"

    def setup(self, worker):
        import minilrp
        self.net = minilrp.load_model("fmnist-cnn")


def shard_task(raw, start):
    from distributed import get_worker
    return morf_blocks(get_worker().plugins["bench-model"].net, raw, start)


def _peak_rss_mib():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cluster_run(n, check=None):
    """Seconds for n images on a fresh 2-worker cluster (after a warm-up shard per worker), and
    each worker's peak resident memory (MiB)."""
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import WorkerPlugin
    from minilrp.evaluate.cluster import WORKER_ENV

    class Plugin(ModelPlugin, WorkerPlugin):
        pass
    raw = images(n)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env=WORKER_ENV) as cluster, Client(cluster) as client:
        client.register_plugin(Plugin(), name="bench-model")
        client.gather([client.submit(shard_task, raw[:BLOCK], 0, pure=False) for _ in range(2)])
        t = time.perf_counter()
        # each task reads its own images (as the runner's workers read their shard from the
        # image set); here they travel with the task, 250 x 784 bytes
        futures = [client.submit(shard_task, raw[a:a + SHARD], a, pure=False) for a in range(0, n, SHARD)]
        curves = np.concatenate(client.gather(futures))
        seconds = time.perf_counter() - t
        peaks = list(client.run(_peak_rss_mib).values())
    if check is not None:
        assert np.array_equal(curves, check), "cluster curves differ from the in-process blocks'"
    return seconds, peaks


def main(rounds=2):
    times = {k: [] for k in ("today", "blocks", "blocks 1 thread", "2 plain processes", "cluster 2 workers")}
    for _ in range(rounds):
        times["today"].append(child("today"))
        times["blocks"].append(child("blocks"))
        times["blocks 1 thread"].append(child("blocks", ONE_THREAD))
        ref = np.load("/tmp/bench_dataset_blocks.npy")
        times["cluster 2 workers"].append(cluster_run(N, check=ref)[0])
        times["2 plain processes"].append(pair())
    rate = {k: N / statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:20s} {rate[k]:7.1f} images/s  (median of {', '.join(f'{t:.1f}' for t in v)} s for {N} images)")
    per_worker = rate["cluster 2 workers"] / 2
    print(f"per worker: {per_worker:.1f} images/s = {per_worker / rate['blocks 1 thread']:.2f} x the 1-thread "
          f"process, {per_worker / rate['blocks']:.2f} x the default-threads process, "
          f"{rate['cluster 2 workers'] / rate['2 plain processes']:.2f} x a plain process of 2 side by side")
    print(f"blocks / today (single process, default threads): {rate['blocks'] / rate['today']:.2f}")
    print(f"cluster total / default-threads process: {rate['cluster 2 workers'] / rate['blocks']:.2f}")
    if "--no-memory" in sys.argv:
        return
    small = cluster_run(1000)[1]
    large = cluster_run(10000)[1]
    print(f"peak RSS per worker: 1,000 images {', '.join(f'{p:.0f}' for p in small)} MiB; "
          f"10,000 images {', '.join(f'{p:.0f}' for p in large)} MiB; ratio {max(large) / max(small):.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        in_process(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 2)
