"""Check a student's exercise against committed reference outputs.

    python -m minilrp.check --list                      the exercises
    python -m minilrp.check --skeleton NAME [-o FILE]   hand out a skeleton
    python -m minilrp.check NAME student_file.py        run every check, pass/fail each

Each exercise is a file ``minilrp/teaching/exercises/NAME.npz`` (written by
``tools/make_exercise_references.py`` from minilrp's own implementations, loaded with
``allow_pickle=False``): a JSON record ``meta`` describing the checks, plus their input and
output arrays. A check calls the student's function on the committed inputs and compares
with the committed output. On a mismatch it reports where the numbers first diverge and by
how much, then compares the student's output with the outputs of *typical mistakes*
(committed beside the right answer) and names the one it matches, with a hint.

The student's file is imported and run in this process, guarded: a file that does not
import, a missing function, an exception, a wrong type, shape or dtype, NaN, a function that
modifies its inputs or runs too long are each a failed check with a message, never a
traceback. (The guard is for mistakes, not a sandbox: a student's file runs with the
rights of whoever runs the checker.)

Exit status: 0 when every check passed (checks needing a bundled model that is missing are
skipped), 1 when one failed, 2 for an unknown exercise or bad usage.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io as _io
import json
import os
import signal
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

META_FORMAT = 1
TIMEOUT = 60.0  # seconds per check


# ======================================================================================
# Exercise files
# ======================================================================================
def _folder() -> Path:
    return Path(__file__).resolve().parent / "exercises"


def available() -> list[str]:
    """Names of the exercises with a reference file."""
    return sorted(p.stem for p in _folder().glob("*.npz"))


def skeleton_path(name: str) -> Path:
    return _folder() / "skeletons" / f"{name}.py"


class Exercise:
    """One exercise's reference file: ``meta`` (dict) and its arrays."""

    def __init__(self, name: str):
        path = _folder() / f"{name}.npz"
        with np.load(path, allow_pickle=False) as f:
            self.arrays = {k: f[k] for k in f.files}
        raw = self.arrays.pop("meta")
        self.meta = json.loads(raw.tobytes().decode("utf-8"))
        if self.meta.get("format") != META_FORMAT:
            raise ValueError(f"{path}: reference format {self.meta.get('format')!r}, this "
                             f"checker reads {META_FORMAT}: regenerate the references")
        self.name = name
        self.path = path

    @property
    def title(self) -> str:
        return self.meta["title"]

    def array(self, key) -> np.ndarray:
        return self.arrays[key].copy()

    def net(self, spec):
        """The network a case runs on: {"arrays": prefix} (stored in this file) or
        {"bundled": name, "sha256": ...}. Returns (net, None) or (None, reason to skip)."""
        from ..models.io import from_arrays
        if "arrays" in spec:
            prefix = spec["arrays"] + "."
            arrays = {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}
            return from_arrays(arrays, dtype=np.float64), None
        from ..models.data import available_models, load_model
        name = spec["bundled"]
        if name not in available_models():
            return None, f"needs the bundled model {name!r}, which is not installed"
        net = load_model(name)
        if fingerprint(net) != spec["sha256"]:
            return None, (f"the bundled model {name!r} changed since these references were made: "
                          "regenerate them (python tools/make_exercise_references.py)")
        return net.astype(np.float64), None


def fingerprint(net) -> str:
    """sha256 over a network's parameters as stored (dtype and bytes), layer by layer."""
    h = hashlib.sha256()
    for i, layer in enumerate(net.layers):
        for k, v in sorted(layer.params().items()):
            if v is not None:
                h.update(f"{i}.{k}.{v.dtype}.{v.shape}".encode())
                h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


# ======================================================================================
# Importing and calling the student's code, guarded
# ======================================================================================
class CheckTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds):
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or not seconds:
        yield
        return

    def handler(signum, frame):
        raise CheckTimeout()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _where(exc, path) -> str:
    """' (file.py, line N)': the deepest frame of the student's file in exc's traceback."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line = frame.lineno
    return f" ({Path(path).name}, line {line})" if line else ""


def _describe(exc, path) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' + msg if msg else ''}{_where(exc, path)}"


def import_student(path):
    """(module, None) or (None, message)."""
    path = Path(path)
    if not path.exists():
        return None, f"{path}: no such file"
    if path.is_dir() or path.suffix != ".py":
        return None, f"{path}: not a Python file (.py)"
    name = f"_minilrp_student_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # so the student's own helper modules next to it import
    try:
        with _time_limit(TIMEOUT), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.loader.exec_module(module)
    except SyntaxError as e:
        return None, f"could not import {path.name}: SyntaxError: {e.msg} (line {e.lineno})"
    except CheckTimeout:
        return None, f"could not import {path.name}: importing took longer than {TIMEOUT:.0f} s"
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # noqa: BLE001 - report, never crash
        return None, f"could not import {path.name}: {_describe(e, path)}"
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module, None


# ======================================================================================
# Results
# ======================================================================================
@dataclass
class Result:
    id: str
    title: str
    status: str  # "pass", "fail", "skip"
    lines: list = field(default_factory=list)  # details, printed under the check
    mistakes: list = field(default_factory=list)  # typical mistakes the output matches

    @property
    def mistake(self):
        """The typical mistake recognised (the first that matches), or None."""
        return self.mistakes[0] if self.mistakes else None

    problem: str | None = None  # kind of failure: "import", "missing", "exception", "type",
    # "shape", "dtype", "nan", "values", "mutated", "timeout", "not-implemented"


@dataclass
class Report:
    exercise: str
    student: str
    results: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    def counts(self):
        return {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}

    def text(self) -> str:
        out = [f"minilrp.check: exercise {self.exercise!r}, student file {self.student}"]
        width = max([len(r.id) for r in self.results] + [8])
        for r in self.results:
            out.append(f"  [{r.status.upper()}] {r.id:<{width}}  {r.title}")
            out.extend(f"         {line}" for line in r.lines)
        c = self.counts()
        n = sum(c.values())
        verdict = "ALL PASSED" if self.passed else "NOT YET"
        out.append(f"{n} checks: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped  -> {verdict}")
        return "\n".join(out)

    def to_dict(self):
        return {"exercise": self.exercise, "student": self.student, "passed": self.passed,
                "counts": self.counts(),
                "results": [{"id": r.id, "title": r.title, "status": r.status, "problem": r.problem,
                             "mistakes": r.mistakes, "details": r.lines} for r in self.results]}


# ======================================================================================
# Comparing one output
# ======================================================================================
def _fmt(v) -> str:
    return f"{v:.6g}"


def _index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _tolerance(expected, rtol, atol):
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    return atol * max(scale, 1e-300) + 1e-14, rtol


def _close(got, expected, rtol, atol):
    a, r = _tolerance(expected, rtol, atol)
    return np.abs(got - expected) <= a + r * np.abs(expected)


def validate(value, expected, name, case, fn):
    """None when ``value`` is a well-formed output like ``expected``, else (problem, lines)."""
    hints = case.get("shape_hint")
    if value is None:
        return "type", [f"{fn} returned None, expected an array {name} of shape {expected.shape} "
                        "(is a `return` missing?)"]
    if isinstance(value, tuple):
        return "type", [f"{fn} returned a tuple of {len(value)} items, expected one array {name} "
                        f"of shape {expected.shape}"]
    if not isinstance(value, np.ndarray):
        try:
            arr = np.asarray(value)
        except Exception:  # noqa: BLE001
            arr = None
        if arr is None or arr.dtype == object:
            return "type", [f"{fn} returned a {type(value).__name__}, expected a NumPy array {name} "
                            f"of shape {expected.shape}"]
        value = arr
    if value.dtype.kind not in "f" or value.dtype != expected.dtype:
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
        for rule in hints or []:
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


def compare(value, expected, name, case, mistakes, meta, rtol, atol, label=""):
    """None when ``value`` matches ``expected``; else (problem, lines, [mistake ids matched])."""
    problem = validate(value, expected, name, case, case.get("function", ""))
    if problem:
        return problem[0], problem[1], None
    got = np.asarray(value)
    ok = _close(got, expected, rtol, atol)
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
             f"{got.size} entries differ (tolerance: relative {rtol:g}, absolute "
             f"{_tolerance(expected, rtol, atol)[0]:.2g})"]
    if case.get("show_sums") and got.ndim >= 2:
        gs = got.reshape(len(got), -1).sum(1)
        es = expected.reshape(len(expected), -1).sum(1)
        lines.append(f"sum per example: yours {np.array2string(gs, precision=5)}, reference "
                     f"{np.array2string(es, precision=5)}")
    hints = meta.get("hints", {})
    matched = [m for m, arr in mistakes.items()
               if arr.shape == got.shape and _close(got, arr, rtol, atol).all()]
    if matched:
        lines.append(f"hint [{matched[0]}]: {hints.get(matched[0], matched[0])}")
        for m in matched[1:]:
            lines.append(f"  (also consistent with [{m}]: {hints.get(m, m)})")
        return "values", lines, matched
    # generic patterns
    if _close(-got, expected, rtol, atol).all():
        lines.append("hint [sign]: your output is the reference with the opposite sign: check the "
                     "sign convention")
        return "values", lines, ["sign"]
    denom = float(np.vdot(expected, expected))
    if denom > 0:
        c = float(np.vdot(got, expected)) / denom
        if abs(c - 1) > 1e-6 and abs(c) > 1e-12 and _close(got, c * expected, rtol, atol).all():
            lines.append(f"hint [scale]: your output is the reference times {c:.6g}: a constant "
                         "factor is off")
            return "values", lines, ["scale"]
    if case.get("only_here"):
        lines.append("hint: " + case["only_here"])
    causes = meta.get("usual_causes", [])
    if causes:
        lines.append("no typical mistake matched exactly; the usual causes are:")
        lines.extend(f"  - {c}" for c in causes)
    return "values", lines, None


# ======================================================================================
# Running the checks
# ======================================================================================
class _Forbidden:
    """Stands in for an API a check forbids (e.g. net.gradient in the SA exercise)."""

    def __init__(self, what, why):
        self.what, self.why = what, why

    def __call__(self, *args, **kwargs):
        raise _ForbiddenCall(f"{self.what} is not allowed in this exercise: {self.why}")


class _ForbiddenCall(Exception):
    pass


@contextlib.contextmanager
def _forbid(names):
    """Temporarily replace module functions named 'module:function' by _Forbidden."""
    import importlib
    saved = []
    try:
        for item in names:
            mod_name, _, fn_name = item["name"].partition(":")
            mod = importlib.import_module(mod_name)
            for fn in (fn_name.split(",") if fn_name != "*" else
                       [n for n in dir(mod) if callable(getattr(mod, n)) and not n.startswith("_")]):
                saved.append((mod, fn, getattr(mod, fn)))
                setattr(mod, fn, _Forbidden(f"{mod_name}.{fn}", item["why"]))
        yield
    finally:
        for mod, fn, old in reversed(saved):
            setattr(mod, fn, old)


def _call(student_fn, args, fn_name, path, forbid=()):
    """(value, None) or (None, (problem, lines))."""
    try:
        # numpy's warnings are left out: a NaN or inf they warn of is reported as a failure
        with _time_limit(TIMEOUT), _forbid(forbid), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return student_fn(*args), None
    except CheckTimeout:
        return None, ("timeout", [f"{fn_name} ran longer than {TIMEOUT:.0f} s (an endless loop?)"])
    except NotImplementedError as e:
        return None, ("not-implemented", [f"{fn_name} is not implemented yet: it raises "
                                          f"NotImplementedError{_where(e, path)} (the skeleton's "
                                          "placeholder)"])
    except _ForbiddenCall as e:
        return None, ("forbidden", [str(e)])
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # noqa: BLE001
        return None, ("exception", [f"{fn_name} raised {_describe(e, path)}"])


def _resolve_args(ex, case, net):
    """Arguments of a 'call' case: a list of (name, value); arrays are fresh copies."""
    args = []
    for spec in case["args"]:
        if "array" in spec:
            v = ex.array(spec["array"])
        elif "tuple" in spec:
            v = tuple(spec["tuple"])
        elif "net" in spec:
            v = net
        elif "param" in spec:
            layer, pname = spec["param"]
            p = net.layers[layer].params().get(pname)
            v = None if p is None else np.array(p, dtype=np.float64)
        else:
            v = spec.get("value")
        args.append((spec["name"], v))
    return args


def _mutated(args, originals):
    for (name, v), o in zip(args, originals):
        if isinstance(v, np.ndarray) and o is not None and (v.shape != o.shape or not np.array_equal(v, o)):
            return name
    return None


def _run_call(ex, case, module, path, net):
    fn_name = case["function"]
    fn = getattr(module, fn_name)
    args = _resolve_args(ex, case, net)
    originals = [v.copy() if isinstance(v, np.ndarray) else None for _, v in args]
    forbid = case.get("forbid", [])
    if net is not None and case.get("forbid_net_gradient"):
        net.gradient = _Forbidden("net.gradient", case["forbid_net_gradient"])
    value, err = _call(fn, [v for _, v in args], fn_name, path, forbid)
    if err:
        return err[0], err[1], None
    expected = ex.array(case["expected"])
    mistakes = {m: ex.array(k) for m, k in case.get("mistakes", {}).items()}
    res = compare(value, expected, case.get("output", "output"), case, mistakes, ex.meta,
                  case.get("rtol", 1e-7), case.get("atol", 1e-9))
    name = _mutated(args, originals)
    if name and res is None:
        return "mutated", [f"{fn_name} modified its input {name!r} in place: inputs must stay "
                           "untouched (in the engine they are the network's forward caches)"], None
    return res


def _run_chain(ex, case, module, path, net):
    """The student's rule on every layer of one type, walking back from the output; other
    layers pass relevance (ReLU) or reshape it (Flatten). Stops at the first layer whose
    output diverges from the reference."""
    from ..engine.layers import Flatten, ReLU
    fn_name = case["function"]
    fn = getattr(module, fn_name)
    x = ex.array(case["x"])
    logits = net.forward(x)
    targets = logits.argmax(axis=1)
    R = np.zeros_like(logits)
    R[np.arange(len(x)), targets] = logits[np.arange(len(x)), targets]
    expected_by_layer = {int(k): v for k, v in case["layers"].items()}
    done = []
    for i in reversed(range(len(net.layers))):
        layer = net.layers[i]
        if isinstance(layer, ReLU):
            continue
        if isinstance(layer, Flatten):
            R = R.reshape(layer.a.shape)
            continue
        if type(layer).__name__ != case["layer_type"]:
            return "values", [f"cannot run this chain: layer {i} is a {layer!r}"], None
        args = []
        for spec in case["args"]:
            src = spec.get("layer")
            if src == "input":
                args.append(layer.a.copy())
            elif src == "R":
                args.append(R.copy())
            elif src in ("weight", "bias"):
                p = getattr(layer, src)
                args.append(None if p is None else p.copy())
            else:
                args.append(spec.get("value"))
        value, err = _call(fn, args, fn_name, path)
        label = f"layer {i} {layer!r}"
        if err:
            return err[0], [f"at {label}:"] + err[1], None
        spec = expected_by_layer[i]
        expected = ex.array(spec["expected"])
        mistakes = {m: ex.array(k) for m, k in spec.get("mistakes", {}).items()}
        res = compare(value, expected, case.get("output", "output"), case, mistakes, ex.meta,
                      case.get("rtol", 1e-7), case.get("atol", 1e-9), label=label)
        if res is not None:
            problem, lines, mistake = res
            if problem != "values":
                lines = [f"at {label}:"] + lines
            ok = f"layers {', '.join(done)} matched; " if done else ""
            return problem, [f"{ok}the first layer that diverges (walking back from the output) "
                             f"is layer {i}"] + lines, mistake
        done.append(str(i))
        R = np.asarray(value)
    return None


def run(exercise: str, student_file) -> Report:
    """Run every check of ``exercise`` on ``student_file``; returns a Report."""
    ex = Exercise(exercise)
    report = Report(exercise, str(student_file))
    module, err = import_student(student_file)
    if err:
        report.results.append(Result("import", "the file imports", "fail", [err], problem="import"))
        return report
    missing = [f for f in ex.meta["functions"] if not callable(getattr(module, f, None))]
    for f in missing:
        defined = sorted(n for n, v in vars(module).items()
                         if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        report.results.append(Result(
            f"function {f}", f"the file defines {f}()", "fail",
            [f"{Path(student_file).name} has no function {f!r}"
             + (f" (it defines: {', '.join(defined)})" if defined else "")
             + f"; the skeleton's signature is in {skeleton_path(exercise).name}"],
            problem="missing"))
    not_implemented = set()
    for case in ex.meta["cases"]:
        if case["function"] in missing:
            report.results.append(Result(case["id"], case["title"], "skip",
                                         [f"needs {case['function']}()"]))
            continue
        if case["function"] in not_implemented:
            report.results.append(Result(case["id"], case["title"], "fail",
                                         [f"{case['function']} is not implemented yet (see above)"],
                                         problem="not-implemented"))
            continue
        net = None
        if "net" in case:
            net, why = ex.net(case["net"])
            if net is None:
                report.results.append(Result(case["id"], case["title"], "skip", [why]))
                continue
        runner = _run_chain if case["kind"] == "chain" else _run_call
        # keep the student's prints from interleaving with the report
        buf = _io.StringIO()
        with contextlib.redirect_stdout(buf):
            outcome = runner(ex, case, module, student_file, net)
        printed = buf.getvalue().strip().splitlines()
        if outcome is None:
            report.results.append(Result(case["id"], case["title"], "pass"))
        else:
            problem, lines, mistake = outcome
            if problem == "not-implemented":
                not_implemented.add(case["function"])
            if printed:
                lines = lines + [f"(your function printed {len(printed)} line(s); first: {printed[0][:100]!r})"]
            report.results.append(Result(case["id"], case["title"], "fail", lines, mistake or [], problem))
    return report
