"""Running the shards of an experiment on a Dask cluster (``--scheduler``; optional extra
``minilrp[dask]``). Imported only when a scheduler is asked for.

``local:N`` starts a LocalCluster of N worker *processes* with one thread each (and one numba
and BLAS thread each: N workers on N cores, no oversubscription); ``tcp://HOST:PORT`` connects to
a running scheduler, whose workers need minilrp installed and the same paths to the model file,
the images and any noise field or tie key (bundled models and images need no path).

Every worker gets the job once, as a worker plugin, and loads the model once, in the plugin's
setup; a worker that dies is replaced by its nanny, the plugin set up again there, and its
shards re-run by the scheduler (each shard is a task; the driver writes each shard's file once,
under the shard's own image range, so no image is lost or doubled).
"""
from __future__ import annotations

import os
import uuid

from ..errors import MinilrpError

WORKER_ENV = {"MINILRP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def check_spec(spec):
    """Validate a --scheduler value without importing Dask: 'local:N' or 'tcp://HOST:PORT'."""
    if spec.startswith("local:"):
        n = spec[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise MinilrpError(f"--scheduler {spec!r}: local:N needs a number of workers N >= 1")
        return
    if spec.startswith("tcp://") and ":" in spec[len("tcp://"):]:
        return
    raise MinilrpError(f"--scheduler {spec!r}: give local:N (a local cluster of N worker "
                       "processes) or tcp://HOST:PORT (a running Dask scheduler)")


def connect(spec):
    """A dask.distributed Client for a --scheduler value (the caller closes it)."""
    check_spec(spec)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise MinilrpError("--scheduler needs Dask: pip install 'minilrp[dask]'") from None
    if spec.startswith("local:"):
        cluster = LocalCluster(n_workers=int(spec[len("local:"):]), threads_per_worker=1,
                               processes=True, dashboard_address=":0", env=WORKER_ENV)
        client = Client(cluster)
        client.minilrp_cluster = cluster  # closed with the client (see close)
        return client
    try:
        return Client(spec, timeout="20s")
    except (OSError, TimeoutError) as e:
        raise MinilrpError(f"--scheduler {spec}: cannot reach the Dask scheduler ({e})") from None


def close(client):
    cluster = getattr(client, "minilrp_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class JobPlugin(WorkerPlugin):
        """Holds the job on a worker and loads its model there once."""

        def __init__(self, job, name):
            self.job, self.name, self.net = job, name, None

        def setup(self, worker):
            from ..models.data import load_model
            self.net = load_model(self.job.model)

    return JobPlugin


def _run_shard(plugin_name, start, stop):
    """The task: one shard on this worker, with the model its plugin loaded."""
    from distributed import get_worker
    from .shards import compute_shard
    plugin = get_worker().plugins[plugin_name]
    return compute_shard(plugin.net, plugin.job, start, stop)


def _peak_rss_mib():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run_shards(client, job, ranges, on_result):
    """Compute every (start, stop) shard of ``ranges`` on the cluster; on_result(start, stop,
    arrays) in the driver as each finishes (in completion order). A shard that fails stops the
    run (the others are cancelled) and its error is raised here; finished shards were handed to
    on_result already. Returns {worker address: peak resident memory in MiB} (of the workers
    alive at the end)."""
    from distributed import as_completed
    name = f"minilrp-job-{uuid.uuid4().hex}"
    client.register_plugin(_plugin_class()(job, name), name=name)
    futures = {client.submit(_run_shard, name, a, b, key=f"shard-{a}-{b}-{name}", pure=False): (a, b)
               for a, b in ranges}
    try:
        # on this client's loop: as_completed defaults to the current client's (a `with Client()`
        # elsewhere in the process), and a future awaited on two loops fails when a worker dies
        for fut in as_completed(futures, loop=client.loop):
            a, b = futures[fut]
            on_result(a, b, fut.result())
            fut.release()
        return client.run(_peak_rss_mib)
    finally:
        client.cancel(list(futures))
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # noqa: BLE001 - the cluster may be gone; nothing to undo then
            pass


def worker_pids(client):
    """{worker address: process id} (for tests and the benchmark)."""
    return client.run(os.getpid)
