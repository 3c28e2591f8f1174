"""Comparing one output of a student's function with the right one, and saying what is wrong.

The order of the diagnosis: is it an array of the right dtype, shape, finite? Does it match
(to a relative 1e-7)? If not: which typical mistake does it match (the exercise's named ones,
then two generic patterns, the opposite sign and a constant factor)? Is the difference at the
level of float32 or float16 rounding (arithmetic done in lower precision, cast back)? Only when
none of these fits, the usual causes are listed.
"""
from __future__ import annotations

import numpy as np

RTOL, ATOL = 1e-7, 1e-9  # relative per entry; absolute as a fraction of max |expected|


def _fmt(v) -> str:
    return f"{v:.6g}"


def _index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _atol(expected, atol):
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    return atol * max(scale, 1e-300) + 1e-14


def close(got, expected, rtol=RTOL, atol=ATOL):
    return np.abs(got - expected) <= _atol(expected, atol) + rtol * np.abs(expected)


def validate(value, expected, name, case):
    """None when ``value`` (an array, or the student process's marker for what no array can
    hold) is a well-formed output like ``expected``; else (problem, lines)."""
    fn = case.get("function", "")
    if isinstance(value, dict):  # {"returned": "none" | "tuple" | "object", ...}
        kind = value.get("returned")
        if kind == "none":
            return "type", [f"{fn} returned None, expected an array {name} of shape "
                            f"{expected.shape} (is a `return` missing?)"]
        if kind == "tuple":
            return "type", [f"{fn} returned a tuple of {value['length']} items, expected one array "
                            f"{name} of shape {expected.shape}"]
        return "type", [f"{fn} returned a {value.get('type', 'value')}, expected a NumPy array "
                        f"{name} of shape {expected.shape}"]
    value = np.asarray(value)
    if value.dtype.kind != "f" or value.dtype != expected.dtype:
        extra = (" (the inputs are float64: keep every intermediate in float64)"
                 if value.dtype.kind == "f" else
                 " (an integer or boolean array: was an output buffer created with an integer "
                 "dtype, e.g. np.zeros_like of an int array?)" if value.dtype.kind in "iub" else "")
        return "dtype", [f"{name} has dtype {value.dtype}, expected {expected.dtype}{extra}"]
    if value.shape != expected.shape:
        lines = [f"{name} has shape {value.shape}, expected {expected.shape}"
                 + (f" ({case['shape_doc']})" if case.get("shape_doc") else "")]
        if value.size == expected.size:
            lines.append("same number of entries in another shape: transposed or reshaped?")
        for rule in case.get("shape_hint") or []:
            if list(value.shape) == rule["shape"]:
                lines.append("hint: " + rule["hint"])
        return "shape", lines
    bad = ~np.isfinite(value)
    if bad.any():
        idx = np.argwhere(bad)
        kind = "NaN" if np.isnan(value[tuple(idx[0])]) else "inf"
        lines = [f"{name} contains {kind} at {name}{_index(idx[0])}"
                 + (f" and {len(idx) - 1} more non-finite entries" if len(idx) > 1 else "")]
        if case.get("nan_hint"):
            lines.append("hint: " + case["nan_hint"])
        return "nan", lines
    return None


def precision(got, expected):
    """'float16' / 'float32' when the difference is what arithmetic in that precision (cast back
    to float64) leaves, else None. The difference must be at that precision's level (largest
    |got - expected| <= 2e-5 resp. 3e-2 of max |expected|), and look like rounding: every entry
    of ``got`` exactly a float32 (float16) number while the right answer is not, or the typical
    entry off by more than float64 rounding (a logic slip changes a few entries, rounding all)."""
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    if scale == 0:
        return None
    err = np.abs(got - expected)
    rel = float(err.max()) / scale

    def exact(a, dtype):
        return np.array_equal(a.astype(dtype).astype(np.float64), a)

    for dtype, level in ((np.float16, 3e-2), (np.float32, 2e-5)):
        if rel > level:
            continue
        if exact(got, dtype) and not exact(expected, dtype):
            return np.dtype(dtype).name
    typical = float(np.median(err / np.maximum(np.abs(expected), 1e-3 * scale)))
    if rel <= 2e-5 and typical > 1e-10:
        return "float32"
    if rel <= 3e-2 and typical > 1e-6:
        return "float16"
    return None


PRECISION_HINT = {
    "float32": "the differences are at the level of float32 rounding (about 1e-7 relative): the "
               "arithmetic was done in float32 (or an input cast to it) and cast back; keep every "
               "intermediate in float64 (np.float64, the inputs' dtype)",
    "float16": "the differences are at the level of float16 rounding (about 1e-3 relative): the "
               "arithmetic was done in float16 and cast back; keep every intermediate in float64",
}


def compare(value, expected, name, case, mistakes, hints, usual_causes, label="", only_here=False):
    """None when ``value`` matches ``expected``; else (problem, lines, [mistake ids matched]).
    ``mistakes``: {id: the output of that mistake}; only_here: add the case's note that the
    smaller checks passed (the caller knows whether they did)."""
    problem = validate(value, expected, name, case)
    if problem:
        return problem[0], problem[1], []
    got = np.asarray(value)
    ok = close(got, expected)
    if ok.all():
        return None
    diff = np.abs(got - expected)
    bad = np.argwhere(~ok)
    first = tuple(bad[0])
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    where = f"{label}: " if label else ""
    lines = [f"{where}first divergence at {name}{_index(first)}: got {_fmt(got[first])}, expected "
             f"{_fmt(expected[first])} (off by {diff[first]:.3g})",
             f"largest difference {diff[worst]:.3g} at {name}{_index(worst)}; {len(bad)} of "
             f"{got.size} entries differ (tolerance: relative {RTOL:g}, absolute "
             f"{_atol(expected, ATOL):.2g})"]
    if case.get("show_sums") and got.ndim >= 2:
        gs = got.reshape(len(got), -1).sum(1)
        es = expected.reshape(len(expected), -1).sum(1)
        lines.append(f"sum per example: yours {np.array2string(gs, precision=5)}, reference "
                     f"{np.array2string(es, precision=5)}")
    matched = [m for m, arr in mistakes.items() if arr.shape == got.shape and close(got, arr).all()]
    if matched:
        lines.append(f"hint [{matched[0]}]: {hints.get(matched[0], matched[0])}")
        lines.extend(f"  (also consistent with [{m}]: {hints.get(m, m)})" for m in matched[1:])
        return "values", lines, matched
    low = precision(got, expected)
    if low:
        lines.append(f"hint [{low}]: {PRECISION_HINT[low]}")
        return "precision", lines, [low]
    if close(-got, expected).all():
        lines.append("hint [sign]: your output is the reference with the opposite sign: check the "
                     "sign convention")
        return "values", lines, ["sign"]
    denom = float(np.vdot(expected, expected))
    if denom > 0:
        c = float(np.vdot(got, expected)) / denom
        if abs(c - 1) > 1e-6 and abs(c) > 1e-12 and close(got, c * expected).all():
            lines.append(f"hint [scale]: your output is the reference times {c:.6g}: a constant "
                         "factor is off")
            return "values", lines, ["scale"]
    if only_here and case.get("only_here"):
        lines.append("note: " + case["only_here"])
    if usual_causes:
        lines.append("no typical mistake matched exactly; the usual causes are:")
        lines.extend(f"  - {c}" for c in usual_causes)
    return "values", lines, []
