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
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time

import numpy as np

from . import narrative
from . import perturbation as P
from ..errors import MinilrpError
from ..explain import sensitivity
from ..pictures import plots

DEFAULT_COMPOSITES = ("EpsilonGammaBox", "EpsilonPlusFlat", "EpsilonAlpha2Beta1")
DEFAULT_PERTURBATIONS = ("uniform", "constant:background")
COMBOS = ("sa_not_lrp", "lrp_negative", "counter_evidence", "consensus_irrelevant")
Z95 = 1.959964


class Progress:
    """A plain stderr progress bar (no dependency): ``[#####-----]  45%  12345/27000 images  3.2 s``."""

    def __init__(self, total, enabled=True, width=30, stream=None):
        self.total, self.done, self.width = max(1, int(total)), 0, width
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.label = ""

    def advance(self, n, label=None):
        self.done += n
        if label is not None:
            self.label = label
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.2 or self.done >= self.total):
            self.last = now
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
            self.stream.write(f"\r[{bar}] {100 * frac:5.1f}%  {self.done}/{self.total} images  "
                              f"{now - self.start:6.1f} s  {self.label:40.40s}")
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _slug(text):
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _batched(fn, x, batch):
    return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def heatmaps(net, x, composites, batch=256):
    """{method label: heatmap} for SA, gradient x input and each LRP composite."""
    maps = {"SA": _batched(lambda v: sensitivity.sa(net, v), x, batch),
            "Gradient x Input": _batched(lambda v: sensitivity.gradient_x_input(net, v), x, batch)}
    for c in composites:
        maps[f"LRP {c}"] = _batched(lambda v: net.relevance(v, c), x, batch)
    return maps


def paired(a, b):
    """Mean and 95% interval of the per-image difference a - b."""
    s = P.summarize(np.asarray(a) - np.asarray(b))
    return s["mean"], s["low"], s["high"]


def verdict(low, high):
    return "holds" if low > 0 else ("fails" if high < 0 else "inconclusive")


def run_perturbation(args, command):
    from ..models.data import load_model, load_samples
    t_start = time.perf_counter()
    n_images = args.n_images if args.n_images is not None else (24 if args.quick else 500)
    composites = (args.composites.split(",") if args.composites else
                  (DEFAULT_COMPOSITES[:2] if args.quick else DEFAULT_COMPOSITES))
    perturbations = args.perturbation or list(DEFAULT_PERTURBATIONS)
    oracle_draws = min(args.oracle_draws, 1) if args.quick else args.oracle_draws
    if n_images < 2:
        raise MinilrpError(f"--n-images must be at least 2 (for standard errors), got {n_images}")
    if oracle_draws < 0 or args.n_draws < 1:
        raise MinilrpError("--oracle-draws must be >= 0 and --n-draws >= 1")
    perts = [P.get_perturbation(s) for s in perturbations]
    net = load_model(args.model)
    images, labels, classes = load_samples()
    if n_images > len(images):
        raise MinilrpError(f"--n-images {n_images}: only {len(images)} bundled test images")
    x = net.preprocess(images[:n_images])
    labels = labels[:n_images]
    regions = P.grid(x.shape[1:], args.region_size)
    R, N = regions.n_regions, n_images
    L = R
    predicted = P.forward_batched(net, x, args.batch_size).argmax(axis=1)

    maps = heatmaps(net, x, composites)
    scores = {m: P.region_scores(h, regions) for m, h in maps.items()}
    orders = {}
    for m, s in scores.items():
        orders[(m, "MoRF")] = P.order_regions(s, "morf", args.seed)
        orders[(m, "LeRF")] = P.order_regions(s, "lerf", args.seed)
    orders[("Random", "random")] = P.random_order(N, R, args.seed)
    for c in composites:
        for combo in COMBOS:
            if combo == "lrp_negative":  # (b) is LRP's LeRF on a signed map: reuse its curve
                continue
            orders[(f"SA + LRP {c}", combo)] = P.combined_order(scores["SA"], scores[f"LRP {c}"],
                                                                combo, args.seed)

    # blank regions: every pixel equals the data's background (a constant fill there is a no-op)
    bg = P.Constant("background").resolve(net, x).fill_value
    blank_px = np.all(np.isclose(x, bg[None], atol=1e-6), axis=1)
    blank = P.region_scores((~blank_px).astype(np.float64), regions) == 0  # (N, R)

    per_curve = N * L * 1
    n_random = sum(p.stochastic for p in perts)
    total = (len(perts) * (len(orders) + (2 if oracle_draws else 0)) * per_curve
             + n_random * (args.n_draws - 1) * (len(orders) + 2) * per_curve
             + sum(N * R * (oracle_draws if p.stochastic else 1) for p in perts if oracle_draws))
    bar = Progress(total, enabled=not args.no_progress)
    curves, oracle_orders = {}, {}
    for pert in perts:
        name = pert.name
        run_orders = dict(orders)
        if oracle_draws:
            tick = [0]

            def prog(done, _total, tick=tick, name=name):
                bar.advance(done - tick[0], f"{name}: oracle")
                tick[0] = done
            osc = P.oracle_scores(net, x, regions, pert, n_draws=oracle_draws, seed=args.seed,
                                  score=args.score, batch_size=args.batch_size, progress=prog)
            run_orders[("Oracle", "MoRF")] = P.order_regions(osc, "morf", args.seed)
            run_orders[("Oracle", "LeRF")] = P.order_regions(osc, "lerf", args.seed)
            oracle_orders[(name, "Oracle", "MoRF")] = run_orders[("Oracle", "MoRF")]
            oracle_orders[(name, "Oracle", "LeRF")] = run_orders[("Oracle", "LeRF")]
        for key, order in run_orders.items():
            tick = [0]

            def prog(done, _total, tick=tick, label=f"{name}: {key[0]} {key[1]}"):
                bar.advance(done - tick[0], label)
                tick[0] = done
            curves[(name,) + key] = P.perturbation_curves(
                net, x, regions, order, pert, score=args.score, n_draws=args.n_draws,
                seed=args.seed, batch_size=args.batch_size, progress=prog)
        for c in composites:  # (b): alias of LRP's LeRF
            curves[(name, f"SA + LRP {c}", "lrp_negative")] = curves[(name, f"LRP {c}", "LeRF")]
    bar.close()
    settings = dict(model=args.model, n_images=N, accuracy=float((predicted == labels).mean()),
                    image_shape=list(x.shape[1:]), region_size=regions.size, n_regions=R, steps=L,
                    perturbations=[p.name for p in perts], composites=list(composites), seed=args.seed,
                    n_draws=args.n_draws, oracle_draws=oracle_draws, score=args.score,
                    batch_size=args.batch_size, elapsed=time.perf_counter() - t_start,
                    n_distorted=total, command=command)
    os.makedirs(args.out, exist_ok=True)
    np.savez_compressed(os.path.join(args.out, "curves.npz"), **{"|".join(k): v for k, v in curves.items()})
    np.savez_compressed(os.path.join(args.out, "orders.npz"), blank=blank,
                        **{"|".join(k): v.astype(np.int32) for k, v in {**orders, **oracle_orders}.items()})
    with open(os.path.join(args.out, "settings.json"), "w") as f:
        json.dump(settings, f, indent=1)
    return write_report(args.out, net, x[:8], classes)


def write_report(out, net=None, x8=None, classes=None):
    """Tables, figures and verdicts from the files a run left in ``out`` (curves.npz,
    orders.npz, settings.json): ``--report-only`` redoes them without recomputing the curves."""
    from ..models.data import load_model, load_samples
    for name in ("settings.json", "curves.npz", "orders.npz"):
        if not os.path.exists(os.path.join(out, name)):
            raise MinilrpError(f"{os.path.join(out, name)} not found: --report-only needs the files "
                               "of an earlier run in --out")
    with open(os.path.join(out, "settings.json")) as f:
        settings = json.load(f)
    with np.load(os.path.join(out, "curves.npz")) as f:
        curves = {tuple(k.split("|")): f[k] for k in f.files}
    with np.load(os.path.join(out, "orders.npz")) as f:
        blank = f["blank"]
        orders = {tuple(k.split("|")): f[k].astype(np.int64) for k in f.files if k != "blank"}
    if net is None:
        net = load_model(settings["model"])
        images, _, classes = load_samples()
        x8 = net.preprocess(images[:min(8, settings["n_images"])])
    perts = [P.get_perturbation(p) for p in settings["perturbations"]]
    composites = settings["composites"]
    oracle = settings["oracle_draws"] > 0
    rows = analyse(curves, orders, perts, composites, blank, settings["steps"], oracle)
    write_csv(os.path.join(out, "results.csv"), rows)
    regions = P.grid(x8.shape[1:], settings["region_size"])
    main_lrp = composites[0]
    scores8 = {"SA": P.region_scores(sensitivity.sa(net, x8), regions),
               f"LRP {main_lrp}": P.region_scores(net.relevance(x8, main_lrp), regions)}
    predicted8 = net.forward(x8).argmax(1)
    figures = write_figures(out, curves, perts, composites, x8, scores8, regions, predicted8,
                            classes, oracle)
    # how much of the blank background each fill changes: the sentences beside the tables need it
    blank_change = {p.name: narrative.blank_changed(net, x8, p, settings["region_size"], settings["seed"])
                    for p in perts}
    report = write_markdown(os.path.join(out, "results.md"), rows, settings, perts,
                            composites, settings["command"], figures, oracle, blank_change)
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


def write_figures(out, curves, perts, composites, x, scores, regions, predicted, classes, oracle):
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
               if pn == name and o in COMBOS and main_lrp in m}
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


def write_markdown(path, rows, settings, perts, composites, command, figures, oracle, blank_change=None):
    def row(p, m, o):
        return next(r for r in rows if r["perturbation"] == p and r["method"] == m and r["ordering"] == o)

    s = settings
    lines = [f"# Region perturbation on {s['model']}", "",
             f"Command: `{command}`", "",
             f"{s['n_images']} test images {tuple(s['image_shape'])} (accuracy {100 * s['accuracy']:.1f}%; "
             f"target = the predicted class), {s['region_size']}x{s['region_size']} regions "
             f"({s['n_regions']}), {s['steps']} cumulative steps; score = target {s['score']}; "
             f"seed {s['seed']}; {s['n_draws']} noise draw(s) per step; oracle: "
             + (f"{s['oracle_draws']} draw(s) per region" if oracle else "off")
             + f"; {s['n_distorted']} distorted images scored in {s['elapsed']:.1f} s "
             "(steps that change no pixel reuse the previous score).", "",
             "AOPC = 1/(L+1) sum_k (f(x_0) - f(x_k)) averaged over images ± standard error. "
             "`rand - AOPC`: paired difference from the random ordering (positive = the score stays "
             "higher than under random) with its 95% interval. `oracle`: share of the oracle's "
             "achievable drop (MoRF) or rise (others) relative to random. `blank`: fraction of "
             "the first quarter of distorted regions that are pure background.", ""]
    lines += summary(rows, perts, composites, oracle, row)
    lines += ["### Verdicts at a glance", "",
              "yes = holds (95% interval of the paired difference above 0), NO = the opposite holds, "
              "? = inconclusive.", "",
              "| perturbation | (i) LRP > SA, per composite | (i) SA > random | (ii) combination above random, per composite: (a) (b) (c) (d) |",
              "|---|---|---|---|"]
    for pert in perts:
        lines.append(glance(rows, pert.name, composites, row))
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
            for combo in COMBOS:
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
        lines += verdicts(rows, p, composites, row)
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


def summary(rows, perts, composites, oracle, row):
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
        for combo in COMBOS:
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


def verdicts(rows, p, composites, row):
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
        for combo in COMBOS:
            r = row(p, f"SA + LRP {c}", combo)
            v = verdict(r["random_minus_low"], r["random_minus_high"])
            rose = "rises above f(x_0)" if r["aopc_high"] < 0 else (
                "falls below f(x_0)" if r["aopc_low"] > 0 else "stays near f(x_0)")
            out.append(f"- (ii) {P.COMBINED[combo]} (SA + LRP {c}) above random: **{v}**, "
                       f"AOPC(random) - AOPC = {_interval(r['random_minus_aopc'], r['random_minus_low'], r['random_minus_high'])}; "
                       f"on average the score {rose} (AOPC {_pm(r)}).")
    out.append("")
    return out


def glance(rows, p, composites, row):
    def short(v):
        return {"holds": "yes", "fails": "NO", "inconclusive": "?"}[v]
    lrp = " ".join(short(verdict(row(p, f"LRP {c}", "MoRF")["minus_sa_low"],
                                 row(p, f"LRP {c}", "MoRF")["minus_sa_high"])) for c in composites)
    sa = row(p, "SA", "MoRF")
    sa_v = short(verdict(-sa["random_minus_high"], -sa["random_minus_low"]))
    combos = "; ".join(
        f"{c}: " + " ".join(short(verdict(row(p, f"SA + LRP {c}", k)["random_minus_low"],
                                          row(p, f"SA + LRP {c}", k)["random_minus_high"])) for k in COMBOS)
        for c in composites)
    return f"| `{p}` | {lrp} | {sa_v} | {combos} |"
