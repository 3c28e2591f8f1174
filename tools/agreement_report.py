#!/usr/bin/env python
"""Print how closely minilrp agrees with Zennit 0.5.1 and torch autograd, as a Markdown table.

    .venv/bin/python tools/agreement_report.py                 # reads tests/fixtures/zennit_reference.npz
    .venv/bin/python tools/agreement_report.py --ref other.npz --models fmnist-cnn

Runs in the project environment WITHOUT torch or zennit: the Zennit side is the committed file
written by ``tools/zennit_reference.py`` (reference venv). For every model and method it runs
minilrp in float64 on the stored inputs and targets, with the initial relevance = target logit
x one-hot (one-hot for ``gradient``), and reports

* rel. error = max over images of  max|minilrp - zennit| / max|zennit|  (per image; the gate of
  tests/test_zennit_agreement.py is <= 1e-5);
* elementwise = max of |minilrp - zennit| / |zennit| over the entries with |zennit| >= 1e-3 x
  that image's max|zennit| (entries carrying at least 0.1 % of the peak).

Max pooling: Zennit sends a window's relevance to its *first* maximum (PyTorch's max_pool2d
backward); minilrp's default rule (WinnerTakeAll) splits ties evenly. Where tied windows carry
relevance the two differ, so on networks with max pooling each method is compared twice more,
each time with the same semantics on both sides: minilrp with ``WinnerTakeAll(ties="first")``
(all of a window's relevance to its first maximum in row-major order) against stock Zennit, and minilrp's default against Zennit plus a tie-splitting max-pool
hook (``heatmap_tiesplit`` in the reference file). Single rules on AvgPool2d: see ZENNIT_AVGPOOL.

Exit status 1 when a comparison with consistent semantics exceeds GATE = 1e-5.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REF = REPO / "tests" / "fixtures" / "zennit_reference.npz"
GATE = 1e-5
ELEMENT_FLOOR = 1e-3


def minilrp_spec(method, first_max=False, zennit_avgpool=False):
    """minilrp's composite for a method name of tools/zennit_reference.METHODS (None: the
    plain gradient). ``first_max``: max pools route relevance to the first maximum (Zennit's
    semantics). ``zennit_avgpool``: for the single-rule methods of ZENNIT_AVGPOOL, average
    pools get the rule Zennit effectively applies to them (see there)."""
    from minilrp import PRESETS, Composite, get_composite
    from minilrp import Flat, WinnerTakeAll

    if method == "gradient":
        return None
    if method == "Flat":
        comp = Composite("Flat", default=Flat())
    elif method in PRESETS:
        comp = get_composite(method)
    else:
        raise KeyError(f"no minilrp counterpart for method {method!r}")
    maxpool = WinnerTakeAll(ties="first") if first_max else None
    avgpool = ZENNIT_AVGPOOL.get(method) if zennit_avgpool else None
    return _swap(comp, maxpool, avgpool) if (maxpool or avgpool) else comp


# Zennit's single rules build their modified weights with ParamMod (ClampMod, GammaMod,
# w**2, ones), which only touches a module's *parameters*. AvgPool2d has none, so on it
#   Gamma, AlphaBeta, ZPlus  reduce to Epsilon(stabilizer): the pool's own weights 1/K^2 in
#       every term (AlphaBeta: alpha - beta = 1 times Epsilon);
#   WSquare, Flat  feed ones through the pool's own weights: R_j = sum_k R_k / (n_k + K^2 eps)
#       (n_k = in-image taps), i.e. minilrp's Flat with epsilon K^2 x 1e-6.
# minilrp's composites give average pools Epsilon in place of Gamma, AlphaBeta and ZPlus (the
# same as Zennit's effective rule), and apply WSquare and Flat to the pool's fixed weights 1/K^2
# (eps added to sum w^2 = n/K^4 or sum 1 = n), which differs from Zennit's effective Flat.
def _zennit_avgpool_rule(method, layer):
    from minilrp import Epsilon, Flat
    if method in ("Gamma", "AlphaBeta", "ZPlus"):
        return Epsilon(1e-6)
    return Flat(layer.kernel_size ** 2 * 1e-6)


ZENNIT_AVGPOOL = {m: (lambda layer, m=m: _zennit_avgpool_rule(m, layer))
                  for m in ("Gamma", "AlphaBeta", "ZPlus", "WSquare", "Flat")}


def _swap(comp, maxpool=None, avgpool=None):
    """A copy of composite ``comp`` with ``maxpool`` (a rule) on every max pool and
    ``avgpool`` (layer -> rule) on every average pool, when given."""
    from minilrp import Composite

    class Swapped(Composite):
        def __init__(self):
            super().__init__(comp.name + ("+ties=first" if maxpool else "") + ("+ZennitAvgPool" if avgpool else ""))

        def rules(self, net):
            from minilrp import AvgPool2d, MaxPool2d
            out = []
            for layer, r in zip(net.layers, comp.rules(net)):
                if maxpool is not None and isinstance(layer, MaxPool2d):
                    r = maxpool
                elif avgpool is not None and isinstance(layer, AvgPool2d):
                    r = avgpool(layer)
                out.append(r)
            return out

    return Swapped()


def run_minilrp(net, x, targets, method, first_max=False, zennit_avgpool=False, fast=True):
    if method == "gradient":
        return net.gradient(x, target=targets)
    return net.relevance(x, minilrp_spec(method, first_max, zennit_avgpool), target=targets, start="logit",
                         fast=fast)


def errors(a, b):
    """(per-image max|a-b|/max|b| (N,), elementwise max relative error over entries with
    |b| >= ELEMENT_FLOOR x max|b| (N,))."""
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        bad = np.array([not (np.all(np.isfinite(a[n])) and np.all(np.isfinite(b[n]))) for n in range(len(a))])
        return np.where(bad, np.inf, 0.0), np.where(bad, np.inf, 0.0)
    scale = np.abs(b).max(1)
    diff = np.abs(a - b)
    rel = np.where(scale > 0, diff.max(1) / np.where(scale > 0, scale, 1), np.where(diff.max(1) > 0, np.inf, 0))
    big = np.abs(b) >= ELEMENT_FLOOR * scale[:, None]
    elem = np.array([np.max(diff[n][big[n]] / np.abs(b[n][big[n]])) if big[n].any() and scale[n] > 0 else 0.0
                     for n in range(len(b))])
    return rel, elem


def load_reference(path=DEFAULT_REF):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    return meta, arrays


def load_model(name, info):
    """minilrp's float64 network for a model of the reference file, after checking that its
    weight file is the one the reference was computed from."""
    import minilrp
    path = REPO / info["weights"]
    if not path.is_file():
        raise FileNotFoundError(f"{info['weights']} is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != info["weights_sha256"]:
        raise RuntimeError(f"{info['weights']} changed since the Zennit reference was made: regenerate it "
                           "with ~/.cache/minilrp-reference-venv/bin/python tools/zennit_reference.py")
    return minilrp.load(path, dtype=np.float64)


def compare(path=DEFAULT_REF, models=None, fast=True):
    """One dict per (model, method) with (rel (N,), elem (N,)) pairs (minilrp's fast path, or
    with fast=False its reference path):

    stock      minilrp's default vs stock Zennit (max pools: first maximum)
    first_max  minilrp with max-pool relevance to the first maximum vs stock Zennit
    tie_split  minilrp's default vs Zennit + a tie-splitting max-pool hook
    (first_max and tie_split: networks with max pooling only; None otherwise.)
    avgpool    True where the method is a single rule whose AvgPool2d semantics differ
               (ZENNIT_AVGPOOL) and the network has an average pool: then first_max and
               tie_split are computed with Zennit's effective AvgPool2d rule on minilrp's side,
               and ``stock`` stays minilrp's unmodified default.
    """
    meta, arrays = load_reference(path)
    rows = []
    for name, info in meta["models"].items():
        if models and name not in models:
            continue
        net = load_model(name, info)
        x = arrays[f"{name}.inputs"]
        t = arrays[f"{name}.targets"]
        logits = net.forward(x)
        rows.append({"model": name, "method": "logits (forward)", "kind": "forward", "n": len(x),
                     "stock": errors(logits, arrays[f"{name}.logits"]), "first_max": None,
                     "tie_split": None, "avgpool": False,
                     "argmax_agrees": bool(np.array_equal(logits.argmax(1), t))})
        kinds = {layer.kind for layer in net.layers}
        for method in info["methods"]:
            ref = arrays[f"{name}.heatmap.{method}"]
            avg = method in ZENNIT_AVGPOOL and "AvgPool2d" in kinds
            row = {"model": name, "method": method, "n": len(x), "avgpool": avg,
                   "kind": "gradient" if method == "gradient" else "lrp",
                   "stock": errors(run_minilrp(net, x, t, method, fast=fast), ref),
                   "first_max": None, "tie_split": None}
            if "MaxPool2d" in kinds and method != "gradient":
                row["first_max"] = errors(run_minilrp(net, x, t, method, True, avg, fast), ref)
                row["tie_split"] = errors(run_minilrp(net, x, t, method, False, avg, fast),
                                          arrays[f"{name}.heatmap_tiesplit.{method}"])
            elif avg:
                row["first_max"] = errors(run_minilrp(net, x, t, method, False, avg, fast), ref)
            rows.append(row)
    return meta, rows


def consistent_errors(row):
    """The errors of the comparisons in which both sides use the same max-pool and
    average-pool semantics (what tests/test_zennit_agreement.py gates at GATE)."""
    out = [row[k][0].max() for k in ("first_max", "tie_split") if row[k] is not None]
    return out if out else [row["stock"][0].max()]


def _fmt(v):
    return "0" if v == 0 else f"{v:.1e}"


def markdown(meta, rows):
    v = meta["versions"]
    lines = [f"minilrp (float64) vs Zennit {v['zennit']} and torch {v['torch']} autograd (float64); "
             f"initial relevance = target logit x one-hot (gradient: one-hot). Rel. error = max over "
             f"images of max|minilrp - ref| / max|ref|; elementwise = max |minilrp - ref| / |ref| "
             f"over entries with |ref| >= {ELEMENT_FLOOR:g} x max|ref|.",
             "",
             "| model | method | images | vs Zennit: rel. error | elementwise | minilrp max-pool -> first max "
             "| vs Zennit + ties-split max-pool hook |",
             "|---|---|---:|---:|---:|---:|---:|"]
    notes = False
    for r in rows:
        rel, elem = r["stock"]
        fm = "-" if r["first_max"] is None else _fmt(r["first_max"][0].max())
        ts = "-" if r["tie_split"] is None else _fmt(r["tie_split"][0].max())
        if r["kind"] == "forward":
            fm, ts = ("argmax agrees" if r["argmax_agrees"] else "ARGMAX DIFFERS"), ""
        star = ""
        if r["avgpool"]:
            star, notes = " (a)", True
        lines.append(f"| {r['model']} | {r['method']}{star} | {r['n']} | {_fmt(rel.max())} | "
                     f"{_fmt(elem.max())} | {fm} | {ts} |")
    lines += ["", "The last two columns change only minilrp's max-pool rule (first of them) or add a tie-splitting "
              "max-pool hook to Zennit (second): stock Zennit routes a max-pool window's relevance to "
              "its first maximum (PyTorch's max_pool2d backward), minilrp splits ties evenly.",
              "'-': the network has no max pooling."]
    if notes:
        lines += ["(a) single rule on AvgPool2d: Zennit's ParamMod rules leave the parameter-less pool "
                  "unmodified (Gamma/AlphaBeta/ZPlus act as Epsilon(1e-6), as minilrp's composites give "
                  "average pools; WSquare/Flat as Flat with eps x K^2, where minilrp applies the rule to the "
                  "pool's 1/K^2 weights); the last two columns give minilrp's AvgPool2d Zennit's effective "
                  "rule, the first error column does not."]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default=str(DEFAULT_REF))
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--reference", action="store_true",
                    help="minilrp's readable reference path (fast=False) instead of the fast path")
    args = ap.parse_args(argv)
    meta, rows = compare(args.ref, args.models, fast=not args.reference)
    print(f"minilrp path: {'reference (fast=False)' if args.reference else 'fast (the default)'}")
    print(markdown(meta, rows))
    print(f"\nlargest error with consistent pooling semantics: {max(max(consistent_errors(r)) for r in rows):.1e}")
    bad = [f"{r['model']} {r['method']}" for r in rows if max(consistent_errors(r)) > GATE]
    if bad:
        print(f"\nDISAGREEMENT above {GATE:g} with consistent pooling semantics: {', '.join(bad)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
