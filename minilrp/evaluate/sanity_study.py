"""The sanity-check study (run by ``python -m minilrp.experiments sanity``).

On a bundled model (or any minilrp weight file) and the bundled Fashion-MNIST test images, every
method (SA, gradient, gradient x input, SmoothGrad, Integrated Gradients, LRP presets, and the
input itself as a control that ignores the model) goes through the checks of
:mod:`minilrp.evaluate.sanity`:

- model-parameter randomisation, cascading from the top and one layer at a time (Adebayo et al.
  2018), four similarity measures per image and step;
- the random-logit test (Sixt et al. 2020);
- input invariance under a constant shift with the first bias compensated (Kindermans et al. 2017);
- conservation: the map's sum against the explained score, per layer from the LRP ledger.

It writes ``results.md`` (tables with 95% intervals over images, a plain-language sentence beside
each, the published findings checked, the exact command), ``results.csv``, ``scores.npz`` (every
per-image value), ``settings.json`` and figures into ``--out``. A similarity counts as "changed"
when its 95% interval lies below ``--threshold`` (default 0.5) and "unchanged" when it lies above;
the verdict measure is ``--measure`` (default Spearman of |map|, Adebayo et al.'s main measure).
"""
from __future__ import annotations

import csv
import json
import os
import time

import numpy as np

from . import narrative as T
from . import perturbation as P
from . import sanity as S
from .perturbation_study import read_settings
from .similarity import LABELS, MEASURES, compare
from ..errors import MinilrpError

DEFAULT_METHODS = ("input", "sa", "gradient", "gradient_x_input", "smoothgrad", "integrated_gradients",
                   "LRP-0", "EpsilonGammaBox", "EpsilonPlusFlat", "EpsilonPlus", "EpsilonAlpha2Beta1")
QUICK_METHODS = ("input", "sa", "gradient", "gradient_x_input", "LRP-0", "EpsilonGammaBox",
                 "EpsilonAlpha2Beta1")
ORDERS = ("cascading", "independent")
KEEP = 2  # images whose maps after every randomisation step are kept for the figure


def check_options(args):
    """Validate every option before anything is computed; -> (n_images, method specs)."""
    n = args.n_images if args.n_images is not None else (16 if args.quick else 100)
    if n < 2:
        raise MinilrpError(f"--n-images must be at least 2 (for intervals), got {n}")
    specs = [s.strip() for s in args.methods.split(",") if s.strip()] if args.methods else \
        list(QUICK_METHODS if args.quick else DEFAULT_METHODS)
    S.methods_from(specs)  # names resolve, none twice
    if args.measure not in MEASURES:
        raise MinilrpError(f"--measure must be one of {', '.join(MEASURES)}, got {args.measure!r}")
    if not -1 < args.threshold < 1:
        raise MinilrpError(f"--threshold must lie in (-1, 1), got {args.threshold}")
    if not 0 < args.topk <= 1:
        raise MinilrpError(f"--topk is a share of the pixels in (0, 1], got {args.topk}")
    if not np.isfinite(args.shift) or args.shift == 0:
        raise MinilrpError(f"--shift must be a finite non-zero number, got {args.shift}")
    P._check_seed(args.seed)
    return n, specs


def writable(out):
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise MinilrpError(f"cannot write the output folder {out}: {e.strerror or e}") from None


def run_sanity(args, command):
    """Compute every check, save the per-image values, then :func:`write_report`."""
    from ..models.data import load_model, load_samples
    from tqdm import tqdm
    from ..explain.composites import get_composite
    t_start = time.perf_counter()
    n, specs = check_options(args)
    net = load_model(args.model)
    images, labels, _ = load_samples()
    if n > len(images):
        raise MinilrpError(f"--n-images {n}: only {len(images)} bundled test images")
    if net.input_shape != (1,) + images.shape[1:]:
        raise MinilrpError(f"model {net.name} takes input {net.input_shape}, not the bundled 28x28 "
                           "Fashion-MNIST samples")
    methods = S.methods_from(specs)
    writable(args.out)
    x = net.preprocess(images[:n])
    t = net.targets(None, P.forward_batched(net, x))
    layers = S.parameter_layers(net)
    bar = tqdm(total=len(methods) * (1 + 2 * len(layers) + 1 + 2), disable=args.no_progress, unit="map set")

    def advance(n, label):
        bar.set_postfix_str(label, refresh=False)
        bar.update(n)
    originals = {}
    for m in methods:
        originals[m.name] = m.maps(net, x, t)
        advance(1, f"original: {m.name}")
    scores, timing = {}, {}
    for order in ORDERS:
        t0 = time.perf_counter()
        r = S.mprt(net, x, methods, order, target=t, seed=args.seed, k=args.topk, keep=KEEP,
                   originals=originals, progress=lambda label: advance(len(methods), label))
        timing[f"mprt {order}"] = time.perf_counter() - t0
        for name in r.similarity:
            for s in MEASURES:
                scores[f"mprt|{order}|{name}|{s}"] = r.similarity[name][s]
                if order == "cascading":
                    scores[f"chance|{name}|{s}"] = r.chance[name][s]
            scores[f"maps|{order}|{name}"] = r.maps[name]
        steps = r.labels
    t0 = time.perf_counter()
    rl = S.random_logit(net, x, methods, target=t, seed=args.seed, k=args.topk, originals=originals)
    timing["random logit"] = time.perf_counter() - t0
    advance(len(methods), "random logit")
    scores["logit|others"] = rl["others"]
    for name, sim in rl["similarity"].items():
        for s in MEASURES:
            scores[f"logit|{name}|{s}"] = sim[s]
    t0 = time.perf_counter()
    inv = S.input_invariance(net, x, methods, args.shift, target=t, k=args.topk)
    timing["input invariance"] = time.perf_counter() - t0
    advance(len(methods), "input invariance")
    scores["invariance|logit_change"] = inv["logit_change"]
    for name in inv["difference"]:
        scores[f"invariance|{name}|difference"] = inv["difference"][name]
        for s in MEASURES:
            scores[f"invariance|{name}|{s}"] = inv["similarity"][name][s]
    t0 = time.perf_counter()
    cons = S.conservation(net, x, methods, target=t)
    timing["conservation"] = time.perf_counter() - t0
    advance(len(methods), "conservation")
    bar.close()
    ledger = {}
    for name, e in cons.items():
        scores[f"conservation|{name}|score"] = e["score"]
        scores[f"conservation|{name}|total"] = e["total"]
        for j, row in enumerate(e.get("layers", [])):
            for key in ("entering", "leaving", "bias", "stabiliser", "dropped", "residual"):
                scores[f"ledger|{name}|{j}|{key}"] = row[key]
        ledger[name] = [[row["index"], row["layer"], row["rule"]] for row in e.get("layers", [])]
    for m in methods:
        scores[f"zeros|{m.name}"] = (originals[m.name] == 0).reshape(n, -1).mean(axis=1)
    scores["examples"] = x[:KEEP]
    scores["targets"] = t
    # Sixt et al.: LRP-0 / epsilon maps against gradient x input's, on the original model
    gxi = S.GRADIENT_METHODS["gradient_x_input"].name
    if gxi in originals:
        for m in methods:
            if m.composite is not None:
                scores[f"likeness|{m.name}|{gxi}"] = compare(originals[m.name], originals[gxi], args.topk)["spearman"]
    settings = dict(model=args.model, n_images=n, accuracy=float((t == labels[:n]).mean()),
                    image_shape=list(x.shape[1:]), methods=[m.name for m in methods], specs=specs,
                    steps=steps, seed=args.seed, shift=args.shift, padding=inv["padding"],
                    threshold=args.threshold, measure=args.measure, topk=args.topk,
                    tol=1e-6, rules={m.name: [r.label() for r in get_composite(m.composite).rules(net) if r is not None]
                                     for m in methods if m.composite is not None},
                    sums_to={m.name: m.sums_to for m in methods if m.sums_to}, ledger=ledger,
                    signed={m.name: m.name not in ("SA", "Input (control)") for m in methods},
                    timing=timing, elapsed=time.perf_counter() - t_start, command=command)
    np.savez_compressed(os.path.join(args.out, "scores.npz"), **scores)
    with open(os.path.join(args.out, "settings.json"), "w") as f:
        json.dump(settings, f, indent=1)
    return write_report(args.out)


def short_checks(net, x, methods, seed=0, threshold=0.5, measure="spearman_abs", shift=-1.0):
    """The checks at a glance for a few images (the demo's section): cascading randomisation,
    random logit and input invariance of every method, with the sentences of the full report.
    -> {"header", "rows" (one per method), "words" (sentences), "figure" (a matplotlib Figure)}."""
    from ..explain.composites import get_composite
    from ..pictures import plots
    methods = S.methods_from(methods)
    t = net.targets(None, P.forward_batched(net, x))
    originals = {m.name: m.maps(net, x, t) for m in methods}
    r = S.mprt(net, x, methods, target=t, seed=seed, originals=originals)
    rl = S.random_logit(net, x, methods, target=t, seed=seed, originals=originals)
    inv = S.input_invariance(net, x, methods, shift, target=t)
    ml = LABELS[measure]
    grad = next((m.name for m in methods if m.name in ("Gradient", "SA")), None)
    grad_v = None if grad is None else [S.similarity_verdict(S.interval(v), threshold)
                                        for v in r.similarity[grad][measure]]
    rows, words, curves = [], [], {}
    for m in methods:
        summ = [S.interval(v) for v in r.similarity[m.name][measure]]
        verdicts = [S.similarity_verdict(s, threshold) for s in summ]
        lg = S.interval(rl["similarity"][m.name][measure])
        lv = S.similarity_verdict(lg, threshold)
        d = inv["difference"][m.name]
        ok = d <= 1e-6
        rows.append((m.name, f"{summ[0]['mean']:.2f} {verdicts[0]}", f"{summ[-1]['mean']:.2f} {verdicts[-1]}",
                     f"{lg['mean']:.2f} {lv}", f"{int(ok.sum())}/{len(ok)}"))
        words.append(T.randomisation(m.name, r.labels, verdicts, summ, ml, threshold, "cascading"))
        if m.composite is not None and grad_v is not None:
            rules = [x_.label() for x_ in get_composite(m.composite).rules(net) if x_ is not None]
            reason = T.alpha_beta_reason(m.name, rules, verdicts, grad_v)
            if reason:
                words.append(reason)
        words.append(T.random_logit(m.name, lg, ml, threshold, lv))
        words.append(T.invariance(m.name, float(ok.mean()), float(np.median(d)), float(d.max()), 1e-6))
        c = np.concatenate([np.ones((len(x), 1)), r.similarity[m.name][measure].T], axis=1)
        curves[m.name] = c[np.isfinite(c).all(axis=1)]
    fig = plots.plot_curves({k: v for k, v in curves.items() if len(v)}, band="ci",
                            title=f"{net.name}: cascading randomisation, {len(x)} images",
                            ylabel=f"{ml} with the original map")
    ax = fig.axes[0]
    ax.set_xticks(range(len(r.labels) + 1), ["original"] + [" ".join(lab.split(" ")[:2]) for lab in r.labels],
                  fontsize=7)
    ax.set_xlabel("layers randomised (top first)")
    ax.axhline(threshold, color="k", ls="--", lw=0.8)
    header = ["method", "MPRT, top layer", "MPRT, all layers", "random logit", "input-invariant images"]
    return {"header": header, "rows": rows, "words": words, "figure": fig}


# ============================================================================== the report

def _load(out):
    settings = read_settings(out, "scores.npz")
    with np.load(os.path.join(out, "scores.npz")) as f:
        scores = {k: f[k] for k in f.files}
    return settings, scores


def analyse(settings, scores) -> list:
    """One row per (test, order, step, method, measure): the mean with its 95% interval and the
    verdict against the threshold."""
    rows = []
    th = settings["threshold"]

    def add(test, order, step, layer, method, measure, values, verdict=None):
        s = S.interval(values)
        rows.append(dict(test=test, order=order, step=step, layer=layer, method=method, measure=measure,
                         mean=s["mean"], se=s["se"], low=s["low"], high=s["high"], n=s["n"],
                         undefined=s["undefined"],
                         verdict=verdict if verdict is not None else S.similarity_verdict(s, th)))
    for name in settings["methods"]:
        for order in ORDERS:
            for s in MEASURES:
                sim = scores[f"mprt|{order}|{name}|{s}"]
                for k, label in enumerate(settings["steps"]):
                    add("mprt", order, k + 1, label, name, s, sim[k])
        for s in MEASURES:
            add("chance", "", 0, "", name, s, scores[f"chance|{name}|{s}"], verdict="")
            add("random logit", "", 0, "", name, s, scores[f"logit|{name}|{s}"])
            add("input invariance", "", 0, "", name, s, scores[f"invariance|{name}|{s}"], verdict="")
        d = scores[f"invariance|{name}|difference"]
        inv = float((d <= settings["tol"]).mean())
        add("input invariance", "", 0, "", name, "relative change", d,
            verdict="invariant" if inv == 1 else ("not invariant" if inv == 0 else "partly invariant"))
        if f"conservation|{name}|score" in scores:
            ratio = scores[f"conservation|{name}|total"] / scores[f"conservation|{name}|score"]
            add("conservation", "", 0, "", name, "sum / score", ratio, verdict="")
    return rows


def _row(rows, **key):
    return next(r for r in rows if all(r[k] == v for k, v in key.items()))


def write_report(out):
    """Tables, figures and sentences from the files a run left in ``out`` (settings.json,
    scores.npz): ``--report-only`` redoes them without recomputing."""
    settings, scores = _load(out)
    rows = analyse(settings, scores)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    figures = write_figures(out, settings, scores)
    text = markdown(settings, scores, rows, figures)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    return text, rows


def _ci(r, digits=2):
    if not np.isfinite(r["mean"]):
        return "undefined"
    text = f"{r['mean']:.{digits}f} [{r['low']:.{digits}f}, {r['high']:.{digits}f}]"
    return text + (f" ({r['undefined']} undef.)" if r["undefined"] else "")


def verdicts_of(rows, name, order, measure, n_steps):
    return [_row(rows, test="mprt", order=order, step=k + 1, method=name, measure=measure)["verdict"]
            for k in range(n_steps)]


def markdown(settings, scores, rows, figures) -> str:
    s = settings
    methods, steps, measure, th = s["methods"], s["steps"], s["measure"], s["threshold"]
    ml = LABELS[measure]
    L = len(steps)
    lines = [f"# Sanity checks on {s['model']}", "", f"Command: `{s['command']}`", "",
             f"{s['n_images']} test images {tuple(s['image_shape'])} (accuracy {100 * s['accuracy']:.1f}%; "
             f"target = the predicted class of the original model, kept for every randomised copy); seed "
             f"{s['seed']}; randomised layers re-drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's "
             f"default initialisation); top-k = {100 * s['topk']:.0f}% of the pixels; input shift c = {s['shift']:g}; "
             f"computed in {s['elapsed']:.1f} s.", "",
             "How to read: every similarity compares a method's map of an image with its map under a "
             "changed model or class, image by image (1 = the same ranking, 0 = unrelated); the tables give "
             "the mean over images with its 95% interval. A map counts as **changed** when the interval lies "
             f"below {th} in the verdict measure ({ml}), **unchanged** when it lies above. A method that "
             "explains the model should change when the model is replaced by noise and when another class is "
             "explained, and should not change when the input shifts in a way the model ignores. `chance`: the "
             "similarity of an image's map with the next image's map (what unrelated maps of that method look "
             "like on these images).", ""]
    lines += findings(s, scores, rows)
    lines += glance(s, scores, rows)
    # ---- randomisation
    for order in ORDERS:
        title = ("cascading, from the top layer down" if order == "cascading"
                 else "one layer at a time")
        lines += [f"## Model-parameter randomisation, {title} (Adebayo et al. 2018)", "",
                  f"{ml} of each step's maps with the original maps (step k: "
                  + ("the top k layers randomised" if order == "cascading" else "only that layer randomised")
                  + "):", "",
                  "| method | " + " | ".join(f"`{lab}`" for lab in steps) + " | chance |",
                  "|---|" + "---|" * (L + 1)]
        for name in methods:
            lines.append(f"| {name} | " + " | ".join(
                _ci(_row(rows, test="mprt", order=order, step=k + 1, method=name, measure=measure))
                for k in range(L)) + f" | {_ci(_row(rows, test='chance', method=name, measure=measure))} |")
        lines += ["", f"![{order}](mprt_{order}.png)", ""]
        others = [m for m in MEASURES if m != measure]
        lines += ["Other measures (mean over images), " + ", ".join(LABELS[m] for m in others) + ":", "",
                  "| method | " + " | ".join(f"`{lab}`" for lab in steps) + " |", "|---|" + "---|" * L]
        for name in methods:
            cells = []
            for k in range(L):
                means = [_row(rows, test="mprt", order=order, step=k + 1, method=name, measure=m)["mean"] for m in others]
                cells.append(" / ".join(f"{v:.2f}" if np.isfinite(v) else "undef." for v in means))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "In words:", ""]
        grad = next((g for g in ("Gradient", "SA") if g in methods), None)
        for name in methods:
            v = verdicts_of(rows, name, order, measure, L)
            summ = [_row(rows, test="mprt", order=order, step=k + 1, method=name, measure=measure) for k in range(L)]
            lines.append("- " + T.randomisation(name, steps, v, summ, ml, th, order))
            if order == "cascading":
                reasons = []
                if grad is not None and name in s["rules"]:
                    reasons.append(T.alpha_beta_reason(name, s["rules"][name], v,
                                                       verdicts_of(rows, grad, order, measure, L)))
                if "unchanged" in v and name != "Input (control)":  # the control: see the findings
                    reasons.append(T.input_zeros_reason(
                        name, float(np.mean(scores[f"zeros|{name}"])),
                        _row(rows, test="chance", method=name, measure=measure),
                        _row(rows, test="mprt", order=order, step=L, method=name, measure="spearman")))
                lines += [f"  {r}" for r in reasons if r]
        lines.append("")
    lines += ["Example maps (first image): the original, then after each cascading step. SA and the input "
              "on a sequential colour map, the signed maps red (+) / blue (-), each scaled to its own maximum.",
              "", "![examples](mprt_examples.png)", ""]
    # ---- random logit
    lines += ["## Random logit (Sixt et al. 2020)", "",
              "Each image's map for a random other class against its map for the explained class:", "",
              "| method | " + " | ".join(LABELS[m] for m in MEASURES) + " | verdict |", "|---|" + "---|" * (len(MEASURES) + 1)]
    for name in methods:
        lines.append(f"| {name} | " + " | ".join(_ci(_row(rows, test="random logit", method=name, measure=m))
                                                 for m in MEASURES)
                     + f" | {_row(rows, test='random logit', method=name, measure=measure)['verdict']} |")
    lines += ["", "In words:", ""]
    for name in methods:
        r = _row(rows, test="random logit", method=name, measure=measure)
        lines.append("- " + T.random_logit(name, r, ml, th, r["verdict"]))
    # ---- input invariance
    lc = scores["invariance|logit_change"]
    pad = s["padding"]
    lines += ["", "## Input invariance (Kindermans et al. 2017)", "",
              f"Every input value shifted by c = {s['shift']:g}, the first layer's bias compensated "
              f"(b' = b - W c), in float64: the compensated network's logits equal the original's to "
              f"{lc.max():.1e} (largest over images and classes), so any change in a map is the method's. "
              + (f"The first conv pads by {pad}: its padding is made part of the input first (the shift "
                 "must reach it too), and maps are compared on the image pixels. " if pad else "")
              + f"Relative change = max |A' - A| / max |A| per image; invariant when <= {s['tol']:g}.", "",
              "| method | invariant images | median change | largest change | Spearman | verdict |",
              "|---|---|---|---|---|---|"]
    for name in methods:
        d = scores[f"invariance|{name}|difference"]
        r = _row(rows, test="input invariance", method=name, measure="relative change")
        sp = _row(rows, test="input invariance", method=name, measure="spearman")
        lines.append(f"| {name} | {int((d <= s['tol']).sum())}/{len(d)} | {np.median(d):.2g} | {d.max():.2g} | "
                     f"{_ci(sp)} | {r['verdict']} |")
    lines += ["", "In words:", ""]
    for name in methods:
        d = scores[f"invariance|{name}|difference"]
        lines.append("- " + T.invariance(name, float((d <= s["tol"]).mean()), float(np.median(d)),
                                         float(d.max()), s["tol"]))
    # ---- conservation
    lines += ["", "## Conservation and completeness", "",
              "The sum of each attribution against the score it explains (LRP from the target logit: f(x); "
              "Integrated Gradients: f(x) - f(x0), x0 = the lower end of the input range). For LRP, the "
              "ledger says where the rest went (shares of the score, mean over images). SA and gradients "
              "are not attributions of the score and are left out.", "",
              "| method | sum / score | bias | stabiliser | dropped | largest unexplained |", "|---|---|---|---|---|---|"]
    words = []
    for name in methods:
        if f"conservation|{name}|score" not in scores:
            continue
        r = _row(rows, test="conservation", method=name)
        shares, resid = _ledger_shares(s, scores, name)
        if shares is None:
            lines.append(f"| {name} | {_ci(r, 3)} | | | | |")
        else:
            lines.append(f"| {name} | {_ci(r, 3)} | {100 * shares['bias']:.2f}% | {100 * shares['stabiliser']:.3f}% | "
                         f"{100 * shares['dropped']:.3f}% | {resid:.1e} |")
        words.append("- " + T.conservation(name, r, shares, resid, s["sums_to"][name], s["rules"].get(name, ())))
    lines += ["", "In words:", ""] + words + [""]
    for name in methods:
        if s["ledger"].get(name):
            lines += [f"Per layer, {name} (shares of the explained logit, mean over images):", "",
                      "| layer | rule | entering | leaving | bias | stabiliser | dropped |", "|---|---|---|---|---|---|---|"]
            f = scores[f"conservation|{name}|score"]
            for j, (index, layer, rule) in enumerate(s["ledger"][name]):
                v = {k: _share(scores[f"ledger|{name}|{j}|{k}"], f)
                     for k in ("entering", "leaving", "bias", "stabiliser", "dropped")}
                lines.append(f"| {index} {layer} | {rule} | {100 * v['entering']:.1f}% | {100 * v['leaving']:.1f}% | "
                             f"{100 * v['bias']:.2f}% | {100 * v['stabiliser']:.3f}% | {100 * v['dropped']:.3f}% |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _share(values, f):
    ok = f != 0
    return float(np.mean(values[ok] / f[ok])) if ok.any() else float("nan")


def _ledger_shares(s, scores, name):
    if not s["ledger"].get(name):
        return None, None
    f = scores[f"conservation|{name}|score"]
    n_layers = len(s["ledger"][name])
    shares = {k: sum(_share(scores[f"ledger|{name}|{j}|{k}"], f) for j in range(n_layers))
              for k in ("bias", "stabiliser", "dropped")}
    resid = max(float(np.max(np.abs(scores[f"ledger|{name}|{j}|residual"][f != 0] / f[f != 0])))
                for j in range(n_layers))
    return shares, resid


def _short(r):
    return f"{r['mean']:.2f} {r['verdict']}" if np.isfinite(r["mean"]) else "undefined (constant maps)"


def glance(s, scores, rows) -> list:
    methods, measure, L = s["methods"], s["measure"], len(s["steps"])
    out = ["## At a glance", "",
           f"Verdict measure {LABELS[measure]}, threshold {s['threshold']}. MPRT: the similarity after "
           "randomising the top layer alone and after randomising every layer (cascading); random logit: "
           "the similarity of another class's map; invariance: images whose map is unchanged by the shift; "
           "sum / score: conservation.", "",
           "| method | MPRT, top layer | MPRT, all layers | random logit | input invariance | sum / score |",
           "|---|---|---|---|---|---|"]
    for name in methods:
        top = _row(rows, test="mprt", order="cascading", step=1, method=name, measure=measure)
        full = _row(rows, test="mprt", order="cascading", step=L, method=name, measure=measure)
        rl = _row(rows, test="random logit", method=name, measure=measure)
        d = scores[f"invariance|{name}|difference"]
        cons = next((r for r in rows if r["test"] == "conservation" and r["method"] == name), None)
        out.append(f"| {name} | {_short(top)} | {_short(full)} | {_short(rl)} | {int((d <= s['tol']).sum())}/{len(d)} | "
                   + (f"{cons['mean']:.3f}" if cons else "n/a") + " |")
    return out + [""]


def findings(s, scores, rows) -> list:
    """The published findings, each checked on this run's numbers: holds / does not hold /
    inconclusive, or not tested when its methods were not run."""
    methods, measure, L = s["methods"], s["measure"], len(s["steps"])
    out = ["## The published findings, checked on this run", ""]

    def sim(name, step):
        return scores[f"mprt|cascading|{name}|{measure}"][step]

    grad = next((g for g in ("Gradient", "SA") if g in methods), None)
    if grad is not None:
        r = _row(rows, test="mprt", order="cascading", step=1, method=grad, measure=measure)
        word = {"changed": "**holds**", "unchanged": "**does not hold**"}.get(r["verdict"], "**inconclusive**")
        out.append(f"- Gradient maps are sensitive to the model's parameters (Adebayo et al. 2018): {word}: "
                   f"randomising only the top layer leaves {grad}'s maps at {LABELS[measure]} {_ci(r)}.")
        for name in methods:
            rules = s["rules"].get(name, [])
            if not any(r_.startswith(("ZPlus", "AlphaBeta")) for r_ in rules):
                continue
            diffs = [S.interval(sim(name, k) - sim(grad, k)) for k in range(L)]
            above = [k for k, d in enumerate(diffs) if d["low"] > 0]
            below = [k for k, d in enumerate(diffs) if d["high"] < 0]
            word = ("**holds**" if len(above) == L else "**does not hold**" if len(below) == L else
                    f"**holds at {len(above)} of {L} steps**")
            d = diffs[-1]
            out.append(f"- z+ / alpha-beta maps are less sensitive to randomisation than the gradient (Sixt et al. "
                       f"2020), {name}: {word}: paired {LABELS[measure]}({name}) - {LABELS[measure]}({grad}) "
                       f"with every layer randomised = {T.interval(d)}.")
    gxi = "Gradient x Input"
    for name in methods:
        key = f"likeness|{name}|{gxi}"
        rules = s["rules"].get(name, [])
        if key not in scores or not rules or not all(r_.startswith("Epsilon") or r_.startswith("WinnerTakeAll")
                                                      for r_ in rules):
            continue
        v = S.interval(scores[key])
        word = "**holds**" if v["low"] > 0.9 else ("**does not hold**" if v["high"] < 0.9 else "**inconclusive**")
        out.append(f"- LRP-0 / epsilon maps behave like gradient x input (Sixt et al. 2020; Ancona et al. 2018), "
                   f"{name}: {word} (> 0.9): Spearman of the two maps on the original model {_ci(v, 3)}.")
    for name, should in (("Gradient", True), ("SA", True), (gxi, False)):
        if name not in methods:
            continue
        d = scores[f"invariance|{name}|difference"]
        share = float((d <= s["tol"]).mean())
        ok = share == 1 if should else share == 0
        out.append(f"- {name} is {'' if should else 'not '}input-invariant (Kindermans et al. 2017): "
                   f"{'**holds**' if ok else '**does not hold**'}: {int((d <= s['tol']).sum())} of {len(d)} maps "
                   f"unchanged by the shift (largest relative change {d.max():.1e}).")
    if "Input (control)" in methods:
        r = _row(rows, test="mprt", order="cascading", step=L, method="Input (control)", measure=measure)
        ok = r["verdict"] == "unchanged"
        out.append(f"- Control: the input itself as a map ignores the model, so the randomisation test must flag it: "
                   f"{'**flagged**' if ok else '**not flagged**'} ({LABELS[measure]} {_ci(r)} with every layer randomised).")
    return out + [""]


def write_figures(out, settings, scores) -> list:
    from matplotlib.figure import Figure
    from ..pictures import plots, render
    methods, steps = settings["methods"], settings["steps"]
    figs = []
    for order in ORDERS:
        fig = Figure(figsize=(17, 4.4), layout="constrained")
        axes = fig.subplots(1, len(MEASURES))
        for ax, m in zip(axes, MEASURES):
            curves = {}
            for name in methods:
                sim = scores[f"mprt|{order}|{name}|{m}"].T  # (N, S)
                c = np.concatenate([np.ones((len(sim), 1)), sim], axis=1)
                curves[name] = c[np.isfinite(c).all(axis=1)]  # undefined images (constant maps) left out
            plots.plot_curves({k: v for k, v in curves.items() if len(v)}, band="ci", ax=ax,
                              title=f"{LABELS[m]}, {order}", ylabel="similarity to the original map")
            ax.set_xticks(range(len(steps) + 1), ["original"] + [lab.split(" ", 2)[0] + " " + lab.split(" ")[1]
                                                                 for lab in steps], fontsize=7)
            ax.set_xlabel("layers randomised (top first)" if order == "cascading" else "layer randomised alone")
            if m == settings["measure"]:
                ax.axhline(settings["threshold"], color="k", ls="--", lw=0.8)
        path = f"mprt_{order}.png"
        fig.savefig(os.path.join(out, path), dpi=100)
        figs.append(path)
    columns = []
    for k in range(len(steps) + 1):
        rgb = []
        for name in methods:
            mp = scores[f"maps|cascading|{name}"][k, :1]
            rgb.append((render.signed_rgb(mp) if settings["signed"][name] else render.unsigned_rgb(mp))[0])
        columns.append(("original" if k == 0 else f"+ {steps[k - 1].split(' ', 2)[0]} {steps[k - 1].split(' ')[1]}",
                        np.stack(rgb)))
    render.grid(columns, methods, path=os.path.join(out, "mprt_examples.png"),
                title=f"{settings['model']}: maps of the first image as layers are randomised (top first)")
    figs.append("mprt_examples.png")
    return figs
