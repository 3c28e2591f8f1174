"""python -m minilrp.demo: the tour of minilrp on a bundled Fashion-MNIST model.

Classifies sample images, explains them with sensitivity analysis (SA) and several LRP
presets, prints the relevance ledger of one image, evaluates the heatmaps by region
perturbation (MoRF, LeRF, an SA+LRP combined ordering, random) with AOPC, runs the sanity
checks (parameter randomisation, random logit, input invariance) on a few images, says in
words what the numbers mean, and writes the figures and a self-contained HTML report
(index.html) into --out.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from .errors import MinilrpError
from .evaluate import narrative
from .evaluate import perturbation as P
from .explain import sensitivity
from .explain.composites import PRESETS, get_composite
from .models.data import available_models, load_model, load_samples
from .models.images import IMAGE_SUFFIXES, load_image
from .pictures import plots, render, report

DEFAULT_COMPOSITES = "EpsilonGammaBox,EpsilonPlusFlat,EpsilonAlpha2Beta1"
RULES = {"lrp0": "LRP-0", "epsilon": "Epsilon", "gamma": "Gamma", "alphabeta": "AlphaBeta",
         "zplus": "ZPlus", "wsquare": "WSquare"}


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m minilrp.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fmnist-cnn",
                   help="bundled model name (see --list) or a path to a minilrp .npz file (default: fmnist-cnn)")
    p.add_argument("--images", nargs="+", default=["0-7"], metavar="SPEC",
                   help="sample indices of the bundled test images ('0-7', '3,5,11') or image files "
                        "(PNG/JPEG, converted to the model's input size and channels) (default: 0-7)")
    p.add_argument("--composite", default=DEFAULT_COMPOSITES,
                   help=f"comma-separated LRP presets (see --list) (default: {DEFAULT_COMPOSITES})")
    p.add_argument("--rule", action="append", default=[], metavar="NAME[:k=v,...]",
                   help="also explain with one rule on every layer, e.g. 'gamma:gamma=0.5' or "
                        f"'epsilon:epsilon=0.1' ({', '.join(RULES)}); repeatable")
    p.add_argument("--target", default=None,
                   help="class to explain, as an index or a class name (default: each image's prediction)")
    p.add_argument("--steps", type=int, default=20,
                   help="region-perturbation steps (4x4 regions on 28x28 images) (default: 20)")
    p.add_argument("--n-eval", type=int, default=64,
                   help="bundled test images used for the perturbation evaluation (default: 64)")
    p.add_argument("--perturbation", default="uniform",
                   help="how regions are distorted: uniform, constant[:zero|min|mean|background], blur, road "
                        "(default: uniform noise over the valid input range)")
    p.add_argument("--sanity-images", type=int, default=16,
                   help="bundled test images for the sanity checks (default: 16; --quick: 8; 0: skip them)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    p.add_argument("--out", default="minilrp-demo", help="output folder (default: ./minilrp-demo)")
    p.add_argument("--quick", action="store_true", help="a fast run (fewer images and steps), for tests")
    p.add_argument("--list", action="store_true", help="list bundled models, presets, rules and perturbations")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------
def list_everything():
    print("bundled models:")
    for name in available_models():
        net = load_model(name)
        acc = net.provenance.get("test_accuracy")
        print(f"  {name:12s} input {net.input_shape}, {len(net.layers)} layers"
              + (f", test accuracy {acc:.4f}" if acc is not None else ""))
    print("LRP presets (--composite):\n  " + ", ".join(PRESETS))
    print("single rules (--rule):\n  " + ", ".join(f"{k} ({v})" for k, v in RULES.items()))
    print("perturbations (--perturbation):\n  uniform, constant[:zero|min|mean|background|<value>], blur[:sigma], road[:noise]")


def composites_from(args):
    names = [c.strip() for c in args.composite.split(",") if c.strip()]
    specs = [(get_composite(n).name, get_composite(n)) for n in names]
    for spec in args.rule:
        name, _, params = spec.partition(":")
        preset = RULES.get(name.lower().replace("-", "").replace("_", ""))
        if preset is None:
            raise MinilrpError(f"unknown rule {name!r}; rules: {', '.join(RULES)}")
        kw = {}
        for item in filter(None, params.split(",")):
            key, eq, value = item.partition("=")
            try:
                kw[key.strip()] = float(value)
            except ValueError:
                raise MinilrpError(f"--rule {spec!r}: expected key=number, got {item!r}") from None
        specs.append((f"{preset}" + (f"({params})" if params else ""), get_composite(preset, **kw)))
    if not specs:
        raise MinilrpError("no LRP preset or rule given")
    return specs


def parse_indices(spec, n):
    idx = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise MinilrpError(f"--images {spec!r}: not an index list like '0-7' or '3,5,11', nor an image file")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if a > b or b >= n:
            raise MinilrpError(f"--images {spec!r}: indices must lie in 0..{n - 1}")
        idx.extend(range(a, b + 1))
    return idx


def resolve_target(spec, net):
    if spec is None:
        return None
    if re.fullmatch(r"-?\d+", spec):
        t = int(spec)
    else:
        names = [c.lower() for c in net.classes]
        if spec.lower() not in names:
            raise MinilrpError(f"--target {spec!r}: not a class index or name ({', '.join(net.classes)})")
        t = names.index(spec.lower())
    if not 0 <= t < net.n_classes:
        raise MinilrpError(f"--target {t} out of range: the model has classes 0..{net.n_classes - 1}")
    return t


def numba_cache_present():
    """Whether the kernels were compiled before (numba's on-disk cache next to the module or
    in NUMBA_CACHE_DIR)."""
    from .engine import kernels
    places = [Path(kernels.__file__).parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    places.append(Path.home() / ".cache" / "numba")
    return any(next(p.rglob("kernels._im2col*.nbi"), None) for p in places if p.is_dir())


# ------------------------------------------------------------------------------------------
def run(args):
    t_start = time.perf_counter()
    if args.quick:
        args.n_eval, args.steps = min(args.n_eval, 16), min(args.steps, 8)
        args.sanity_images = min(args.sanity_images, 8)
    if args.steps < 1 or args.n_eval < 1:
        raise MinilrpError("--steps and --n-eval must be at least 1")
    if args.sanity_images < 0 or args.sanity_images == 1 or args.sanity_images > 1000:
        raise MinilrpError("--sanity-images must be 0 (skip) or 2..1000")
    P.get_perturbation(args.perturbation)  # every option is checked before any work
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").write_text("")
        (out / ".write-test").unlink()
    except OSError as e:
        raise MinilrpError(f"cannot write the output folder {out}: {e.strerror or e}") from None
    if not numba_cache_present():
        print("First run: compiling minilrp's numba kernels (a few seconds, cached for later runs).")

    net = load_model(args.model)
    composites = composites_from(args)
    target = resolve_target(args.target, net)
    images, labels, classes = load_samples()
    if net.input_shape == (1,) + images.shape[1:]:  # the perturbation evaluation will run: its sizes
        regions = P.grid(net.input_shape)
        if args.steps > regions.n_regions:
            raise MinilrpError(f"--steps {args.steps}: a {net.input_shape[1]}x{net.input_shape[2]} image has "
                               f"{regions.n_regions} regions of {regions.size}x{regions.size}, so at most "
                               f"{regions.n_regions} steps")
        if args.n_eval > len(images):
            raise MinilrpError(f"--n-eval {args.n_eval}: there are {len(images)} bundled test images")
    notes = []
    files = [s for s in args.images if s.lower().endswith(IMAGE_SUFFIXES) or os.path.sep in s]
    if files:
        raw, truth = [], []
        for f in files:
            a, note = load_image(f, net)
            raw.append(a)
            truth.append("?")
            notes.append(note)
        x = net.check_input(((np.stack(raw) - net.mean[:, None, None]) / net.std[:, None, None]).astype(net.dtype))
        names = [Path(f).name for f in files]
    else:
        if net.input_shape != (1,) + images.shape[1:]:
            raise MinilrpError(f"model {net.name} takes input {net.input_shape}, not the bundled "
                               "28x28 Fashion-MNIST samples: give --images with picture files")
        idx = [i for s in args.images for i in parse_indices(s, len(images))]
        x = net.preprocess(images[idx])
        truth = [classes[labels[i]] for i in idx]
        names = [f"#{i}" for i in idx]

    # 1. predictions
    probs, pred = net.predict(x)
    rows = [(n, t, net.classes[p], f"{probs[i, p]:.3f}") for i, (n, t, p) in enumerate(zip(names, truth, pred))]
    print(f"\nModel {net.name} ({net.provenance.get('test_accuracy', float('nan')):.4f} test accuracy)")
    print(f"{'image':>8}  {'true':>12}  {'predicted':>12}  {'p':>6}")
    for r in rows:
        print(f"{r[0]:>8}  {r[1]:>12}  {r[2]:>12}  {r[3]:>6}")
    for note in notes:
        print("note:", note)

    # 2. explanations
    t = None if target is None else np.full(len(x), target)
    S = sensitivity.sa(net, x, target=t)
    lrp = {}
    for name, comp in composites:
        lrp[name] = net.relevance(x, comp, target=t)
        if len(lrp) == 1:
            ledger = net.ledger.table(0)
            ledger_name = name
    explained = net.classes[target] if target is not None else "the predicted class"
    print(f"\nRelevance ledger of image {names[0]} ({ledger_name}, explaining {explained}):\n{ledger}")
    low, high = net.input_low, net.input_high
    columns = [("input", render.image_rgb(x, low, high)), ("SA", render.unsigned_rgb(S))]
    columns += [(name, render.signed_rgb(R)) for name, R in lrp.items()]
    labels_ = [f"{n}: {net.classes[p]}" for n, p in zip(names, pred)]
    grid = render.grid(columns, labels_, path=out / "heatmaps.png",
                       title=f"{net.name}: SA (sequential) and LRP (red +, blue -), explaining {explained}")

    # 3. region perturbation on the bundled test images
    ev = None
    if net.input_shape == (1,) + images.shape[1:]:
        ev = evaluate(net, net.preprocess(images[:args.n_eval]), composites, args)
        ev["figure"].savefig(out / "curves.png", dpi=100)
    checks = None
    if net.input_shape == (1,) + images.shape[1:] and args.sanity_images:
        checks = sanity_checks(net, net.preprocess(images[:args.sanity_images]), composites, args)
        checks["figure"].savefig(out / "sanity.png", dpi=100)

    # 4. the report
    settings = [("model", net.name), ("images", " ".join(args.images)),
                ("LRP", ", ".join(lrp)), ("target", explained), ("perturbation", args.perturbation),
                ("steps", args.steps), ("evaluation images", args.n_eval if ev else "-"),
                ("seed", args.seed), ("initial relevance", "target logit x one-hot"),
                ("command", "python -m minilrp.demo " + " ".join(sys.argv[1:]))]
    sections = [("Settings", report.table(["setting", "value"], settings)),
                ("Predictions", report.table(["image", "true", "predicted", "p"], rows)
                 + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)),
                ("Heatmaps", f'<img alt="heatmap grid" src="{report.figure_uri(grid)}">'
                 '<p class="note">SA: squared gradient summed over channels, sequential map from 0. '
                 'LRP: relevance summed over channels, red positive, blue negative, symmetric per image.</p>'),
                (f"Relevance ledger of image {names[0]} ({ledger_name})", f"<pre>{html.escape(ledger)}</pre>")]
    if ev:
        sections += [("Region perturbation", f'<img alt="perturbation curves" src="{report.figure_uri(ev["figure"])}">'
                      f'<p class="note">{html.escape(ev["caption"])}</p>'),
                     ("AOPC", report.table(["method", "ordering", "AOPC", "± s.e."], ev["aopc"], "aopc")
                      + _words(ev["words"]))]
    if checks:
        sections += [("Sanity checks", report.table(checks["header"], checks["rows"], "sanity")
                      + f'<img alt="parameter randomisation" src="{report.figure_uri(checks["figure"])}">'
                      + f'<p class="note">{html.escape(checks["caption"])}</p>' + _words(checks["words"]))]
    (out / "index.html").write_text(report.page(f"minilrp demo: {net.name}", sections), encoding="utf-8")
    print(f"\nWrote {out / 'index.html'} (open it in a browser), heatmaps.png"
          + (", curves.png" if ev else "") + (", sanity.png" if checks else "")
          + f"  [{time.perf_counter() - t_start:.1f} s]")


def _words(sentences):
    """Sentences computed from the numbers, as an HTML list (``*x*`` marks emphasis)."""
    items = "".join("<li>" + re.sub(r"\*(.+?)\*", r"<em>\1</em>", html.escape(s)) + "</li>" for s in sentences)
    return f'<ul class="words">{items}</ul>'


def sanity_checks(net, x, composites, args):
    """Cascading parameter randomisation, random logit and input invariance of SA and every
    LRP preset on a few bundled images (minilrp.evaluate.sanity_study.short_checks)."""
    from dataclasses import replace
    from .evaluate import sanity, sanity_study
    methods = [sanity.method("sa")] + [replace(sanity.method(comp), name=f"LRP {name}") for name, comp in composites]
    checks = sanity_study.short_checks(net, x, methods, seed=args.seed)
    print(f"\nSanity checks ({len(x)} images; Spearman of |map| with the original, changed below 0.5):")
    print("  " + " | ".join(checks["header"]))
    for r in checks["rows"]:
        print("  " + " | ".join(r))
    checks["caption"] = (f"Each method's maps of {len(x)} test images as the layers are re-drawn at random from "
                         "the top (mean with a 95% band). A method that explains the model should change; "
                         "the full study: python -m minilrp.experiments sanity.")
    return checks


def evaluate(net, x, composites, args):
    """MoRF for SA and every LRP preset, LeRF for the first, one SA+LRP combined ordering and
    random, on the same noise draws; AOPC with standard errors."""
    regions = P.grid(x.shape[1:])
    steps = args.steps  # run() checked it fits the regions
    sa_scores = P.region_scores(sensitivity.sa(net, x), regions)
    lrp_scores = {name: P.region_scores(net.relevance(x, comp), regions) for name, comp in composites}
    first = next(iter(lrp_scores))
    orders = {("SA", "MoRF"): P.order_regions(sa_scores, "morf", args.seed)}
    for name, s in lrp_scores.items():
        orders[(name, "MoRF")] = P.order_regions(s, "morf", args.seed)
    orders[(first, "LeRF")] = P.order_regions(lrp_scores[first], "lerf", args.seed)
    orders[("SA+" + first, "sa_not_lrp")] = P.combined_order(sa_scores, lrp_scores[first], "sa_not_lrp", args.seed)
    orders[("random", "random")] = P.random_order(len(x), regions.n_regions, args.seed)
    from tqdm import tqdm
    pert = P.get_perturbation(args.perturbation)  # a bad name fails before the bar is drawn
    curves = {}
    with tqdm(total=len(orders) * len(x) * steps, unit="img", desc="region perturbation") as bar:
        for key, order in orders.items():
            seen = [0]

            def progress(done, total, seen=seen, label=" ".join(key)):
                bar.set_postfix_str(label, refresh=False)
                bar.update(done - seen[0])
                seen[0] = done
            curves[key] = P.perturbation_curves(net, x, regions, order, pert, steps=steps,
                                                seed=args.seed, progress=progress)
    table = []
    for (method, ordering), c in curves.items():
        s = P.summarize(P.aopc(c))
        table.append((method, ordering, f"{s['mean']:.3f}", f"{s['se']:.3f}"))
    print(f"\nRegion perturbation ({args.perturbation}, {steps} steps of {regions.size}x{regions.size} "
          f"regions, {len(x)} images): AOPC (larger = faster drop)")
    for r in table:
        print(f"  {r[0]:>28s} {r[1]:>10s}  {r[2]:>7s} ± {r[3]}")
    words = narrative.aopc_words(curves, orders, narrative.blank_regions(net, x, regions), args.perturbation,
                                 narrative.blank_changed(net, x[:8], args.perturbation, seed=args.seed),
                                 sa_key=("SA", "MoRF"))
    for w in words:
        print("  " + w)
    fig = plots.plot_curves({f"{m} {o}": c for (m, o), c in curves.items()},
                        title=f"{net.name}: mean target logit, {args.perturbation} perturbation")
    caption = (f"Mean curves over {len(x)} test images with ±1 standard error; x_k has the first k "
               f"regions of the ordering replaced ({args.perturbation}). AOPC = mean over k of f(x_0) - f(x_k).")
    return {"aopc": table, "figure": fig, "caption": caption, "words": words}


def main(argv=None) -> int:
    args = parse(argv)
    try:
        if args.list:
            list_everything()
        else:
            run(args)
    except MinilrpError as e:
        print(f"minilrp.demo: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"minilrp.demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
