"""The exercise checker: passes correct solutions on any seed, names every typical mistake,
refuses shortcuts through the library and lookups of committed data, survives bad files.

The reference solutions in tests/exercise_solutions/ are written as a student would, from the
skeletons' formulas (an implementation independent of the engine that produces the expected
outputs). The broken variants are those solutions with one line changed (BROKEN below): each
must fail with the named mistake recognised, and every mistake an exercise can name has one.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilrp import check as check_cli
from minilrp.models.io import from_arrays
from minilrp.teaching import checker as check
from minilrp.teaching import grader
from minilrp.teaching.compare import close, compare
from minilrp.teaching.exercises import definition

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = Path(__file__).resolve().parent / "exercise_solutions"
EXERCISES = ["epsilon_dense", "alphabeta_dense", "conv_relevance", "zbox", "maxpool_wta", "sa", "aopc"]
SEED = 20240


@pytest.fixture(scope="module")
def exercises():
    """Every exercise built once with a fixed seed (building draws and computes the fresh checks)."""
    return {name: check.Exercise(name, SEED) for name in EXERCISES}


def failures(report):
    return [r for r in report.results if r.status == "fail"]


def student(tmp_path, text, name="student.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load_solution(name):
    spec = importlib.util.spec_from_file_location(f"solution_{name}", SOLUTIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------
# Correct solutions pass; skeletons do not (and hold no solution)
# ----------------------------------------------------------------------------------------
def test_every_exercise_has_skeleton_solution_and_reference():
    assert check.available() == EXERCISES
    for name in EXERCISES:
        assert check.skeleton_path(name).exists()
        assert (SOLUTIONS / f"{name}.py").exists()
        path = check.reference_path(name)
        assert path.stat().st_size < 20_000, f"{name}.npz is {path.stat().st_size} bytes"
        with np.load(path, allow_pickle=False) as f:  # plain arrays only
            assert all(f[k].dtype.kind in "fiu" for k in f.files)
            assert all(f[k].dtype == np.float64 for k in f.files if f[k].dtype.kind == "f")


@pytest.mark.parametrize("name", EXERCISES)
def test_reference_solution_passes(name, exercises):
    report = check.check(exercises[name], SOLUTIONS / f"{name}.py")
    assert report.passed, report.text()
    assert all(r.status == "pass" for r in report.results)
    assert len(report.results) >= 4 and report.score == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", EXERCISES)
def test_reference_solutions_agree_on_many_seeds(name):
    """Fresh random checks must never fail an honest solution: the reference solutions, called
    here directly, match every check's expected output for 8 seeds (the right answers come from
    the engine; the solutions are written from the formulas; 40 seeds passed when written)."""
    solution = load_solution(name)
    for seed in range(8):
        ex = check.Exercise(name, seed)
        for case in ex.cases:
            for step in ex.calls(case):
                args = [from_arrays(v["network"], dtype=np.float64) if isinstance(v, dict) else
                        v.copy() if isinstance(v, np.ndarray) else v for v in step["values"]]
                out = getattr(solution, case["function"])(*args)
                assert compare(out, step["expected"], "out", case, step["mistakes"], ex.hints, []) is None, \
                    f"{name} seed {seed} check {case['id']} {step['label']}"


@pytest.mark.parametrize("name", EXERCISES)
def test_skeleton_fails_as_not_implemented(name, exercises):
    report = check.check(exercises[name], check.skeleton_path(name))
    assert not report.passed
    assert {r.problem for r in failures(report)} == {"not-implemented"}, report.text()
    text = report.text()
    assert "NotImplementedError" in text and "Traceback" not in text


# ----------------------------------------------------------------------------------------
# Fresh inputs: seeded, printed, reproducible; a lookup in committed data cannot pass
# ----------------------------------------------------------------------------------------
def test_fresh_inputs_follow_the_seed(exercises):
    a, b = check.Exercise("epsilon_dense", SEED), check.Exercise("epsilon_dense", SEED + 1)
    same = exercises["epsilon_dense"]
    fresh = [c for c in a.cases if c["id"] not in {"hand_lrp0", "hand_epsilon", "zero_z", "zero_z_lrp0"}]
    assert len(fresh) >= 4
    for case in fresh:
        for s1, s2, s3 in zip(a.calls(case), b.calls(case), same.calls(case)):
            assert np.array_equal(s1["expected"], s3["expected"])  # same seed, same inputs
            assert not np.array_equal(s1["expected"], s2["expected"])  # another seed, others
    # a check's inputs depend on (seed, exercise, check) only
    assert np.array_equal(check.keyed_rng(7, "x")("c").random(3), check.keyed_rng(7, "x")("c").random(3))
    assert not np.array_equal(check.keyed_rng(7, "x")("c").random(3), check.keyed_rng(7, "x")("d").random(3))
    assert 100_000 <= check.new_seed() < 1_000_000


def test_seed_is_printed_and_reproduces(tmp_path, exercises):
    path = student(tmp_path, (SOLUTIONS / "epsilon_dense.py").read_text())
    report = check.check(exercises["epsilon_dense"], path)
    assert f"seed {SEED}" in report.text() and f"--seed {SEED}" in report.text()
    assert report.to_dict()["seed"] == SEED


LOOKUP_CHEAT = """
import numpy as np, json
_f = np.load({path!r}, allow_pickle=False)
_arrays = {{k: _f[k] for k in _f.files}}
_meta = json.loads(_arrays.pop("meta").tobytes())

def epsilon_dense(a, weight, bias, R, epsilon):
    given = dict(a=a, weight=weight, bias=bias, R=R, epsilon=epsilon)
    for case in _meta["cases"]:
        stored = {{s["name"]: _arrays[s["array"]] if "array" in s else s.get("value") for s in case["args"]}}
        if all(np.array_equal(stored[k], given[k]) for k in given):
            return _arrays[case["expected"]].copy()
    return np.zeros_like(a)
"""


def test_lookup_cheat_passes_only_the_committed_checks(tmp_path, exercises):
    """A file with no LRP in it that looks every call up in a copy of the committed file passes
    the worked-by-hand checks and fails every fresh one."""
    copy = tmp_path / "copy.npz"
    copy.write_bytes(check.reference_path("epsilon_dense").read_bytes())
    report = check.check(exercises["epsilon_dense"], student(tmp_path, LOOKUP_CHEAT.format(path=str(copy))))
    status = {r.id: r.status for r in report.results}
    assert all(status[c] == "pass" for c in ("hand_lrp0", "hand_epsilon", "zero_z", "zero_z_lrp0")), report.text()
    assert all(status[c] == "fail" for c in ("no_bias", "random", "square", "chain_random", "bundled_mlp"))
    assert not report.passed and report.score < 0.5


def test_committed_file_cannot_even_be_read(tmp_path, exercises):
    """The same cheat reading the package's own reference file is refused at import."""
    path = student(tmp_path, LOOKUP_CHEAT.format(path=str(check.reference_path("epsilon_dense"))))
    report = check.check(exercises["epsilon_dense"], path)
    r = report.results[0]
    assert r.problem == "forbidden" and "opening minilrp's file teaching/exercises/epsilon_dense.npz" in r.lines[0]


# ----------------------------------------------------------------------------------------
# No shortcuts through the library
# ----------------------------------------------------------------------------------------
ROUTES = {
    "import": "from minilrp import Epsilon, Dense\n",
    "import_inside": "def _rule():\n    import minilrp.explain.rules as r\n    return r\n",
    "importlib": "import importlib\n_r = importlib.import_module('minilrp.explain.rules')\n",
    "dunder_import_getattr": "_E = getattr(__import__('minilrp'), 'Epsilon')\n",
    "sys_path_other_name": ("import sys, os, importlib\n"
                            "sys.path.insert(0, os.path.dirname(os.path.dirname({pkg!r})))\n"
                            "import importlib.util\n"
                            "_s = importlib.util.spec_from_file_location('mylrp', {pkg!r} + '/__init__.py', "
                            "submodule_search_locations=[{pkg!r}])\n"
                            "_m = importlib.util.module_from_spec(_s); sys.modules['mylrp'] = _m\n"
                            "_s.loader.exec_module(_m)\n"),
    "exec_source": "exec(open({pkg!r} + '/explain/rules.py').read(), {{}})\n",
    "subprocess": ("import subprocess, sys\n"
                   "subprocess.run([sys.executable, '-c', 'import minilrp'])\n"),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_library_routes_refused_for_rule_exercises(tmp_path, route, exercises):
    import minilrp
    pkg = os.path.dirname(os.path.realpath(minilrp.__file__))
    code = ROUTES[route].format(pkg=pkg)
    if route == "import_inside":
        code += ("def epsilon_dense(a, weight, bias, R, epsilon):\n"
                 "    return _rule().Epsilon(epsilon).relevance(None, a, R)[0]\n")
    else:
        code += "def epsilon_dense(a, weight, bias, R, epsilon):\n    return a\n"
    report = check.check(exercises["epsilon_dense"], student(tmp_path, code))
    r = failures(report)[0]
    assert r.problem == "forbidden", report.text()
    text = " ".join(r.lines)
    assert "is not allowed in the exercise 'epsilon_dense'" in text and "Allowed here: NumPy" in text
    assert not report.passed and "Traceback" not in report.text()


SA_ROUTES = {
    "net_gradient": "    return (net.gradient(x, target) ** 2).sum(1)\n",
    "type_gradient": "    return (type(net).gradient(net, x, target) ** 2).sum(1)\n",
    "class_dict": "    return (type(net).__dict__['gradient'](net, x, target) ** 2).sum(1)\n",
    "getattr_relevance": "    return getattr(net, 'relevance')(x, 'LRP-0', target=target).sum(1)\n",
    "sensitivity": "    from minilrp import sensitivity\n    return sensitivity.sa(net, x, target)\n",
    "sensitivity_module": "    import minilrp.explain.sensitivity as s\n    return s.sa(net, x, target)\n",
    "importlib": ("    import importlib\n    return importlib.import_module('minilrp.explain.sensitivity')"
                 ".sa(net, x, target)\n"),
    "engine_package": "    import minilrp\n    return minilrp.sensitivity.sa(net, x, target)\n",
}


@pytest.mark.parametrize("route", list(SA_ROUTES))
def test_library_routes_refused_for_sa(tmp_path, route, exercises):
    code = "import numpy as np\ndef sa(net, x, target=None):\n" + SA_ROUTES[route]
    report = check.check(exercises["sa"], student(tmp_path, code))
    assert {r.problem for r in failures(report)} == {"forbidden"}, report.text()
    assert "compute the gradient yourself with net.forward and net.backward" in report.text()
    assert "Allowed here: net.forward, net.backward" in report.text()


def test_aopc_library_refused(tmp_path, exercises):
    code = ("def region_scores(heatmap, size):\n    from minilrp import perturbation as p\n"
            "    return p.region_scores(heatmap, p.grid(heatmap.shape[-2:], size))\n"
            "def aopc(curves):\n    from minilrp.evaluate.perturbation import aopc\n    return aopc(curves)\n")
    report = check.check(exercises["aopc"], student(tmp_path, code))
    assert {r.problem for r in failures(report)} == {"forbidden"}, report.text()


# ----------------------------------------------------------------------------------------
# Deliberately broken solutions: the right diagnosis, for every mistake an exercise names
# ----------------------------------------------------------------------------------------
TIES_LAST = ("winners = (win == top)\n            flat = winners.reshape(N, C, -1)\n"
             "            winners = (flat & (np.cumsum(flat[:, :, ::-1], axis=2)[:, :, ::-1] == 1)).reshape(win.shape)")
BROKEN = {
    # exercise, expected mistake: [(old, new), ...] applied to the reference solution
    ("epsilon_dense", "stabiliser_sign"): [("d = z + epsilon * sign0", "d = z - epsilon * sign0")],
    ("epsilon_dense", "stabiliser_plus"): [("d = z + epsilon * sign0", "d = z + epsilon")],
    ("epsilon_dense", "missing_stabiliser"): [("d = z + epsilon * sign0", "d = z")],
    ("epsilon_dense", "np_sign"): [("sign0 = np.where(z >= 0, 1.0, -1.0)", "sign0 = np.sign(z)")],
    ("epsilon_dense", "bias_ignored"): [("z = z + bias", "z = z")],
    ("epsilon_dense", "no_input_factor"): [("return a * c", "return c")],
    ("epsilon_dense", "weight_layout"): [("z = a @ weight.T", "z = a @ weight"),
                                         ("c = s @ weight", "c = s @ weight.T")],
    ("alphabeta_dense", "alpha_plus_beta"): [("alpha * pos - beta * neg", "alpha * pos + beta * neg")],
    ("alphabeta_dense", "alpha_beta_normalised"): [("return alpha * pos - beta * neg",
                                                    "return (alpha * pos - beta * neg) / (alpha + beta)")],
    ("alphabeta_dense", "alpha_beta_swapped"): [("return alpha * pos - beta * neg", "return beta * pos - alpha * neg")],
    ("alphabeta_dense", "bias_not_split"): [("bp, bn = np.maximum(b, 0), np.minimum(b, 0)", "bp, bn = b, b")],
    ("alphabeta_dense", "bias_ignored"): [("bp, bn = np.maximum(b, 0), np.minimum(b, 0)", "bp, bn = 0 * b, 0 * b")],
    ("alphabeta_dense", "negative_inputs_ignored"): [("ap @ wp.T + an @ wn.T + bp", "ap @ wp.T + bp"),
                                                     ("ap @ wn.T + an @ wp.T + bn", "ap @ wn.T + bn"),
                                                     ("ap * (sp @ wp) + an * (sp @ wn)", "ap * (sp @ wp)"),
                                                     ("ap * (sn @ wn) + an * (sn @ wp)", "ap * (sn @ wn)")],
    ("alphabeta_dense", "full_denominator"): [("sp, sn = ratio(zp), ratio(zn)", "sp = sn = ratio(a @ weight.T + b)")],
    ("alphabeta_dense", "stabiliser_sign"): [("d = z + epsilon * np.where", "d = z - epsilon * np.where")],
    ("alphabeta_dense", "stabiliser_plus"): [("d = z + epsilon * np.where(z >= 0, 1.0, -1.0)", "d = z + epsilon")],
    ("conv_relevance", "flipped_kernel"): [("kernel = weight\n", "kernel = weight[:, :, ::-1, ::-1]\n")],
    ("conv_relevance", "offset_plus_one"): [("padded[:, :, padding:padding + H, padding:padding + W]",
                                             "padded[:, :, padding + 1:padding + 1 + H, padding + 1:padding + 1 + W]")],
    ("conv_relevance", "offset_minus_one"): [("padded[:, :, padding:padding + H, padding:padding + W]",
                                              "padded[:, :, padding - 1:padding - 1 + H, padding - 1:padding - 1 + W]")],
    ("conv_relevance", "padding_not_removed"): [("padded[:, :, padding:padding + H, padding:padding + W]",
                                                 "padded[:, :, :H, :W]")],
    ("conv_relevance", "stride_ignored"): [("padded[:, :, y * stride + i, x * stride + j]", "padded[:, :, y + i, x + j]")],
    ("conv_relevance", "channels_swapped"): [("s[:, :, y, x] @ kernel[:, :, i, j]", "s[:, :, y, x] @ kernel[:, :, i, j].T")],
    ("conv_relevance", "stabiliser_sign"): [("d = z + epsilon * np.where", "d = z - epsilon * np.where")],
    ("conv_relevance", "stabiliser_plus"): [("d = z + epsilon * np.where(z >= 0, 1.0, -1.0)", "d = z + epsilon")],
    ("conv_relevance", "missing_stabiliser"): [("d = z + epsilon * np.where(z >= 0, 1.0, -1.0)", "d = z")],
    ("conv_relevance", "bias_ignored"): [("z = conv2d(a, weight, bias, stride, padding)",
                                          "z = conv2d(a, weight, None, stride, padding)")],
    ("conv_relevance", "no_input_factor"): [("    return a * c", "    return c")],
    ("zbox", "bounds_swapped"): [("low = np.broadcast_to(low, x.shape)\n    high = np.broadcast_to(high, x.shape)",
                                  "low, high = np.broadcast_to(high, x.shape), np.broadcast_to(low, x.shape)")],
    ("zbox", "bounds_ignored"): [("z = x @ weight.T - low @ wp.T - high @ wn.T", "z = x @ weight.T"),
                                 ("return x * (s @ weight) - low * (s @ wp) - high * (s @ wn)", "return x * (s @ weight)")],
    ("zbox", "bound_terms_sign"): [("z = x @ weight.T - low @ wp.T - high @ wn.T", "z = x @ weight.T + low @ wp.T + high @ wn.T"),
                                   ("return x * (s @ weight) - low * (s @ wp) - high * (s @ wn)",
                                    "return x * (s @ weight) + low * (s @ wp) + high * (s @ wn)")],
    ("zbox", "high_term_missing"): [("z = x @ weight.T - low @ wp.T - high @ wn.T", "z = x @ weight.T - low @ wp.T"),
                                    ("- low * (s @ wp) - high * (s @ wn)", "- low * (s @ wp)")],
    ("zbox", "stabiliser_sign"): [("d = z + epsilon * np.where(z >= 0, 1.0, -1.0)", "d = z - epsilon")],
    ("maxpool_wta", "ties_first"): [("winners = (win == top)",
                                     "winners = (win == top)\n            flat = winners.reshape(N, C, -1)\n"
                                     "            winners = (flat & (np.cumsum(flat, axis=2) == 1)).reshape(win.shape)")],
    ("maxpool_wta", "ties_last"): [("winners = (win == top)", TIES_LAST)],
    ("maxpool_wta", "ties_full"): [("/ winners.sum(axis=(2, 3), keepdims=True)", "/ 1.0")],
    ("maxpool_wta", "overlap_overwritten"): [
        ("out[:, :, y * stride:y * stride + K, x * stride:x * stride + K] += winners * share",
         "sl = (slice(None), slice(None), slice(y * stride, y * stride + K), slice(x * stride, x * stride + K))\n"
         "            out[sl] = np.where(winners, share, out[sl])")],
    ("maxpool_wta", "proportional"): [("winners = (win == top)", "winners = win")],
    ("maxpool_wta", "minimum"): [("top = win.max(axis=(2, 3), keepdims=True)", "top = win.min(axis=(2, 3), keepdims=True)")],
    ("sa", "abs_sum"): [("return (g ** 2).sum(axis=1)", "return np.abs(g).sum(axis=1)")],
    ("sa", "norm"): [("return (g ** 2).sum(axis=1)", "return np.sqrt((g ** 2).sum(axis=1))")],
    ("sa", "square_of_sum"): [("return (g ** 2).sum(axis=1)", "return g.sum(axis=1) ** 2")],
    ("sa", "not_squared"): [("return (g ** 2).sum(axis=1)", "return g.sum(axis=1)")],
    ("sa", "max_over_channels"): [("return (g ** 2).sum(axis=1)", "return (g ** 2).max(axis=1)")],
    ("sa", "softmax_probability"): [("g = net.backward(weights)",
                                     "p = np.exp(logits - logits.max(1, keepdims=True))\n    p /= p.sum(1, keepdims=True)\n"
                                     "    g = net.backward(p[np.arange(N), t][:, None] * (weights - p))")],
    ("sa", "log_softmax"): [("g = net.backward(weights)",
                             "p = np.exp(logits - logits.max(1, keepdims=True))\n    p /= p.sum(1, keepdims=True)\n"
                             "    g = net.backward(weights - p)")],
    ("sa", "target_ignored"): [("if target is None:", "if True:")],
    ("sa", "target_zero"): [("t = logits.argmax(axis=1)", "t = np.zeros(N, dtype=int)")],
    ("aopc", "divide_by_L"): [("return drops.mean(axis=1)", "return drops[:, 1:].mean(axis=1)")],
    ("aopc", "sign_flipped"): [("drops = c[:, :1] - c", "drops = c - c[:, :1]")],
    ("aopc", "relative_drop"): [("return drops.mean(axis=1)", "return drops.mean(axis=1) / c[:, 0]")],
    ("aopc", "trapezoid"): [("return drops.mean(axis=1)", "return np.trapezoid(drops, axis=1) / (c.shape[1] - 1)")],
    ("aopc", "last_step_only"): [("return drops.mean(axis=1)", "return drops[:, -1]")],
    ("aopc", "column_major"): [("scores[:, r * cols + c]", "scores[:, c * rows + r]")],
    ("aopc", "abs_channels"): [("h = h.sum(axis=1)", "h = np.abs(h).sum(axis=1)")],
    ("aopc", "mean_not_sum"): [("block.sum(axis=(1, 2))", "block.mean(axis=(1, 2))")],
}


def broken_source(exercise, subs):
    src = (SOLUTIONS / f"{exercise}.py").read_text()
    for old, new in subs:
        assert src.count(old) == 1, f"{old!r} occurs {src.count(old)} times in the {exercise} solution"
        src = src.replace(old, new)
    return src


def broken_file(tmp_path, exercise, subs, name="student.py"):
    return student(tmp_path, broken_source(exercise, subs), name)


@pytest.fixture(scope="module")
def broken_reports(tmp_path_factory, exercises):
    """Every broken variant checked once: each exercise's variants as one folder, graded in
    parallel (the batch grader at work)."""
    reports = {}
    for name in EXERCISES:
        folder = tmp_path_factory.mktemp(f"broken_{name}")
        for (e, mistake), subs in BROKEN.items():
            if e == name:
                (folder / f"{mistake}.py").write_text(broken_source(e, subs))
        got = {}
        grader.grade(exercises[name], folder, jobs=2, reports=got)
        reports.update({(name, f[:-3]): r for f, r in got.items()})
    return reports


def test_every_named_mistake_has_a_broken_solution():
    named = {(name, m) for name in EXERCISES for m in definition(name).HINTS}
    assert named == set(BROKEN), f"untested: {sorted(named - set(BROKEN))}; unknown: {sorted(set(BROKEN) - named)}"


@pytest.mark.slow  # the shared fixture grades all 57 variants (about 10 s on two idle cores)
@pytest.mark.parametrize("exercise,mistake", list(BROKEN), ids=[f"{e}-{m}" for e, m in BROKEN])
def test_broken_solution_is_diagnosed(exercise, mistake, broken_reports):
    report = broken_reports[(exercise, mistake)]
    text = report.text()
    assert not report.passed, text
    assert "Traceback" not in text
    fails = failures(report)
    diagnosed = [r for r in fails if r.mistake == mistake]
    assert diagnosed, f"no check named [{mistake}]:\n{text}"
    # every mismatch that is diagnosed is consistent with this mistake (a check may not tell two
    # mistakes apart: with one channel, sum |g| = sqrt(sum g^2))
    assert all(mistake in r.mistakes for r in fails if r.mistakes), text
    r = diagnosed[0]
    assert any(definition(exercise).HINTS[mistake] in line for line in r.lines)
    assert any("first divergence at" in line for line in r.lines)


def test_diagnosis_reports_location_and_size(tmp_path, exercises):
    report = check.check(exercises["epsilon_dense"],
                         broken_file(tmp_path, "epsilon_dense", BROKEN[("epsilon_dense", "stabiliser_sign")]))
    r = next(r for r in report.results if r.id == "hand_epsilon")
    # z = (-0.5, 3), eps 0.25: with the wrong sign the first output's denominator is -0.25
    # instead of -0.75: R_in[0, 0] = 1*1*1/-0.25 + 1*2*2/3.25 = -2.54545 (reference -0.102564)
    assert "first divergence at R_in[0, 0]: got -2.54545, expected -0.102564" in r.lines[0]
    chain = next(r for r in report.results if r.id == "chain_random")
    assert "first layer that diverges (walking back from the output) is layer 4" in chain.lines[0]


# ----------------------------------------------------------------------------------------
# Diagnoses that are right: precision, generic patterns, the "smaller checks pass" note
# ----------------------------------------------------------------------------------------
LOW_PRECISION = {
    "float32": ("z = a @ weight.T", "a, weight = a.astype(np.float32), weight.astype(np.float32)\n    z = a @ weight.T",
                "return a * c", "return (a * c).astype(np.float64)"),
    "float16": ("z = a @ weight.T", "a, weight = a.astype(np.float16), weight.astype(np.float16)\n    z = a @ weight.T",
                "return a * c", "return (a * c).astype(np.float64)"),
}


@pytest.mark.parametrize("dtype", list(LOW_PRECISION))
def test_low_precision_is_diagnosed_as_such(tmp_path, dtype, exercises):
    o1, n1, o2, n2 = LOW_PRECISION[dtype]
    report = check.check(exercises["epsilon_dense"], broken_file(tmp_path, "epsilon_dense", [(o1, n1), (o2, n2)]))
    fails = failures(report)
    assert fails and all(r.problem == "precision" and r.mistakes == [dtype] for r in fails), report.text()
    assert f"level of {dtype} rounding" in report.text()
    assert "usual causes" not in report.text() and "constant factor" not in report.text()


def test_precision_when_only_an_intermediate_is_float32(tmp_path, exercises):
    """z in float32, the rest in float64: the values are not float32 numbers, the error is at
    float32's level."""
    path = broken_file(tmp_path, "epsilon_dense", [("z = a @ weight.T", "z = (a.astype(np.float32) @ weight.T.astype(np.float32)).astype(np.float64)")])
    report = check.check(exercises["epsilon_dense"], path)
    fails = failures(report)
    assert fails and {m for r in fails for m in r.mistakes} == {"float32"}, report.text()


def test_sign_and_scale_patterns(tmp_path, exercises):
    report = check.check(exercises["epsilon_dense"], broken_file(tmp_path, "epsilon_dense", [("return a * c", "return -(a * c)")]))
    assert all(r.mistakes == ["sign"] for r in failures(report) if r.id != "zero_z_lrp0"), report.text()
    report = check.check(exercises["epsilon_dense"], broken_file(tmp_path, "epsilon_dense", [("return a * c", "return 2 * a * c")], "s2.py"))
    assert any(r.mistakes == ["scale"] and "times 2" in " ".join(r.lines) for r in failures(report)), report.text()


def test_smaller_checks_note_only_when_they_passed(tmp_path, exercises):
    only_big = broken_file(tmp_path, "epsilon_dense", [("return a * c", "return a * c + (a.shape[1] == 784) * 0.1 * np.abs(a * c).max()")])
    report = check.check(exercises["epsilon_dense"], only_big)
    assert [r.id for r in failures(report)] == ["bundled_mlp"], report.text()
    assert "the smaller checks pass but the bundled model does not" in report.text()
    everything = student(tmp_path, "import numpy as np\ndef epsilon_dense(a, weight, bias, R, epsilon):\n"
                                   "    return np.ones_like(a) * 0.123\n", "s2.py")
    report = check.check(exercises["epsilon_dense"], everything)
    assert all(r.status == "fail" for r in report.results)
    assert "smaller checks pass" not in report.text()


def test_output_size_mistakes_get_shape_hints(tmp_path, exercises):
    path = broken_file(tmp_path, "conv_relevance", [("H, W = in_hw", "H, W = (Ho - 1) * stride + K - 2 * padding, "
                                                                       "(Wo - 1) * stride + K - 2 * padding")])
    report = check.check(exercises["conv_relevance"], path)
    r = next(r for r in report.results if r.id == "T_stride")
    assert r.problem == "shape" and any("reached by no window" in line for line in r.lines), report.text()
    path = broken_file(tmp_path, "conv_relevance", [("return padded[:, :, padding:padding + H, padding:padding + W].copy()",
                                                     "return padded[:, :, :H + 2 * padding, :W + 2 * padding].copy()")], "s2.py")
    report = check.check(exercises["conv_relevance"], path)
    r = next(r for r in report.results if r.id == "T_padding")
    assert r.problem == "shape" and any("padding was not cropped" in line for line in r.lines), report.text()


def test_missing_denominator_guard_is_reported_as_nan(tmp_path, exercises):
    path = broken_file(tmp_path, "epsilon_dense", [("s = np.zeros_like(R, dtype=np.float64)\n    np.divide(R, d, out=s, where=d != 0)",
                                                    "s = R / d")])
    report = check.check(exercises["epsilon_dense"], path)
    r = next(r for r in report.results if r.id == "zero_z_lrp0")
    assert r.status == "fail" and r.problem == "nan", report.text()
    assert "drop that output's relevance" in " ".join(r.lines)


def test_unsummed_sa(tmp_path, exercises):
    report = check.check(exercises["sa"], broken_file(tmp_path, "sa", [("return (g ** 2).sum(axis=1)", "return g ** 2")]))
    r = failures(report)[0]
    assert r.problem == "shape" and any("not summed over channels" in line for line in r.lines)


def test_aopc_shape_mistakes(tmp_path, exercises):
    report = check.check(exercises["aopc"], broken_file(tmp_path, "aopc", [("return drops.mean(axis=1)", "return drops.mean()")]))
    r = next(r for r in report.results if r.id == "aopc_hand")
    assert r.problem == "shape" and any("not the mean over images" in line for line in r.lines)
    report = check.check(exercises["aopc"], broken_file(tmp_path, "aopc", [("rows, cols = -(-H // size), -(-W // size)",
                                                                             "rows, cols = H // size, W // size")], "s2.py"))
    r = next(r for r in report.results if r.id == "scores_remainder")
    assert r.problem == "shape" and any("partial regions" in line for line in r.lines)


# ----------------------------------------------------------------------------------------
# Bad student files: a failed check with a clear message, never a traceback
# ----------------------------------------------------------------------------------------
BAD = {
    "syntax": ("def epsilon_dense(a, weight, bias, R, epsilon)\n    return a\n", "import", "SyntaxError"),
    "import_error": ("import numpy_typo\n", "import", "ModuleNotFoundError: No module named 'numpy_typo'"),
    "module_raises": ("x = 1 / 0\n", "import", "ZeroDivisionError: division by zero (student.py, line 1)"),
    "exits": ("import sys\nsys.exit(3)\n", "import", "SystemExit"),
    "missing": ("def epsilon(a, weight, bias, R, epsilon):\n    return a\n", "missing",
                "has no function 'epsilon_dense' (it defines: epsilon)"),
    "raises": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    raise ValueError('boom')\n", "exception",
               "epsilon_dense raised ValueError: boom (student.py, line 2)"),
    "wrong_shape": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    return R.copy()\n", "shape", "has shape"),
    "transposed": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    return a.T.copy()\n", "shape",
                   "transposed or reshaped"),
    "float32": ("import numpy as np\ndef epsilon_dense(a, weight, bias, R, epsilon):\n    return a.astype(np.float32)\n",
                "dtype", "dtype float32, expected float64"),
    "int": ("import numpy as np\ndef epsilon_dense(a, weight, bias, R, epsilon):\n    return np.zeros(a.shape, int)\n",
            "dtype", "dtype int64, expected float64"),
    "nan": ("import numpy as np\ndef epsilon_dense(a, weight, bias, R, epsilon):\n    return np.full(a.shape, np.nan)\n",
            "nan", "contains NaN at R_in[0, 0]"),
    "none": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    pass\n", "type", "returned None"),
    "tuple": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    return a, R\n", "type", "returned a tuple of 2"),
    "object": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    return object()\n", "type", "returned a object"),
    "string": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    return 'abc'\n", "dtype", "dtype <U3"),
    "mutates": ("import importlib.util\n"
                "spec = importlib.util.spec_from_file_location('sol', %r)\n"
                "sol = importlib.util.module_from_spec(spec); spec.loader.exec_module(sol)\n"
                "def epsilon_dense(a, weight, bias, R, epsilon):\n"
                "    out = sol.epsilon_dense(a, weight, bias, R, epsilon)\n    R *= 0\n    return out\n"
                % str(SOLUTIONS / "epsilon_dense.py"), "mutated", "modified its input 'R' in place"),
    "dies": ("import os\ndef epsilon_dense(a, weight, bias, R, epsilon):\n    os._exit(3)\n", "died",
             "died: exited with status 3"),
    "segfault": ("import faulthandler\ndef epsilon_dense(a, weight, bias, R, epsilon):\n    faulthandler._sigsegv()\n",
                 "died", "killed by signal SIGSEGV"),
    "memory": ("import numpy as np\ndef epsilon_dense(a, weight, bias, R, epsilon):\n"
               "    return np.ones((40000, 40000)) @ np.ones(40000)\n", "exception", "MemoryError"),
    "kills_the_checker": ("import os, signal\ndef epsilon_dense(a, weight, bias, R, epsilon):\n"
                          "    os.kill(os.getppid(), signal.SIGKILL)\n", "forbidden", "sending a signal to another process"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_student_file_reported_cleanly(tmp_path, kind, exercises):
    src, problem, message = BAD[kind]
    report = check.check(exercises["epsilon_dense"], student(tmp_path, src))
    text = report.text()
    assert not report.passed
    assert "Traceback" not in text
    assert problem in {r.problem for r in failures(report)}, text
    assert message in text, text


def test_a_dead_process_is_replaced_for_the_next_checks(tmp_path, exercises):
    """Dying on one input costs that check, not the others."""
    src = (SOLUTIONS / "epsilon_dense.py").read_text().replace(
        "def epsilon_dense(a, weight, bias, R, epsilon):\n",
        "def epsilon_dense(a, weight, bias, R, epsilon):\n    if epsilon == 0.1 and bias is None and a.shape[0] == 1:\n"
        "        import os; os._exit(7)\n")
    report = check.check(exercises["epsilon_dense"], student(tmp_path, src))
    assert [r.id for r in failures(report)] == ["zero_z"], report.text()
    assert failures(report)[0].problem == "died"


def test_dying_every_time_ends_the_exercise(tmp_path, exercises):
    report = check.check(exercises["epsilon_dense"], student(tmp_path, BAD["dies"][0]))
    died = [r for r in report.results if r.problem == "died"]
    assert len(died) == check.MAX_DEATHS and "dying 3 times ends the exercise" in died[-1].lines[-1]
    assert all(r.problem == "not-run" for r in report.results[check.MAX_DEATHS:]), report.text()


def test_endless_loop_ends_the_exercise_with_one_line(tmp_path, exercises):
    import time
    path = student(tmp_path, "def aopc(curves):\n    while True:\n        pass\n"
                             "def region_scores(heatmap, size):\n    raise NotImplementedError\n")
    lines = []
    start = time.perf_counter()
    report = check.check(exercises["aopc"], path, timeout=0.5, on_result=lambda r: lines.append(r.text()))
    assert time.perf_counter() - start < 15  # one timeout, not one per check
    r = next(r for r in report.results if r.id == "aopc_hand")
    assert r.problem == "timeout" and "ran longer than 0.5 s" in r.lines[0]
    assert "the remaining" in " ".join(r.lines) and "were not run" in " ".join(r.lines)
    later = report.results[report.results.index(r) + 1:]
    assert later and all(x.problem == "not-run" and x.text() == "" for x in later)
    assert report.text().count("[FAIL]") == 1 and report.score == 0.0


def test_endless_loop_at_import(tmp_path, exercises):
    report = check.check(exercises["aopc"], student(tmp_path, "while True:\n    pass\n"), timeout=0.5)
    assert [r.problem for r in report.results] == ["timeout"]
    assert "importing took longer than 0.5 s" in report.results[0].lines[0]


def test_prints_are_captured_not_shown(tmp_path, exercises, capfd):
    src = (SOLUTIONS / "epsilon_dense.py").read_text().replace(
        "    return a * c", "    for i in range(20000):\n        print('debug', i)\n    return -a * c")
    report = check.check(exercises["epsilon_dense"], student(tmp_path, "print('at import')\n" + src))
    out, err = capfd.readouterr()
    assert "debug" not in out + err
    assert "your function printed 20000 line(s); first: 'debug 0'" in report.text()


def test_missing_file_and_not_python(tmp_path, exercises):
    report = check.check(exercises["aopc"], tmp_path / "nope.py")
    assert failures(report)[0].problem == "import" and "no such file" in report.text()
    (tmp_path / "a.txt").write_text("x")
    assert "not a Python file" in check.check(exercises["aopc"], tmp_path / "a.txt").text()


def test_student_helper_module_next_to_the_file_imports(tmp_path, exercises):
    (tmp_path / "my_helpers.py").write_text("import numpy as np\ndef drops(c):\n    return c[:, :1] - c\n")
    (tmp_path / "student.py").write_text(
        (SOLUTIONS / "aopc.py").read_text().replace("drops = c[:, :1] - c", "drops = my_helpers.drops(c)")
        .replace("import numpy as np", "import numpy as np\nimport my_helpers"))
    assert check.check(exercises["aopc"], tmp_path / "student.py").passed
    assert not list(tmp_path.glob("__pycache__"))  # no bytecode left in the student's folder


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def cli(*args):
    """The command line in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = check_cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_python_dash_m(tmp_path):
    """The real command, in a subprocess: exit 0 when all pass, 1 when a check fails."""
    p = subprocess.run([sys.executable, "-m", "minilrp.check", "aopc", str(SOLUTIONS / "aopc.py"), "--seed", "3"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "ALL PASSED" in p.stdout and "seed 3 " in p.stdout, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "minilrp.check", "aopc",
                        str(broken_file(tmp_path, "aopc", BROKEN[("aopc", "sign_flipped")]))],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "[FAIL]" in p.stdout and "hint [sign_flipped]" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


@pytest.mark.slow
def test_json_into_a_closed_pipe(tmp_path):
    """``--json | head`` ends quietly: no BrokenPipeError traceback."""
    for cmd in (f"{sys.executable} -m minilrp.check --json epsilon_dense {SOLUTIONS / 'epsilon_dense.py'} | head -2",
                f"{sys.executable} -m minilrp.check epsilon_dense {SOLUTIONS / 'epsilon_dense.py'} | head -1"):
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
        assert p.stdout.strip() and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_cli_list_and_unknown_names():
    code, out, _ = cli("--list")
    assert code == 0 and all(name in out for name in EXERCISES)
    code, _, err = cli("no_such_exercise", "x.py")
    assert code == 2 and "unknown exercise 'no_such_exercise'" in err
    assert all(name in err for name in EXERCISES)
    code, _, err = cli()
    assert code == 2 and "aopc" in err
    code, _, err = cli("aopc")
    assert code == 2 and "student_file.py" in err
    code, _, err = cli("aopc", "x.py", "--timeout", "-1")
    assert code == 2 and "must be positive" in err
    code, _, err = cli("grade", "nope", "x")
    assert code == 2 and "unknown exercise 'nope'" in err
    code, _, err = cli("grade", "aopc", "no/such/folder")
    assert code == 2 and "not a folder" in err


def test_cli_skeleton_and_json(tmp_path):
    out = tmp_path / "mine.py"
    code, _, _ = cli("--skeleton", "maxpool_wta", "-o", out)
    assert code == 0 and out.read_text() == check.skeleton_path("maxpool_wta").read_text()
    assert cli("--skeleton", "maxpool_wta", "-o", out)[0] == 2  # never overwrites
    code, text, _ = cli("--json", "maxpool_wta", out, "--seed", "5")
    assert code == 1
    data = json.loads(text)
    assert data["passed"] is False and data["seed"] == 5 and data["results"][0]["problem"] == "not-implemented"
    assert cli("--skeleton", "nope")[0] == 2
    code, text, _ = cli("--skeleton", "sa")
    assert code == 0 and "def sa(net, x, target=None):" in text


# ----------------------------------------------------------------------------------------
# The committed references are current
# ----------------------------------------------------------------------------------------
def test_references_are_up_to_date():
    """Rebuild every committed reference file in memory from the engine and compare (fails after
    a change of the engine's conventions: rerun tools/make_exercise_references.py)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_exercise_references as mk
    finally:
        sys.path.pop(0)
    stale = [name for name in EXERCISES if not mk.same_as_committed(mk.build(name))]
    assert not stale, f"stale exercise references: {stale}; run tools/make_exercise_references.py"


def test_stored_mistakes_fail_the_check_and_have_hints(exercises):
    for name, ex in exercises.items():
        for case in ex.cases:
            for step in ex.calls(case):
                for m, out in step["mistakes"].items():
                    assert m in ex.hints
                    assert not close(out, step["expected"]).all(), (name, case["id"], m)
