"""Plain-language sentences beside the reports' tables, computed from the numbers.

Every sentence here is a template filled with measured values, and the choice of template is made
by comparing those values (an interval above, below or across zero; a share above or below
another). The known *reasons* for a surprising result are attached only when the numbers that
reason predicts are actually there, for instance:

- a fill that draws on blank background (uniform noise) changes the score where relevance that is
  proportional to the input is exactly 0: such maps distort blank regions last, SA (whose gradient
  need not vanish there) ranks them, and the verdict "LRP beats SA" can flip with the fill;
- z+ / alpha-beta rules give maps that depend little on the deeper layers' weights (Sixt et al.
  2020), so randomising those layers changes them little;
- maps proportional to the input are 0 wherever the input is 0, on any model.

Numbers: a paired difference or a mean comes as a dict {"mean", "low", "high"} (a 95% interval,
perturbation.summarize or sanity.interval).
"""
from __future__ import annotations

import numpy as np

from . import perturbation as P


def interval(s, digits=2, signed=True) -> str:
    """"+1.21 [+0.99, +1.42]" from {"mean", "low", "high"}; "undefined" when the mean is not finite."""
    if not np.isfinite(s["mean"]):
        return "undefined"
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return f"{f.format(s['mean'])} [{f.format(s['low'])}, {f.format(s['high'])}]"


def side(s) -> str:
    """"above" (interval above 0), "below", or "across" (contains 0, or undefined)."""
    if not np.isfinite(s["mean"]):
        return "across"
    return "above" if s["low"] > 0 else ("below" if s["high"] < 0 else "across")


def percent(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.0f}%"


# ============================================================================== region perturbation

def versus_random(method, ordering, diff) -> str:
    """One sentence: how ``method``'s ordering compares with the random ordering. diff: the paired
    per-image AOPC(method) - AOPC(random) with its interval. Under MoRF a larger AOPC is better
    (the score falls faster); under LeRF and the inessential-first orderings a smaller one is
    (the score stays up)."""
    d = interval(diff)
    where = side(diff)
    if ordering == "MoRF":
        if where == "above":
            return f"{method}: distorting its most relevant regions first lowers the score faster than random order (AOPC {d} above random)."
        if where == "below":
            return (f"{method}: distorting its most relevant regions first lowers the score *more slowly* than "
                    f"random order (AOPC {d} relative to random): under this fill its top regions matter less than random ones.")
        return f"{method}: its most-relevant-first order cannot be told apart from random order (AOPC {d} relative to random)."
    if where == "below":
        return f"{method} ({ordering}): distorting what it marks as unimportant first keeps the score higher than random order (AOPC {d} relative to random)."
    if where == "above":
        return (f"{method} ({ordering}): distorting what it marks as unimportant first lowers the score *faster* than random order "
                f"(AOPC {d} relative to random): it marks as unimportant regions that matter.")
    return f"{method} ({ordering}): cannot be told apart from random order (AOPC {d} relative to random)."


def blank_changed(net, x, perturbation, region_size=None, seed=0) -> float:
    """The share of blank background pixels (every channel equal to the data's background value)
    that ``perturbation`` changes when it distorts every region of images x (N, C, H, W): 0 for a
    fill equal to the background, ~1 for uniform noise. NaN when x has no blank pixel."""
    bg = P.Constant("background").resolve(net, x).fill_value
    blank = np.all(np.isclose(x, bg[None], atol=1e-6), axis=1)
    if not blank.any():
        return float("nan")
    regions = P.grid(x.shape[1:], region_size)
    order = np.tile(np.arange(regions.n_regions), (len(x), 1))
    xk = P.perturb(net, x, regions, order, regions.n_regions, perturbation, seed)
    return float(np.any(xk != x, axis=1)[blank].mean())


def blank_reason(method, fill, method_blank, random_blank, sa_blank=None, fill_blank_change=1.0) -> str:
    """The known reason why an input-proportional map can lose to SA or to random order under a
    fill that draws on blank background; "" when the numbers do not show it: the fill must change
    blank pixels (>= 50%) and the method must distort blank regions first less than half as often as
    random order does. *_blank: the share of blank background among the first quarter of the
    regions each order distorts."""
    if fill_blank_change is None or not fill_blank_change >= 0.5:
        return ""
    if method_blank is None or random_blank is None or not method_blank < 0.5 * random_blank:
        return ""
    sa = f", SA's {percent(sa_blank)}" if sa_blank is not None and sa_blank > method_blank else ""
    return (f"Why: `{fill}` changes {percent(fill_blank_change)} of the blank background pixels it distorts, "
            f"so distorting empty background draws new strokes that move the score. Only {percent(method_blank)} "
            f"of the regions {method} distorts first are blank (random order: {percent(random_blank)}{sa}): "
            "it puts little or no relevance on blank background (relevance proportional to the input is exactly "
            "0 there), so such regions come last in its order and it cannot rank them. A fill equal to the "
            "background (constant:background) leaves blank regions unchanged and removes this effect.")


def flips(method, verdicts) -> str:
    """A sentence when a comparison's verdict differs between fills; verdicts: {fill: (side,
    interval text)} of the same comparison. "" when all fills agree."""
    sides = {v[0] for v in verdicts.values()}
    if len(sides) < 2:
        return ""
    parts = [f"{word} under `{fill}` ({text})" for fill, (s, text) in verdicts.items()
             for word in [{"above": "wins", "below": "loses", "across": "ties"}[s]]]
    return f"{method}: the verdict depends on the fill: it " + ", ".join(parts) + "."


def _vs_random(r):
    """AOPC(method) - AOPC(random) from a perturbation-study row (which stores random - method)."""
    return {"mean": -r["random_minus_aopc"], "low": -r["random_minus_high"], "high": -r["random_minus_low"]}


def _vs_sa(r):
    return {"mean": r["minus_sa"], "low": r["minus_sa_low"], "high": r["minus_sa_high"]}


def perturbation_words(rows, p, composites, row, blank_change=None, oracle=False) -> list:
    """Markdown lines for the table of fill ``p`` of the perturbation study: each method's MoRF
    against random order (and against SA), with the blank-background reason where its numbers
    show it. rows/row: the study's rows and its row(p, method, ordering) lookup."""
    rnd, sa = row(p, "Random", "random"), row(p, "SA", "MoRF")
    methods = ["SA", "Gradient x Input"] + [f"LRP {c}" for c in composites] + (["Oracle"] if oracle else [])
    out = [f"In words (under `{p}`, computed from the table):", ""]
    for m in methods:
        r = row(p, m, "MoRF")
        d = _vs_random(r)
        text = versus_random(m, "MoRF", d)
        loses = side(d) != "above"
        if m not in ("SA", "Oracle") and r["minus_sa"] is not None:
            s = _vs_sa(r)
            text += {"above": f" It beats SA by {interval(s)}.", "below": f" It loses to SA by {interval(s)}.",
                     "across": f" It cannot be told apart from SA ({interval(s)})."}[side(s)]
            loses = loses or side(s) == "below"
        lerf = _vs_random(row(p, m, "LeRF"))
        text += {"below": " Least relevant first (LeRF), it keeps the score higher than random order",
                 "above": " Least relevant first (LeRF), it lowers the score *faster* than random order",
                 "across": " Least relevant first (LeRF), it cannot be told apart from random order"}[side(lerf)]
        text += f" (AOPC {interval(lerf)} relative to random)."
        out.append(f"- {text}")
        if loses and m != "Oracle":
            reason = blank_reason(m, p, r["blank_first_quarter"], rnd["blank_first_quarter"],
                                  sa["blank_first_quarter"], blank_change)
            if reason:
                out.append(f"  {reason}")
    return out + [""]


def blank_regions(net, x, regions) -> np.ndarray:
    """(N, R) bool: regions whose every pixel equals the data's background value in every channel."""
    bg = P.Constant("background").resolve(net, x).fill_value
    blank_px = np.all(np.isclose(x, bg[None], atol=1e-6), axis=1)
    return P.region_scores((~blank_px).astype(np.float64), regions) == 0


def aopc_words(curves, orders, blank, fill, blank_change, random_key=("random", "random"),
               sa_key=("SA", "MoRF")) -> list:
    """Sentences for a table of AOPCs on the same images and fill: each ordering against the random
    one (paired per image, 95% interval), most-relevant-first orders also against SA, and the
    blank-background reason where its numbers show it. curves: {(method, ordering): (N, L + 1)};
    orders: {(method, ordering): (N, R)}; blank: (N, R) from :func:`blank_regions`."""
    rand = P.aopc(curves[random_key])
    L = curves[random_key].shape[1] - 1
    q = max(1, L // 4)

    def blank_share(key):
        return float(np.take_along_axis(blank, orders[key][:, :q], axis=1).mean()) if key in orders else None
    out = []
    for key, c in curves.items():
        if key == random_key:
            continue
        method, ordering = key
        a = P.aopc(c)
        d = P.summarize(a - rand)
        text = versus_random(method,
                             "MoRF" if ordering == "MoRF" else ordering, d)
        loses = ordering == "MoRF" and side(d) != "above"
        if ordering == "MoRF" and key != sa_key and sa_key in curves:
            s = P.summarize(a - P.aopc(curves[sa_key]))
            text += {"above": f" It beats SA by {interval(s)}.", "below": f" It loses to SA by {interval(s)}.",
                     "across": f" It cannot be told apart from SA ({interval(s)})."}[side(s)]
            loses = loses or side(s) == "below"
        out.append(text)
        if loses and key != sa_key:
            reason = blank_reason(method, fill, blank_share(key), blank_share(random_key),
                                  blank_share(sa_key), blank_change)
            if reason:
                out.append(reason)
    return out


def perturbation_flips(rows, perts, composites, row, blank_changes) -> list:
    """Markdown lines: for every comparison "LRP beats SA under MoRF" whose verdict differs
    between fills, the sentence saying so and, for the fill where LRP loses, the reason when its
    numbers show it. [] when no verdict flips."""
    out = []
    for c in composites:
        m = f"LRP {c}"
        verdicts = {p.name: (side(_vs_sa(row(p.name, m, "MoRF"))), interval(_vs_sa(row(p.name, m, "MoRF"))))
                    for p in perts}
        text = flips(f"{m} against SA (MoRF)", verdicts)
        if not text:
            continue
        out.append(f"- {text}")
        for p, (s, _) in verdicts.items():
            if s == "below":
                r = row(p, m, "MoRF")
                reason = blank_reason(m, p, r["blank_first_quarter"], row(p, "Random", "random")["blank_first_quarter"],
                                      row(p, "SA", "MoRF")["blank_first_quarter"], blank_changes.get(p))
                if reason:
                    out.append(f"  {reason}")
    return (["Where a verdict depends on the fill (computed):", ""] + out + [""]) if out else []


# ============================================================================== sanity checks

def randomisation(method, labels, verdicts, summaries, measure_label, threshold, order) -> str:
    """Model-parameter randomisation, one method: labels (top first) of the steps, their
    similarity verdicts ("changed"/"unchanged"/"inconclusive") and intervals."""
    if not any(np.isfinite(x["mean"]) for x in summaries):
        return (f"{method}: its maps are constant (every pixel the same) on every image, so their rank "
                "correlation is undefined: they carry no ranking for this test to compare.")
    if order == "cascading":
        first = next((k for k, v in enumerate(verdicts) if v == "changed"), None)
        last = summaries[-1]
        if first == 0:
            return (f"{method}: sensitive to the model's parameters: randomising only the top layer ({labels[0]}) "
                    f"already changes its maps ({measure_label} {interval(summaries[0], signed=False)} < {threshold}).")
        if first is not None:
            return (f"{method}: its maps change only once the layers down to {labels[first]} are randomised "
                    f"({measure_label} {interval(summaries[first], signed=False)} < {threshold}); above that "
                    f"they stay similar ({interval(summaries[first - 1], signed=False)}).")
        if verdicts[-1] == "unchanged":
            return (f"{method}: *insensitive* to the model's parameters: with every layer randomised its maps "
                    f"still resemble the original ({measure_label} {interval(last, signed=False)} > {threshold}).")
        return (f"{method}: with every layer randomised, its similarity to the original "
                f"({measure_label} {interval(last, signed=False)}) is neither clearly above nor below {threshold}.")
    changed = [lab for lab, v in zip(labels, verdicts) if v == "changed"]
    kept = [lab for lab, v in zip(labels, verdicts) if v == "unchanged"]
    text = f"{method}: randomising one layer alone changes its maps for " + (
        ", ".join(changed) if changed else "no layer")
    if kept:
        text += f"; its maps stay similar when only {', '.join(kept)} is randomised"
    return text + "."


def alpha_beta_reason(method, rules, own, gradient) -> str:
    """Sixt et al. (2020)'s reason, attached when the method uses z+ or alpha-beta rules and its
    maps stayed similar where the gradient's changed. rules: the rule labels of the method's
    layers; own, gradient: verdicts per cascading step."""
    if not any(r.startswith(("ZPlus", "AlphaBeta")) for r in rules):
        return ""
    steps = [k for k, (a, b) in enumerate(zip(own, gradient)) if a == "unchanged" and b == "changed"]
    if not steps:
        return ""
    return (f"Why {method} stays similar where the gradient does not: its z+ / alpha-beta rules pass relevance "
            "only along positive contributions, and Sixt et al. (2020) showed that such maps converge to a "
            "map that depends little on the deeper layers' weights, so randomising them changes the map little.")


def input_zeros_reason(method, zero_share, chance, signed=None) -> str:
    """Attached when a method's maps are exactly 0 on many pixels (maps proportional to the input
    vanish wherever it is 0, on any model): their rank correlation of |map| stays high because
    the zeros tie in both maps; the chance level (another image's map) shows how much of it that
    explains, and the signed correlation ``signed`` (with every layer randomised) whether the
    map's signs still follow the model."""
    if zero_share is None or not zero_share >= 0.2:
        return ""
    text = (f"Why {method} keeps a high rank correlation: its maps are exactly 0 on {percent(zero_share)} of the "
            "pixels (maps proportional to the input vanish wherever the input does, on any model), and those "
            f"zeros tie in both maps. Even another image's map correlates at {chance['mean']:.2f} with it.")
    if signed is not None and np.isfinite(signed["mean"]) and signed["high"] < 0.5:
        text += (f" Signed, the correlation with every layer randomised is {interval(signed)}: "
                 "where the map is not 0, its signs no longer follow the original.")
    return text


def random_logit(method, summary, measure_label, threshold, verdict) -> str:
    if not np.isfinite(summary["mean"]):
        return f"{method}: its maps are constant, so the {measure_label} with another class's map is undefined."
    if verdict == "changed":
        return (f"{method}: explaining another class gives a different map ({measure_label} "
                f"{interval(summary, signed=False)} < {threshold}): it depends on the class explained.")
    if verdict == "unchanged":
        return (f"{method}: explaining a random other class gives nearly the same map ({measure_label} "
                f"{interval(summary, signed=False)} > {threshold}): it shows the image more than the class.")
    return f"{method}: the map for another class is neither clearly similar nor clearly different ({measure_label} {interval(summary, signed=False)})."


def invariance(method, invariant_share, median_change, largest, tol) -> str:
    if invariant_share == 1:
        return (f"{method}: input-invariant: the shifted input in the compensated network gives the same map on every "
                f"image (largest relative change {largest:.1e} <= {tol:g}).")
    if invariant_share == 0:
        return (f"{method}: *not* input-invariant: its map changes on every image although the model's "
                f"output does not (median relative change {median_change:.2g}).")
    return (f"{method}: input-invariant on {percent(invariant_share)} of the images only (median relative "
            f"change {median_change:.2g}).")


def conservation(method, ratio, shares=None, residual=None, sums_to="f(x)", rules=()) -> str:
    """ratio: {"mean", "low", "high"} of the map's sum / the score; shares: {"bias", "stabiliser",
    "dropped"} mean shares of the score (LRP); residual: the largest unexplained share; rules: the
    rule labels of the method's layers (for the reason of a negative stabiliser share)."""
    text = f"{method}: its sum is {100 * ratio['mean']:.1f}% [{100 * ratio['low']:.1f}, {100 * ratio['high']:.1f}] of {sums_to}"
    if shares is not None:
        text += (f"; biases absorb {100 * shares['bias']:.1f}%, stabilisers {100 * shares['stabiliser']:.2f}%, "
                 f"dropped units {100 * shares['dropped']:.2f}%")
        if residual is not None:
            text += f", and the ledger leaves {residual:.1e} of the score unexplained"
        if shares["stabiliser"] < -0.01 and any(r.startswith("AlphaBeta") and "beta=0" not in r for r in rules):
            text += (". The negative stabiliser share is alpha-beta's: a unit with no negative input "
                     "contribution (z- = 0) cannot pass on its -beta R, which stays with the stabiliser, so the "
                     "input receives that much more")
    elif sums_to == "f(x)" and abs(ratio["mean"] - 1) > 0.01:
        text += (" (gradient x input sums to f(x) only for networks without biases; here the biases "
                 "account for the rest)")
    elif sums_to == "f(x) - f(x0)":
        text += " (completeness, up to the error of the 32-step integration)"
    return text + "."
