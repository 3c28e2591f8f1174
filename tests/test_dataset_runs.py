"""Dataset-scale runs of ``python -m minilrp.experiments perturbation``: shards, --resume, and the
same run on a Dask LocalCluster of worker processes. The promise tested: the results (every
per-image curve, the tables) are bit-identical whatever the shard size or the number of workers,
after a killed-then-resumed run, and after a worker process killed mid-run."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from minilrp.experiments import main

pytestmark = pytest.mark.slow

# small but complete: uniform noise (random draws), the oracle (its own stream), one composite,
# every ordering (MoRF/LeRF, random, the combined ones), 16 regions of 7x7 px
OPTS = ["perturbation", "--n-images", "12", "--composites", "EpsilonGammaBox", "--perturbation", "uniform",
        "--oracle-draws", "1", "--region-size", "7", "--no-progress"]


def run(out, *extra):
    assert main(OPTS + ["--out", str(out), *extra]) == 0


def same_results(a, b):
    ca, cb = np.load(a / "curves.npz"), np.load(b / "curves.npz")
    assert sorted(ca.files) == sorted(cb.files) and len(ca.files) > 10
    for k in ca.files:
        assert np.array_equal(ca[k], cb[k]), k  # bit for bit
    oa, ob = np.load(a / "orders.npz"), np.load(b / "orders.npz")
    for k in oa.files:
        assert np.array_equal(oa[k], ob[k]), k
    assert (a / "results.csv").read_text() == (b / "results.csv").read_text()
    assert (a / "per_image.csv").read_text() == (b / "per_image.csv").read_text()

    def md(run):  # the report, but for the command and the computing time
        return [line for line in (run / "results.md").read_text().splitlines()
                if not line.startswith("Command:") and "scored in" not in line]
    assert md(a) == md(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One shard of all 12 images, in this process, blocks of 2 and of 1 image."""
    refs = {}
    for block in (2, 1):
        out = tmp_path_factory.mktemp(f"ref{block}") / "run"
        run(out, "--block-size", str(block), "--shard-size", "12")
        refs[block] = out
    return refs


def cli(*argv):
    return [sys.executable, "-m", "minilrp.experiments", *argv]


def test_shard_size_does_not_change_a_bit(reference, tmp_path):
    for shard in (2, 4):
        run(tmp_path / f"s{shard}", "--block-size", "2", "--shard-size", str(shard))
        assert len(os.listdir(tmp_path / f"s{shard}" / "shards")) == 12 // shard
        same_results(reference[2], tmp_path / f"s{shard}")
    # the per-image table is the curves'
    import csv
    rows = list(csv.DictReader(open(tmp_path / "s2" / "per_image.csv")))
    c = np.load(tmp_path / "s2" / "curves.npz")["uniform|SA|MoRF"]
    assert [int(r["index"]) for r in rows] == list(range(12))
    assert [float(r["aopc uniform|SA|MoRF"]) for r in rows] == list((c[:, :1] - c).mean(axis=1))


def test_killed_run_resumes_to_the_same_tables(reference, tmp_path):
    out = tmp_path / "run"
    argv = cli(*OPTS, "--block-size", "2", "--shard-size", "2", "--out", str(out))
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = out / "shards"
    while p.poll() is None and not (shards.is_dir() and any(f.endswith(".npz") for f in os.listdir(shards))):
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = sorted(f for f in os.listdir(shards) if f.endswith(".npz"))
    assert 1 <= len(done) < 6, "the run was to be killed midway"
    before = {f: os.stat(shards / f).st_mtime_ns for f in done}
    assert not (out / "results.csv").exists()
    # without --resume, the folder is refused; with other settings too
    assert main(OPTS + ["--out", str(out), "--block-size", "2", "--shard-size", "2"]) == 2
    r = subprocess.run(cli(*OPTS, "--block-size", "2", "--shard-size", "2", "--seed", "1",
                           "--out", str(out), "--resume"),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "other settings (seed: 0 there, 1 now)" in r.stderr
    run(out, "--block-size", "2", "--shard-size", "2", "--resume")
    assert all(os.stat(shards / f).st_mtime_ns == t for f, t in before.items())  # not recomputed
    same_results(reference[2], out)
    assert "--resume" not in (out / "results.md").read_text().splitlines()[2]  # the first command


def test_a_plain_run_imports_nothing_of_dask(tmp_path):
    code = ("import sys\nfrom minilrp.experiments import main\n"
            f"assert main({OPTS + ['--n-images', '2', '--oracle-draws', '0', '--out', str(tmp_path / 'o')]!r}) == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes, as --scheduler local:2 starts it."""
    distributed = pytest.importorskip("distributed")
    from minilrp.evaluate.cluster import WORKER_ENV
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=":0", env=WORKER_ENV)
    yield c
    c.close()


@pytest.mark.parametrize("shard", [6, 3, 2])  # 1, 2 and 3 shards per worker
def test_dask_workers_give_the_local_results(reference, cluster, tmp_path, shard):
    run(tmp_path / "run", "--block-size", "1", "--shard-size", str(shard), "--scheduler", cluster.scheduler_address)
    same_results(reference[1], tmp_path / "run")


def test_local_scheduler_option(reference, tmp_path):
    run(tmp_path / "run", "--block-size", "2", "--shard-size", "4", "--scheduler", "local:2")
    same_results(reference[2], tmp_path / "run")


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost_or_doubled(reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    from minilrp.evaluate.cluster import WORKER_ENV
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", env=WORKER_ENV) as c, \
            distributed.Client(c) as client:
        client.wait_for_workers(2)
        pids = list(client.run(os.getpid).values())
        out = tmp_path / "run"
        killed = []

        def killer():  # once the first shard is written, kill a worker busy with another
            shards = out / "shards"
            while not (shards.is_dir() and any(f.endswith(".npz") for f in os.listdir(shards))):
                time.sleep(0.01)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(len(os.listdir(shards)))
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        run(out, "--block-size", "1", "--shard-size", "1", "--scheduler", c.scheduler_address)
        t.join(5)
        assert killed and killed[0] < 12, "the worker was to be killed mid-run"
        client.wait_for_workers(2, timeout=60)  # the nanny replaced it
        assert pids[0] not in client.run(os.getpid).values()
    assert len(os.listdir(out / "shards")) == 12
    same_results(reference[1], out)


def test_memory_is_bounded_by_the_shard_not_the_images(tmp_path):
    """Peak resident memory (getrusage in a fresh process) of a run of 4x the images, same shard
    and batch: at most 1.2x."""
    code = ("import resource, sys\nfrom minilrp.experiments import main\n"
            "assert main(sys.argv[1:]) == 0\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peak = {}
    for n in (40, 160):
        argv = ["perturbation", "--n-images", str(n), "--composites", "EpsilonGammaBox", "--perturbation",
                "constant:background", "--oracle-draws", "0", "--region-size", "14",
                "--block-size", "20", "--shard-size", "40", "--batch-size", "64", "--no-progress",
                "--out", str(tmp_path / str(n))]
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        peak[n] = int(r.stdout.strip().splitlines()[-1])
    print(f"peak RSS: 40 images {peak[40] / 1024:.0f} MiB, 160 images {peak[160] / 1024:.0f} MiB")
    assert peak[160] < 1.2 * peak[40]


def test_a_bad_image_mid_run_stops_it_naming_the_image_and_keeps_the_shards_done(tmp_path, monkeypatch, capsys):
    """A bad image is found before any work when it is among those read up front (the first
    CALIBRATION images, the fingerprint's sample); else when its shard reads it: then the run
    stops with an error naming it, and the shards done before stay for --resume."""
    import minilrp
    from minilrp.evaluate import perturbation_study
    raw = minilrp.load_samples()[0][:40] / 255.0
    raw[9, 0, 0] = 7.0
    np.save(tmp_path / "x.npy", raw)
    out = tmp_path / "run"
    argv = OPTS + ["--images", str(tmp_path / "x.npy"), "--block-size", "2", "--shard-size", "4",
                   "--out", str(out)]
    assert main(argv) == 2  # read while fixing the fills: before any shard
    assert "image 9 has values outside [0, 1]" in capsys.readouterr().err
    assert not (out / "shards").exists()
    monkeypatch.setattr(perturbation_study, "CALIBRATION", 4)  # read later, by its shard
    assert main(argv) == 2
    assert "image 9 has values outside [0, 1]" in capsys.readouterr().err
    assert sorted(os.listdir(out / "shards")) == ["000000000-000000004.npz", "000000004-000000008.npz"]


@pytest.mark.parametrize("extra,message", [
    (["--shard-size", "5", "--block-size", "2"], "must be a positive multiple of --block-size"),
    (["--scheduler", "local:0"], "local:N needs a number of workers"),
    (["--scheduler", "dask://x"], "give local:N"),
    (["--images", "/nonexistent/folder"], "not found"),
    (["--n-images", "5000"], "has only 1000"),
    (["--steps", "17"], "--steps must lie in 1..16"),
    (["--tie-key", "/nonexistent.npy"], "--tie-key"),
    (["--resume"], "no run to resume"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, extra, message, capsys):
    assert main(OPTS + ["--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "shards").exists()
