"""Experiments: ``python -m minilrp.experiments perturbation|sanity [options]``.

``sanity``: model-parameter randomisation, random logit, input invariance and conservation of
every method, with plain-language verdicts (see minilrp/evaluate/sanity_study.py).

The region-perturbation experiment of the seed study, on a bundled model (or any minilrp weight
file) and the bundled Fashion-MNIST test images: SA, gradient x input, several LRP composites
and the random ordering under MoRF and LeRF, the SA+LRP combined orderings (a)-(d) and the
oracle ordering, for every perturbation asked for (default: uniform noise and a constant equal to
the data's background). It writes ``results.md`` (tables, verdicts, the exact command),
``results.csv`` (one row per perturbation x method x ordering), ``curves.npz`` (every per-image
curve) and figures into ``--out``, and says per perturbation whether the two seed findings hold:

(i)  AOPC under MoRF is larger for LRP than for SA, and larger for SA than for random;
(ii) distorting the regions the SA+LRP combination marks as inessential keeps the class score
     higher than the random ordering does (and whether it actually rises above f(x_0)).

A finding "holds" when the 95% interval of the paired per-image difference lies above 0, "fails"
when it lies below 0, and is "inconclusive" otherwise. Nothing is tuned towards a verdict.

Any image set (--images: the bundled sample, fashion-mnist, a folder of pictures, an .npy or
IDX file). The images are processed in shards (--shard-size) whose results are written to
OUT/shards/ as they finish, so a killed run continues with --resume; with --scheduler the
shards run on Dask (local:N worker processes, or tcp://HOST:PORT), bit-identical to a run in
one process. OUT/per_image.csv has every image's AOPC per method (pandas.read_csv).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from .errors import MinilrpError
from .evaluate import perturbation as P
from .evaluate.perturbation_study import (DEFAULT_COMPOSITES, run_perturbation, write_report)


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m minilrp.experiments",
                                description="minilrp experiments")
    sub = p.add_subparsers(dest="experiment", required=True)
    e = sub.add_parser("perturbation", help="region perturbation: MoRF/LeRF/combined orderings, AOPC",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--model", default="fmnist-cnn", help="bundled model name or .npz path (default fmnist-cnn)")
    e.add_argument("--images", default="bundled", metavar="SOURCE",
                   help="image set: bundled (the 1000 bundled test images), fashion-mnist[:train] "
                        "(the Debian package dataset-fashion-mnist), a folder of pictures, an .npy "
                        "file (N, H, W) / (N, C, H, W) or an IDX *-idx3-ubyte[.gz] file (default bundled)")
    e.add_argument("--labels", default=None, metavar="FILE.npy",
                   help="labels (N ints) for an .npy image file (the other sources carry their own)")
    e.add_argument("--n-images", default=None, metavar="N|all",
                   help="the first N images of the set, or all (default: 500 of the bundled "
                        "images, all of any other set; --quick: 24)")
    e.add_argument("--region-size", type=int, default=None,
                   help="side of the square regions in pixels (default 4 on 28x28, 9 on large images)")
    e.add_argument("--steps", type=int, default=None,
                   help="perturbation steps per curve (default: every region; Samek et al. used 100 "
                        "of ImageNet's 9x9 regions)")
    e.add_argument("--perturbation", action="append", default=None,
                   help="fill of distorted regions, repeatable: uniform, constant[:zero|min|mean|"
                        "background|<v>], blur[:sigma], road[:noise] (default: uniform and "
                        "constant:background)")
    e.add_argument("--composites", default=None,
                   help=f"comma-separated LRP presets (default {','.join(DEFAULT_COMPOSITES)})")
    e.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    e.add_argument("--n-draws", type=int, default=1,
                   help="noise draws averaged per step for random fills (default 1, as Samek et al.)")
    e.add_argument("--oracle-draws", type=int, default=4,
                   help="noise draws per region for the oracle ordering (default 4; 0 = no oracle)")
    e.add_argument("--score", choices=("logit", "probability"), default="logit",
                   help="class score tracked (default: the target logit)")
    e.add_argument("--batch-size", type=int, default=P.DEFAULT_BATCH,
                   help=f"images (and noise draws) scored together, step after step: bounds the "
                        f"memory (default {P.DEFAULT_BATCH})")
    e.add_argument("--maxpool-ties", choices=("split", "first"), default="split",
                   help="max-pool ties in every LRP preset: split evenly (default) or all to the "
                        "first maximum (as Zennit and PyTorch)")
    e.add_argument("--tie-key", default="random", metavar="random|index|FILE.npy",
                   help="how exact ties between region scores are broken: a seeded random "
                        "permutation per image (default), the region index, or a key per image "
                        "and region from an (N, R) .npy file (the ascending key first)")
    e.add_argument("--combined", choices=("minilrp", "study", "both", "none"), default="both",
                   help="SA+LRP combined orderings: minilrp's (a)-(d), the seed study's (a') and "
                        "(b), both (default), or none (Samek et al.'s methods alone)")
    e.add_argument("--block-size", type=int, default=100,
                   help="images explained and scored together (default 100): results depend on "
                        "it, never on the shards or workers")
    e.add_argument("--shard-size", type=int, default=500,
                   help="images per shard, a multiple of --block-size: the unit of work and of "
                        "the files in OUT/shards/ (default 500)")
    e.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out (same options), computing only "
                        "the shards it lacks")
    e.add_argument("--scheduler", default=None, metavar="local:N|tcp://HOST:PORT",
                   help="run the shards on Dask (pip install 'minilrp[dask]'): a local cluster "
                        "of N worker processes, or a running scheduler (default: this process)")
    e.add_argument("--out", default="results/perturbation", help="output folder (default results/perturbation)")
    e.add_argument("--quick", action="store_true",
                   help="a small, fast run for tests: 24 images, two composites, 1 oracle draw")
    e.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    e.add_argument("--report-only", action="store_true",
                   help="redo tables, figures and verdicts from the files of an earlier run in --out")
    add_sanity_parser(sub)
    return p.parse_args(argv)


def add_sanity_parser(sub):
    from .evaluate import sanity_study
    e = sub.add_parser("sanity", help="sanity checks: parameter randomisation, random logit, input "
                                      "invariance, conservation",
                       description=sanity_study.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--model", default="fmnist-cnn", help="bundled model name or .npz path (default fmnist-cnn)")
    e.add_argument("--n-images", type=int, default=None, help="number of test images (default 100; --quick: 16)")
    e.add_argument("--methods", default=None,
                   help="comma-separated methods: sa, gradient, gradient_x_input, smoothgrad, "
                        "integrated_gradients, input (a control), or LRP presets (default: "
                        f"{','.join(sanity_study.DEFAULT_METHODS)})")
    e.add_argument("--seed", type=int, default=0, help="seed of the random weights and classes (default 0)")
    e.add_argument("--measure", default="spearman_abs",
                   help="similarity the verdicts use: spearman, spearman_abs, ssim, topk (default spearman_abs)")
    e.add_argument("--threshold", type=float, default=0.5,
                   help="a map counts as changed when its similarity's 95%% interval lies below this (default 0.5)")
    e.add_argument("--topk", type=float, default=0.1, help="top-k intersection: share of the pixels (default 0.1)")
    e.add_argument("--shift", type=float, default=-1.0, help="input invariance: the constant added to every "
                                                             "input value (default -1)")
    e.add_argument("--out", default="results/sanity", help="output folder (default results/sanity)")
    e.add_argument("--quick", action="store_true", help="a small, fast run for tests: 16 images, 7 methods")
    e.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    e.add_argument("--report-only", action="store_true",
                   help="redo tables, figures and sentences from the files of an earlier run in --out")


def main(argv=None):
    args = parse(argv)
    command = "python -m minilrp.experiments " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        if args.experiment == "perturbation" and args.report_only:
            report, _ = write_report(args.out)
        elif args.experiment == "perturbation":
            report, _ = run_perturbation(args, command)
        elif args.experiment == "sanity":
            from .evaluate import sanity_study
            report, _ = (sanity_study.write_report(args.out) if args.report_only
                         else sanity_study.run_sanity(args, command))
    except MinilrpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: the shards finished so far are in {args.out}/shards; the same command "
              "with --resume continues the run", file=sys.stderr)
        return 130
    print(report)
    files = "per_image.csv, curves.npz, shards/" if args.experiment == "perturbation" else "scores.npz"
    print(f"\nwritten to {args.out}/: results.md, results.csv, {files}, figures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
