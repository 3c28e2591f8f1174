"""The region-perturbation experiment (run by ``python -m minilrp.experiments perturbation``).

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

A run: :func:`plan` checks every option, the model, the image set and the output folder, and
fixes what the whole run shares (the data-dependent fills, resolved on the first images); the
shards are computed (shards.py) in this process or on Dask (cluster.py) and written as they
finish; :func:`finish` gathers them into curves.npz, orders.npz and per_image.csv, and the
report is written from those files (``--report-only`` redoes it). ``run.json`` records what
defines the results: ``--resume`` refuses a folder whose run had other settings.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time

import numpy as np

from . import narrative
from . import perturbation as P
from . import shards
from .shards import COMBOS, Job
from ..errors import MinilrpError
from ..explain import sensitivity
from ..pictures import plots

DEFAULT_COMPOSITES = ("EpsilonGammaBox", "EpsilonPlusFlat", "EpsilonAlpha2Beta1")
DEFAULT_PERTURBATIONS = ("uniform", "constant:background")
CALIBRATION = 1000  # images that fix the data-dependent fills (background, mean) of a run


def _slug(text):
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def paired(a, b):
    """Mean and 95% interval of the per-image difference a - b."""
    s = P.summarize(np.asarray(a) - np.asarray(b))
    return s["mean"], s["low"], s["high"]


def verdict(low, high):
    return "holds" if low > 0 else ("fails" if high < 0 else "inconclusive")


def _combined(which):
    return {"none": [], "minilrp": list(COMBOS), "study": list(P.STUDY_COMBINED),
            "both": list(COMBOS) + [c for c in P.STUDY_COMBINED if c not in COMBOS]}[which]


def _file_hash(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _check_out(out, resume):
    """The output folder, checked before any work: writable; holding an earlier run only with
    --resume, and one to resume with it."""
    run_file = os.path.join(out, "run.json")
    if resume and not os.path.exists(run_file):
        raise MinilrpError(f"--resume: {run_file} not found: there is no run to resume in {out}")
    if not resume and (os.path.exists(run_file) or os.path.isdir(os.path.join(out, "shards"))):
        raise MinilrpError(f"{out} holds an earlier run: add --resume to continue it, or choose "
                           "another --out (or delete it)")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise MinilrpError(f"--out {out} is not a writable folder ({e})") from None


def plan(args):
    """Options -> (job, run record, net): every option, the model, the images and --out checked
    before any computation. The run record is what defines the results (a --resume must
    match it)."""
    from ..models.data import load_model, model_path
    from ..models.imagesets import open_images
    composites = (args.composites.split(",") if args.composites else
                  (DEFAULT_COMPOSITES[:2] if args.quick else DEFAULT_COMPOSITES))
    oracle_draws = min(args.oracle_draws, 1) if args.quick else args.oracle_draws
    if oracle_draws < 0 or args.n_draws < 1:
        raise MinilrpError("--oracle-draws must be >= 0 and --n-draws >= 1")
    if args.block_size < 1 or args.shard_size < 1 or args.shard_size % args.block_size:
        raise MinilrpError(f"--shard-size ({args.shard_size}) must be a positive multiple of "
                           f"--block-size ({args.block_size})")
    if args.batch_size < 1:
        raise MinilrpError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.scheduler:
        from .cluster import check_spec
        check_spec(args.scheduler)
    perts = [P.get_perturbation(s) for s in (args.perturbation or list(DEFAULT_PERTURBATIONS))]
    from ..explain.composites import get_composite
    for c in composites:
        get_composite(c)
    tie_key = None if args.tie_key == "random" else args.tie_key
    if tie_key not in (None, "index") and not os.path.isfile(tie_key):
        raise MinilrpError(f"--tie-key {tie_key}: give random, index or an existing .npy file")
    _check_out(args.out, args.resume)

    net = load_model(args.model)
    images = open_images(args.images, net, labels=args.labels)
    if args.n_images in (None, "all"):
        n = len(images) if args.n_images == "all" or args.images != "bundled" else 500
        N = min(24, len(images)) if args.quick and args.n_images is None else n
    else:
        try:
            N = int(args.n_images)
        except ValueError:
            raise MinilrpError(f"--n-images must be a number or 'all', got {args.n_images!r}") from None
    if N < 2:
        raise MinilrpError(f"--n-images must be at least 2 (for standard errors), got {N}")
    if N > len(images):
        raise MinilrpError(f"--n-images {N}: {images.description} has only {len(images)}")
    regions = P.grid(net.input_shape, args.region_size)
    if args.steps is not None and not 1 <= args.steps <= regions.n_regions:
        raise MinilrpError(f"--steps must lie in 1..{regions.n_regions} (the number of regions), got {args.steps}")
    # fills that depend on the data (background, mean) are fixed once, on the first images
    # (at most CALIBRATION), so that every shard uses the same values
    x_cal = net.preprocess(images.read(0, min(N, CALIBRATION)))
    perts = [p.resolve(net, x_cal) for p in perts]
    background = P.Constant("background").resolve(net, x_cal).fill_value
    job = Job(model=args.model, images=images, composites=list(composites), perturbations=perts,
              region_size=regions.size, steps=args.steps, seed=args.seed, n_draws=args.n_draws,
              oracle_draws=oracle_draws, score=args.score, batch_size=args.batch_size,
              block_size=args.block_size, maxpool_ties=args.maxpool_ties,
              combined=_combined(args.combined), tie_key=tie_key, background=background)
    model_file = args.model if args.model.endswith(".npz") or os.path.sep in args.model else model_path(args.model)
    run = dict(model=args.model, model_sha256=_file_hash(model_file), images=args.images,
               labels=args.labels, images_fingerprint=images.fingerprint(), n_images=N,
               region_size=regions.size, steps=args.steps or regions.n_regions,
               perturbations=[p.name for p in perts],
               composites=list(composites), seed=args.seed, n_draws=args.n_draws,
               oracle_draws=oracle_draws, score=args.score, batch_size=args.batch_size,
               block_size=args.block_size, shard_size=args.shard_size,
               maxpool_ties=args.maxpool_ties, combined=job.combined,
               tie_key=tie_key if tie_key in (None, "index") else f"{tie_key} ({_file_hash(tie_key)})")
    return job, run, net


def _check_resume(out, run):
    with open(os.path.join(out, "run.json")) as f:
        old = json.load(f)
    diff = [k for k in run if k != "command" and old.get(k) != run[k]]
    if diff:
        raise MinilrpError(f"--resume: {out} holds a run with other settings ("
                           + "; ".join(f"{k}: {old.get(k)!r} there, {run[k]!r} now" for k in diff)
                           + f"). Resume it with its own command: {old.get('command')} --resume")
    return old


def run_perturbation(args, command):
    """The experiment, shard by shard, into args.out; then the report from the shard files."""
    t_start = time.perf_counter()
    job, run, net = plan(args)
    out, N = args.out, run["n_images"]
    run["command"] = command
    if args.resume:  # the report names the command that started the run
        run["command"] = _check_resume(out, run)["command"]
    else:
        with open(os.path.join(out, "run.json"), "w") as f:
            json.dump(run, f, indent=1)
    ranges = [(a, min(a + args.shard_size, N)) for a in range(0, N, args.shard_size)]
    done = shards.done_shards(out)
    todo = [r for r in ranges if r not in done]
    from tqdm import tqdm
    worker_peaks = None
    bar = tqdm(total=N, initial=N - sum(b - a for a, b in todo), unit="img", disable=args.no_progress,
               desc=f"{len(todo)} of {len(ranges)} shards to do", smoothing=0.1)

    try:
        if args.scheduler and todo:
            from . import cluster

            def finished(a, b, arrays):  # images done across the cluster, a shard at a time
                shards.write_shard(out, a, b, arrays)
                bar.update(b - a)
            client = cluster.connect(args.scheduler)
            try:
                worker_peaks = cluster.run_shards(client, job, todo, finished)
            finally:
                cluster.close(client)
        else:
            for a, b in todo:
                shards.write_shard(out, a, b, shards.compute_shard(net, job, a, b, progress=bar.update))
    finally:
        bar.close()
    if worker_peaks:
        print("peak memory per worker: " + ", ".join(f"{v:.0f} MiB" for v in worker_peaks.values()),
              file=sys.stderr)
    return finish(out, job, run, net, time.perf_counter() - t_start, worker_peaks)


def finish(out, job, run, net, wall, worker_peaks=None):
    """The shard files -> curves.npz, orders.npz, per_image.csv, settings.json; then the report."""
    N = run["n_images"]
    data = shards.read_shards(out, shards.done_shards(out), N)
    curves = {tuple(k.split("|")[1:]): v for k, v in data.items() if k.startswith("curves|")}
    orders = {tuple(k.split("|")[1:]): v for k, v in data.items() if k.startswith("orders|")}
    np.savez_compressed(os.path.join(out, "curves.npz"), **{"|".join(k): v for k, v in curves.items()})
    np.savez_compressed(os.path.join(out, "orders.npz"), blank=data["blank"],
                        **{"|".join(k): v for k, v in orders.items()})
    write_per_image(os.path.join(out, "per_image.csv"), data, curves)
    labelled = data["label"] >= 0
    R, L = data["blank"].shape[1], run["steps"]
    n_orders = sum(len(k) == 2 for k in orders) + (2 if job.oracle_draws else 0)  # scored per fill
    n_distorted = sum(N * L * (job.n_draws if p.stochastic else 1) * n_orders
                      + (N * R * (job.oracle_draws if p.stochastic else 1) if job.oracle_draws else 0)
                      for p in job.perturbations)
    settings = dict(run, images_description=f"images 0..{N - 1} of {job.images.description}",
                    accuracy=(float((data["predicted"] == data["label"])[labelled].mean())
                              if labelled.all() else None),
                    image_shape=list(net.input_shape), n_regions=R,
                    n_shards=len(shards.done_shards(out)), elapsed=float(data["seconds"].sum()),
                    wall_time_last_invocation=wall, n_distorted=n_distorted,
                    worker_peak_rss_mib=list(worker_peaks.values()) if worker_peaks else None)
    with open(os.path.join(out, "settings.json"), "w") as f:
        json.dump(settings, f, indent=1)
    return write_report(out, net)


def write_per_image(path, data, curves):
    """One row per image: index, label (-1: none), predicted class, and the AOPC of every
    (perturbation, method, ordering): pandas.read_csv(path) or numpy.genfromtxt."""
    keys = list(curves)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label", "predicted"] + [f"aopc {'|'.join(k)}" for k in keys])
        aopcs = np.stack([P.aopc(curves[k]) for k in keys], axis=1)
        for i in range(len(data["index"])):
            w.writerow([int(data["index"][i]), int(data["label"][i]), int(data["predicted"][i])]
                       + [repr(float(v)) for v in aopcs[i]])


def read_settings(out, *needed):
    """settings.json of the run in ``out``, after checking that it and the files ``needed`` are
    there (``--report-only`` redoes a report from them)."""
    for name in ("settings.json",) + needed:
        if not os.path.exists(os.path.join(out, name)):
            raise MinilrpError(f"{os.path.join(out, name)} not found: --report-only needs the files "
                               "of an earlier run in --out")
    with open(os.path.join(out, "settings.json")) as f:
        return json.load(f)


def write_report(out, net=None):
    """Tables, figures and verdicts from the files a run left in ``out`` (curves.npz,
    orders.npz, settings.json): ``--report-only`` redoes them without recomputing the curves."""
    from types import SimpleNamespace
    from ..models.data import load_model
    from ..models.imagesets import open_images
    settings = read_settings(out, "curves.npz", "orders.npz")
    with np.load(os.path.join(out, "curves.npz")) as f:
        curves = {tuple(k.split("|")): f[k] for k in f.files}
    with np.load(os.path.join(out, "orders.npz")) as f:
        blank = f["blank"]
        orders = {tuple(k.split("|")): f[k].astype(np.int64) for k in f.files if k != "blank"}
    if net is None:
        net = load_model(settings["model"])
    images = open_images(settings.get("images", "bundled"), net, labels=settings.get("labels"))
    x8, classes = net.preprocess(images.read(0, min(8, settings["n_images"]))), net.classes
    perts = [SimpleNamespace(name=p) for p in settings["perturbations"]]  # only names needed here
    composites = settings["composites"]
    combos = settings.get("combined", list(COMBOS))
    oracle = settings["oracle_draws"] > 0
    rows = analyse(curves, orders, perts, composites, blank, settings["steps"], oracle)
    write_csv(os.path.join(out, "results.csv"), rows)
    regions = P.grid(x8.shape[1:], settings["region_size"])
    main_lrp = composites[0]
    scores8 = {"SA": P.region_scores(sensitivity.sa(net, x8), regions),
               f"LRP {main_lrp}": P.region_scores(
                   net.relevance(x8, shards.composite(main_lrp, settings.get("maxpool_ties", "split"))), regions)}
    predicted8 = net.forward(x8).argmax(1)
    figures = write_figures(out, curves, perts, composites, x8, scores8, regions, predicted8,
                            classes, oracle, combos)
    # how much of the blank background each fill changes: the sentences beside the tables need it
    blank_change = {p.name: narrative.blank_changed(net, x8, p.name, settings["region_size"], settings["seed"])
                    for p in perts}
    report = write_markdown(os.path.join(out, "results.md"), rows, settings, perts,
                            composites, settings["command"], figures, oracle, combos, blank_change)
    return report, rows


def analyse(curves, orders, perts, composites, blank, L, oracle):
    """One row per (perturbation, method, ordering): AOPC, the paired difference from the random
    ordering, the share of the oracle's achievable drop (MoRF) or rise (the rest), and how many of
    the first quarter of the distorted regions are blank background."""
    q = max(1, L // 4)
    rows = []
    for pert in perts:
        name = pert.name
        rand = curves[(name, "Random", "random")]
        a_rand = P.aopc(rand)
        a_or_m = P.aopc(curves[(name, "Oracle", "MoRF")]).mean() if oracle else None
        a_or_l = P.aopc(curves[(name, "Oracle", "LeRF")]).mean() if oracle else None
        a_sa = {o: P.aopc(curves[(name, "SA", o)]) for o in ("MoRF", "LeRF")}
        for (pn, method, ordering), c in curves.items():
            if pn != name:
                continue
            a = P.aopc(c)
            s = P.summarize(a)
            d_mean, d_low, d_high = (paired(a_rand, a) if method != "Random" else (0.0, 0.0, 0.0))
            share = None
            if oracle and method != "Random":
                if ordering == "MoRF":
                    share = (s["mean"] - a_rand.mean()) / (a_or_m - a_rand.mean())
                else:
                    share = (a_rand.mean() - s["mean"]) / (a_rand.mean() - a_or_l)
            order = orders.get((method, ordering), orders.get((name, method, ordering)))
            if order is None and ordering == "lrp_negative":
                order = orders[(method.replace("SA + ", ""), "LeRF")]
            first = (np.take_along_axis(blank, order[:, :q], axis=1).mean()
                     if order is not None else None)
            rise = c[:, 1:q + 1] - c[:, :1]
            vs_sa = paired(a, a_sa[ordering]) if ordering in a_sa else (None, None, None)
            rows.append(dict(perturbation=name, method=method, ordering=ordering,
                             aopc=s["mean"], aopc_se=s["se"], aopc_low=s["low"], aopc_high=s["high"],
                             random_minus_aopc=d_mean, random_minus_low=d_low, random_minus_high=d_high,
                             minus_sa=vs_sa[0], minus_sa_low=vs_sa[1], minus_sa_high=vs_sa[2],
                             oracle_share=share, blank_first_quarter=first,
                             rise_first_quarter=float(rise.mean()),
                             f0=float(c[:, 0].mean()), f_end=float(c[:, -1].mean()),
                             n=s["n"]))
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
                        for k, v in r.items()})


def write_figures(out, curves, perts, composites, x, scores, regions, predicted, classes, oracle, combos=COMBOS):
    figs = []
    main_lrp = f"LRP {composites[0]}"
    for pert in perts:
        name = pert.name
        from matplotlib.figure import Figure
        fig = Figure(figsize=(15, 4.4), layout="constrained")
        axes = fig.subplots(1, 3)
        for ax, ordering in zip(axes[:2], ("MoRF", "LeRF")):
            sel = {f"{m}": c for (pn, m, o), c in curves.items() if pn == name and o == ordering}
            sel["Random"] = curves[(name, "Random", "random")]
            plots.plot_curves(sel, ax=ax, title=f"{ordering}, {name}")
        sel = {f"{m.replace('SA + ', 'SA+')} {o}": c for (pn, m, o), c in curves.items()
               if pn == name and o in combos and main_lrp in m}
        sel[f"{main_lrp} LeRF"] = curves[(name, main_lrp, "LeRF")]
        if oracle:
            sel["Oracle LeRF"] = curves[(name, "Oracle", "LeRF")]
        sel["Random"] = curves[(name, "Random", "random")]
        plots.plot_curves(sel, ax=axes[2], relative="Random",
                      title=f"inessential first, minus random, {name}")
        path = f"curves_{_slug(name)}.png"
        fig.savefig(os.path.join(out, path), dpi=110)
        figs.append(path)
    n = min(8, len(x))
    d = P.disagreement(scores["SA"][:n], scores[main_lrp][:n], regions)
    fig = plots.plot_disagreement(x[:n], d, titles=[classes[c] for c in predicted[:n]])
    fig.suptitle(f"SA rank minus {main_lrp} rank per region (red: SA ranks it higher)", fontsize=8)
    fig.savefig(os.path.join(out, "disagreement.png"), dpi=110)
    figs.append("disagreement.png")
    return figs


def _f(v, digits=3):
    return "" if v is None else f"{v:.{digits}f}"


def _pm(r):
    return f"{r['aopc']:.3f} ± {r['aopc_se']:.3f}"


def write_markdown(path, rows, settings, perts, composites, command, figures, oracle, combos=COMBOS,
                   blank_change=None):
    def row(p, m, o):
        return next(r for r in rows if r["perturbation"] == p and r["method"] == m and r["ordering"] == o)

    s = settings
    accuracy = "no labels" if s.get("accuracy") is None else f"accuracy {100 * s['accuracy']:.1f}%"
    lines = [f"# Region perturbation on {s['model']}", "",
             f"Command: `{command}`", "",
             f"Images: {s.get('images_description', 'the bundled test images')}.", "",
             f"{s['n_images']} test images {tuple(s['image_shape'])} ({accuracy}; "
             f"target = the predicted class), {s['region_size']}x{s['region_size']} regions "
             f"({s['n_regions']}), {s['steps']} cumulative steps; score = target {s['score']}; "
             f"seed {s['seed']}; {s['n_draws']} noise draw(s) per step; oracle: "
             + (f"{s['oracle_draws']} draw(s) per region" if oracle else "off")
             + f"; {s['n_distorted']} distorted images scored in {s['elapsed']:.1f} s of computing "
             "(steps that change no pixel reuse the previous score).", "",
             f"Max-pool ties in every LRP preset: {s.get('maxpool_ties', 'split')} "
             "(split: evenly among tied maxima, minilrp's default; first: the first maximum, as "
             "Zennit and PyTorch). Exact ties between region scores broken by "
             + {None: "a seeded random permutation per image", "index": "the region index"}.get(
                 s.get("tie_key"), f"the user's key {s.get('tie_key')}") + ". Combined orderings that ran: "
             + ("; ".join(f"`{c}` = {P.COMBINED[c]}" for c in combos) or "none") + ".", "",
             "AOPC = 1/(L+1) sum_k (f(x_0) - f(x_k)) averaged over images ± standard error. "
             "`rand - AOPC`: paired difference from the random ordering (positive = the score stays "
             "higher than under random) with its 95% interval. `oracle`: share of the oracle's "
             "achievable drop (MoRF) or rise (others) relative to random. `blank`: fraction of "
             "the first quarter of distorted regions that are pure background.", ""]
    lines += summary(rows, perts, composites, oracle, row, combos)
    lines += ["### Verdicts at a glance", "",
              "yes = holds (95% interval of the paired difference above 0), NO = the opposite holds, "
              "? = inconclusive.", "",
              "| perturbation | (i) LRP > SA, per composite | (i) SA > random | (ii) combination above random, per composite: "
              + " ".join(P.COMBINED[c].split(" ", 1)[0] for c in combos) + " |",
              "|---|---|---|---|"]
    for pert in perts:
        lines.append(glance(rows, pert.name, composites, row, combos))
    lines.append("")
    lines += narrative.perturbation_flips(rows, perts, composites, row, blank_change or {})
    for pert in perts:
        p = pert.name
        lines += [f"## Perturbation `{p}`", "",
                  "| method | AOPC MoRF | oracle | blank | AOPC LeRF | oracle | blank | ABPC |",
                  "|---|---|---|---|---|---|---|---|"]
        methods = ["SA", "Gradient x Input"] + [f"LRP {c}" for c in composites] + (["Oracle"] if oracle else [])
        for m in methods:
            mo, le = row(p, m, "MoRF"), row(p, m, "LeRF")
            lines.append(f"| {m} | {_pm(mo)} | {_f(mo['oracle_share'], 2)} | {_f(mo['blank_first_quarter'], 2)} "
                         f"| {_pm(le)} | {_f(le['oracle_share'], 2)} | {_f(le['blank_first_quarter'], 2)} "
                         f"| {mo['aopc'] - le['aopc']:.3f} |")
        rr = row(p, "Random", "random")
        lines += [f"| Random | {_pm(rr)} | | {_f(rr['blank_first_quarter'], 2)} | {_pm(rr)} | | | 0 |", "",
                  "Inessential-first orderings (low AOPC = the score stays up; negative = it rose):", "",
                  "| ordering | AOPC | rand - AOPC [95% CI] | oracle | blank | mean f(x_k) - f(x_0), first quarter |",
                  "|---|---|---|---|---|---|"]
        for c in composites:
            for combo in combos:
                r = row(p, f"SA + LRP {c}", combo)
                lines.append(f"| {P.COMBINED[combo][:3]} {combo}, SA + LRP {c} | {_pm(r)} | "
                             f"{r['random_minus_aopc']:.3f} [{r['random_minus_low']:.3f}, {r['random_minus_high']:.3f}] | "
                             f"{_f(r['oracle_share'], 2)} | {_f(r['blank_first_quarter'], 2)} | {r['rise_first_quarter']:+.3f} |")
        for m in ["SA"] + [f"LRP {c}" for c in composites] + (["Oracle"] if oracle else []):
            r = row(p, m, "LeRF")
            lines.append(f"| LeRF, {m} | {_pm(r)} | {r['random_minus_aopc']:.3f} [{r['random_minus_low']:.3f}, "
                         f"{r['random_minus_high']:.3f}] | {_f(r['oracle_share'], 2)} | "
                         f"{_f(r['blank_first_quarter'], 2)} | {r['rise_first_quarter']:+.3f} |")
        lines += ["", f"![curves](curves_{_slug(p)}.png)", ""]
        lines += narrative.perturbation_words(rows, p, composites, row, (blank_change or {}).get(p), oracle)
        lines += verdicts(rows, p, composites, row, combos)
    lines += ["## SA versus LRP, region by region", "", "![disagreement](disagreement.png)", "",
              "Blank = every pixel of the region equals the data's background value. Under a constant "
              "fill equal to the background, distorting a blank region changes nothing; under "
              "uniform noise it draws new strokes there. Rules whose relevance is proportional to "
              "the input (LRP-0/epsilon/z+ at the pixels, gradient x input) give blank regions "
              "exactly 0, SA does not (the gradient of a blank pixel need not be 0).", ""]
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text)
    return text


def summary(rows, perts, composites, oracle, row, combos=COMBOS):
    """The two cross-perturbation tables (for the README)."""
    names = [p.name for p in perts]
    out = ["## Summary", "",
           "AOPC ± standard error (larger under MoRF = the heatmap finds what the score depends on; "
           "smaller under LeRF = it finds what does not matter, negative = the score rose):", "",
           "| method | " + " | ".join(f"MoRF, `{p}`" for p in names) + " | "
           + " | ".join(f"LeRF, `{p}`" for p in names) + " |",
           "|---|" + "---|" * (2 * len(names))]
    methods = ["SA", "Gradient x Input"] + [f"LRP {c}" for c in composites] + (["Oracle"] if oracle else [])
    for m in methods:
        out.append(f"| {m} | " + " | ".join(_pm(row(p, m, "MoRF")) for p in names) + " | "
                   + " | ".join(_pm(row(p, m, "LeRF")) for p in names) + " |")
    out.append("| Random | " + " | ".join(_pm(row(p, "Random", "random")) for p in names * 2) + " |")
    out += ["", "Inessential-first orderings: AOPC(random) - AOPC, paired, with its 95% interval "
            "(positive = the score stays higher than under the random ordering):", "",
            "| ordering | " + " | ".join(f"`{p}`" for p in names) + " |", "|---|" + "---|" * len(names)]
    for c in composites:
        for combo in combos:
            out.append(f"| {P.COMBINED[combo].split(' ', 1)[0]} {combo}, SA + LRP {c} | " + " | ".join(
                _interval(row(p, f'SA + LRP {c}', combo)['random_minus_aopc'],
                          row(p, f'SA + LRP {c}', combo)['random_minus_low'],
                          row(p, f'SA + LRP {c}', combo)['random_minus_high']) for p in names) + " |")
    for m in ["SA", "Gradient x Input"] + (["Oracle"] if oracle else []):
        out.append(f"| LeRF, {m} | " + " | ".join(
            _interval(row(p, m, "LeRF")["random_minus_aopc"], row(p, m, "LeRF")["random_minus_low"],
                      row(p, m, "LeRF")["random_minus_high"]) for p in names) + " |")
    out.append("")
    return out


def _interval(m, lo, hi):
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def verdicts(rows, p, composites, row, combos=COMBOS):
    sa = row(p, "SA", "MoRF")
    rnd = row(p, "Random", "random")
    out = [f"**Verdicts under `{p}`** (paired per-image differences of AOPC, 95% intervals):", ""]
    # (i)
    sa_r = (sa["aopc"] - rnd["aopc"], -sa["random_minus_high"], -sa["random_minus_low"])
    out.append(f"- (i) SA > random under MoRF: **{verdict(sa_r[1], sa_r[2])}**, "
               f"AOPC(SA) - AOPC(random) = {_interval(*sa_r)} "
               f"(blank share of the first quarter: SA {_f(sa['blank_first_quarter'], 2)}, "
               f"random {_f(rnd['blank_first_quarter'], 2)}).")
    for c in composites:
        lr = row(p, f"LRP {c}", "MoRF")
        d = (lr["minus_sa"], lr["minus_sa_low"], lr["minus_sa_high"])
        out.append(f"- (i) LRP {c} > SA under MoRF: **{verdict(d[1], d[2])}**, "
                   f"AOPC(LRP) - AOPC(SA) = {_interval(*d)} (blank share {_f(lr['blank_first_quarter'], 2)}).")
    # (ii)
    for c in composites:
        for combo in combos:
            r = row(p, f"SA + LRP {c}", combo)
            v = verdict(r["random_minus_low"], r["random_minus_high"])
            rose = "rises above f(x_0)" if r["aopc_high"] < 0 else (
                "falls below f(x_0)" if r["aopc_low"] > 0 else "stays near f(x_0)")
            out.append(f"- (ii) {P.COMBINED[combo]} (SA + LRP {c}) above random: **{v}**, "
                       f"AOPC(random) - AOPC = {_interval(r['random_minus_aopc'], r['random_minus_low'], r['random_minus_high'])}; "
                       f"on average the score {rose} (AOPC {_pm(r)}).")
    out.append("")
    return out


def glance(rows, p, composites, row, combos=COMBOS):
    def short(v):
        return {"holds": "yes", "fails": "NO", "inconclusive": "?"}[v]
    lrp = " ".join(short(verdict(row(p, f"LRP {c}", "MoRF")["minus_sa_low"],
                                 row(p, f"LRP {c}", "MoRF")["minus_sa_high"])) for c in composites)
    sa = row(p, "SA", "MoRF")
    sa_v = short(verdict(-sa["random_minus_high"], -sa["random_minus_low"]))
    combos = "; ".join(
        f"{c}: " + " ".join(short(verdict(row(p, f"SA + LRP {c}", k)["random_minus_low"],
                                          row(p, f"SA + LRP {c}", k)["random_minus_high"])) for k in combos)
        for c in composites)
    return f"| `{p}` | {lrp} | {sa_v} | {combos} |"
