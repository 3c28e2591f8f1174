"""The region-perturbation experiment image by image: what one shard of a data set computes, and
the shard files a run leaves behind.

A run (perturbation_study.py) cuts its N images into *shards* (the unit of work: a task on a
Dask worker, a file in ``<out>/shards/``) and every shard into *blocks* of ``block_size``
images, aligned to the image index (images 0..49, 50..99, ...). Everything that touches the
network (heatmaps, the clean forward, the scoring of distorted images) is computed one block at
a time, and every random draw is keyed by (seed, purpose, image index). A block's results
therefore depend on the block alone, never on which shard, worker or process computed it: a run
is bit-identical whatever the shard size or the number of workers. (Blocks are needed because a
batched forward is not bit-identical to a forward of a different batch: the dense layers' GEMM
accumulates in an order that depends on the batch's size.)

A shard file ``shards/<start>-<stop>.npz`` holds, for images start..stop-1 (n of them):

    index, label, predicted    (n,) int64 (label -1 where the source has none)
    blank                      (n, R) bool: region r of the image is pure background
    orders|<method>|<ordering> (n, R) int32: the region order (oracle orders: orders|<pert>|Oracle|<o>)
    curves|<pert>|<method>|<ordering>  (n, L + 1) float64: f(x_0), ..., f(x_L)

It is written under a temporary name and renamed, so a killed run never leaves half a shard.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

from . import perturbation as P
from ..errors import MinilrpError
from ..explain import sensitivity

COMBOS = P.MINILRP_COMBINED  # minilrp's four combined orderings (a)-(d)
SHARD_NAME = re.compile(r"^(\d{9})-(\d{9})\.npz$")


@dataclass
class Job:
    """Everything a shard needs, small and picklable (sent once to every Dask worker).

    model: a bundled model name or a weight-file path (each process loads it itself);
    images: an ImageSet; perturbations: resolved Perturbations (fills fixed once for the run);
    maxpool_ties: "split" or "first" for every LRP preset; combined: the combined orderings;
    tie_key: None (seeded random), "index" or the path of an (N, R) ``.npy`` key."""

    model: str
    images: object
    composites: list
    perturbations: list
    region_size: int
    steps: object = None  # None: every region
    seed: int = 0
    n_draws: int = 1
    oracle_draws: int = 4
    score: str = "logit"
    batch_size: int = P.DEFAULT_BATCH
    block_size: int = 100
    maxpool_ties: str = "split"
    combined: list = field(default_factory=lambda: list(COMBOS))
    tie_key: object = None
    background: object = None  # (C, 1, 1): the data's background value, for the blank regions


def composite(name, ties="split"):
    """A preset (by name) with max-pool ties ``ties`` ("split": minilrp's default, "first": as
    Zennit and PyTorch). The presets take no max-pool argument, so the rule is set on the
    Composite (a fresh object per call)."""
    if ties == "split":
        return name
    from ..explain.composites import get_composite
    from ..explain.rules import WinnerTakeAll
    c = get_composite(name)
    c.maxpool = WinnerTakeAll(ties=ties)
    return c


def heatmaps(net, x, composites, batch=256, ties="split"):
    """{method label: heatmap} for SA, gradient x input and each LRP composite, in batches."""
    def batched(fn):
        return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])
    maps = {"SA": batched(lambda v: sensitivity.sa(net, v)),
            "Gradient x Input": batched(lambda v: sensitivity.gradient_x_input(net, v))}
    for c in composites:
        comp = composite(c, ties)
        maps[f"LRP {c}"] = batched(lambda v: net.relevance(v, comp))
    return maps


def _tie_key(job, index, R):
    if job.tie_key is None or job.tie_key == "index":
        return job.tie_key
    key = np.load(job.tie_key, mmap_mode="r", allow_pickle=False)
    if key.ndim != 2 or key.shape[1] != R or key.shape[0] <= index[-1]:
        raise MinilrpError(f"tie-breaking key {job.tie_key}: shape {key.shape}, but images up to "
                           f"{index[-1]} with {R} regions need (>= {index[-1] + 1}, {R})")
    return np.asarray(key[index])


def compute_block(net, job, start, stop):
    """The experiment on images start..stop-1 (one block): {name: array} as in a shard file."""
    index = np.arange(start, stop, dtype=np.int64)
    x = net.preprocess(job.images.read(start, stop))
    labels = job.images.labels
    out = {"index": index, "label": labels[start:stop] if labels is not None else np.full(len(x), -1),
           "predicted": P.forward_batched(net, x, job.batch_size).argmax(axis=1).astype(np.int64)}
    regions = P.grid(x.shape[1:], job.region_size)
    R = regions.n_regions
    ties = _tie_key(job, index, R)
    scores = {m: P.region_scores(h, regions)
              for m, h in heatmaps(net, x, job.composites, ties=job.maxpool_ties).items()}
    orders = {}
    for m, s in scores.items():
        orders[(m, "MoRF")] = P.order_regions(s, "morf", job.seed, index=index, ties=ties)
        orders[(m, "LeRF")] = P.order_regions(s, "lerf", job.seed, index=index, ties=ties)
    orders[("Random", "random")] = P.random_order(len(x), R, job.seed, index=index)
    for c in job.composites:
        for combo in job.combined:
            if combo == "lrp_negative":  # (b) is LRP's LeRF on a signed map: reuse its curve
                continue
            orders[(f"SA + LRP {c}", combo)] = P.combined_order(
                scores["SA"], scores[f"LRP {c}"], combo, job.seed, index=index, ties=ties)
    blank_px = np.all(np.isclose(x, job.background[None], atol=1e-6), axis=1)
    out["blank"] = P.region_scores((~blank_px).astype(np.float64), regions) == 0
    for key, order in orders.items():
        out["orders|" + "|".join(key)] = order.astype(np.int32)
    kw = dict(score=job.score, seed=job.seed, batch_size=job.batch_size, index=index)
    for pert in job.perturbations:
        run_orders = dict(orders)
        if job.oracle_draws:
            osc = P.oracle_scores(net, x, regions, pert, n_draws=job.oracle_draws, **kw)
            for o in ("MoRF", "LeRF"):
                run_orders[("Oracle", o)] = P.order_regions(osc, o.lower(), job.seed, index=index, ties=ties)
                out[f"orders|{pert.name}|Oracle|{o}"] = run_orders[("Oracle", o)].astype(np.int32)
        for key, order in run_orders.items():
            out["curves|" + "|".join((pert.name,) + key)] = P.perturbation_curves(
                net, x, regions, order, pert, n_draws=job.n_draws, steps=job.steps, **kw)
        if "lrp_negative" in job.combined:
            for c in job.composites:  # (b): alias of LRP's LeRF
                out[f"curves|{pert.name}|SA + LRP {c}|lrp_negative"] = out[f"curves|{pert.name}|LRP {c}|LeRF"]
    return out


def compute_shard(net, job, start, stop, progress=None):
    """The experiment on images start..stop-1, block by block (start and stop on block
    boundaries, or stop = N). progress(n): called with the images of each finished block."""
    t = time.perf_counter()
    blocks = []
    for a in range(start, stop, job.block_size):
        b = min(a + job.block_size, stop)
        blocks.append(compute_block(net, job, a, b))
        if progress is not None:
            progress(b - a)
    out = {k: np.concatenate([blk[k] for blk in blocks]) for k in blocks[0]}
    out["seconds"] = np.array([time.perf_counter() - t])  # compute time (not part of the results)
    return out


# ---------------------------------------------------------------------------------- files

def shard_path(folder, start, stop):
    return os.path.join(folder, "shards", f"{start:09d}-{stop:09d}.npz")


def write_shard(folder, start, stop, arrays):
    """Atomically: a temporary file renamed into place (a killed run leaves no half shard)."""
    path = shard_path(folder, start, stop)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path[:-4] + f".tmp{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def done_shards(folder):
    """{(start, stop)} of the shard files present."""
    d = os.path.join(folder, "shards")
    if not os.path.isdir(d):
        return set()
    return {(int(m.group(1)), int(m.group(2))) for m in map(SHARD_NAME.match, os.listdir(d)) if m}


def read_shards(folder, ranges, N):
    """The shards' arrays concatenated in image order -> {name: array}; checks that they hold
    every image 0..N-1 exactly once."""
    parts = []
    for start, stop in sorted(ranges):
        with np.load(shard_path(folder, start, stop), allow_pickle=False) as f:
            parts.append({k: f[k] for k in f.files})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if not parts or not np.array_equal(out["index"], np.arange(N)):
        raise MinilrpError(f"the shards in {folder}/shards do not hold images 0..{N - 1} exactly once")
    return out
