"""The exercise checker: passes correct solutions, diagnoses typical mistakes, survives bad files.

The reference solutions in tests/exercise_solutions/ are written as a student would, from the
skeletons' formulas (an implementation independent of the engine that produced the committed
references). The broken variants are those solutions with one line changed (BROKEN below):
each must fail with the named mistake recognised.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilrp import check as check_cli
from minilrp.teaching import checker as check

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = Path(__file__).resolve().parent / "exercise_solutions"
EXERCISES = ["epsilon_dense", "alphabeta_dense", "conv_relevance", "zbox", "maxpool_wta", "sa", "aopc"]


def run(exercise, path):
    return check.run(exercise, path)


def failures(report):
    return [r for r in report.results if r.status == "fail"]


# ----------------------------------------------------------------------------------------
# Correct solutions pass; skeletons do not (and hold no solution)
# ----------------------------------------------------------------------------------------
def test_every_exercise_has_skeleton_solution_and_reference():
    assert sorted(check.available()) == sorted(EXERCISES)
    for name in EXERCISES:
        assert check.skeleton_path(name).exists()
        assert (SOLUTIONS / f"{name}.py").exists()
        path = ROOT / "minilrp" / "teaching" / "exercises" / f"{name}.npz"
        assert path.stat().st_size < 80_000, f"{name}.npz is {path.stat().st_size} bytes"
        with np.load(path, allow_pickle=False) as f:  # plain arrays only
            assert all(f[k].dtype.kind in "fiu" for k in f.files)
            floats = [f[k] for k in f.files if f[k].dtype.kind == "f"]
            assert all(a.dtype == np.float64 for a in floats)


@pytest.mark.parametrize("name", EXERCISES)
def test_reference_solution_passes(name):
    report = run(name, SOLUTIONS / f"{name}.py")
    assert report.passed, report.text()
    assert all(r.status == "pass" for r in report.results if r.status != "skip")
    assert sum(r.status == "pass" for r in report.results) >= 3


@pytest.mark.parametrize("name", EXERCISES)
def test_skeleton_fails_as_not_implemented(name):
    report = run(name, check.skeleton_path(name))
    assert not report.passed
    assert {r.problem for r in failures(report)} == {"not-implemented"}, report.text()
    text = report.text()
    assert "NotImplementedError" in text and "Traceback" not in text


def test_engine_implementations_pass(tmp_path):
    """The project's own implementations, wrapped in the exercises' signatures, pass."""
    f = tmp_path / "engine_epsilon.py"
    f.write_text(
        "from minilrp import Dense\nfrom minilrp import Epsilon\n"
        "def epsilon_dense(a, weight, bias, R, epsilon):\n"
        "    layer = Dense(weight.shape[1], weight.shape[0], weight=weight, bias=bias, use_bias=bias is not None)\n"
        "    return Epsilon(epsilon).relevance(layer, a, R)[0]\n")
    assert run("epsilon_dense", f).passed
    f = tmp_path / "engine_aopc.py"
    f.write_text(
        "from minilrp import perturbation as p\n"
        "def region_scores(heatmap, size):\n"
        "    return p.region_scores(heatmap, p.grid(heatmap.shape[-2:], size))\n"
        "aopc = p.aopc\n")
    assert run("aopc", f).passed
    f = tmp_path / "engine_pool.py"
    f.write_text(
        "from minilrp import MaxPool2d\nfrom minilrp import WinnerTakeAll\n"
        "def maxpool_wta(a, R, kernel_size, stride):\n"
        "    return WinnerTakeAll().relevance(MaxPool2d(kernel_size, stride), a, R)[0]\n")
    assert run("maxpool_wta", f).passed


# ----------------------------------------------------------------------------------------
# Deliberately broken solutions: the right diagnosis
# ----------------------------------------------------------------------------------------
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
    ("alphabeta_dense", "bias_not_split"): [("bp, bn = np.maximum(b, 0), np.minimum(b, 0)", "bp, bn = b, b")],
    ("alphabeta_dense", "bias_ignored"): [("bp, bn = np.maximum(b, 0), np.minimum(b, 0)", "bp, bn = 0 * b, 0 * b")],
    ("alphabeta_dense", "negative_inputs_ignored"): [("ap @ wp.T + an @ wn.T + bp", "ap @ wp.T + bp"),
                                                     ("ap @ wn.T + an @ wp.T + bn", "ap @ wn.T + bn"),
                                                     ("ap * (sp @ wp) + an * (sp @ wn)", "ap * (sp @ wp)"),
                                                     ("ap * (sn @ wn) + an * (sn @ wp)", "ap * (sn @ wn)")],
    ("alphabeta_dense", "full_denominator"): [("sp, sn = ratio(zp), ratio(zn)", "sp = sn = ratio(a @ weight.T + b)")],
    ("alphabeta_dense", "stabiliser_sign"): [("d = z + epsilon * np.where", "d = z - epsilon * np.where")],
    ("conv_relevance", "flipped_kernel"): [("kernel = weight\n", "kernel = weight[:, :, ::-1, ::-1]\n")],
    ("conv_relevance", "offset_plus_one"): [("padded[:, :, padding:padding + H, padding:padding + W]",
                                             "padded[:, :, padding + 1:padding + 1 + H, padding + 1:padding + 1 + W]")],
    ("conv_relevance", "offset_minus_one"): [("padded[:, :, padding:padding + H, padding:padding + W]",
                                              "padded[:, :, padding - 1:padding - 1 + H, padding - 1:padding - 1 + W]")],
    ("conv_relevance", "channels_swapped"): [("s[:, :, y, x] @ kernel[:, :, i, j]", "s[:, :, y, x] @ kernel[:, :, i, j].T")],
    ("conv_relevance", "stabiliser_sign"): [("d = z + epsilon * np.where", "d = z - epsilon * np.where")],
    ("conv_relevance", "no_input_factor"): [("    return a * c", "    return c")],
    ("zbox", "bounds_swapped"): [("low = np.broadcast_to(low, x.shape)\n    high = np.broadcast_to(high, x.shape)",
                                  "low, high = np.broadcast_to(high, x.shape), np.broadcast_to(low, x.shape)")],
    ("zbox", "bounds_ignored"): [("z = x @ weight.T - low @ wp.T - high @ wn.T", "z = x @ weight.T"),
                                 ("return x * (s @ weight) - low * (s @ wp) - high * (s @ wn)", "return x * (s @ weight)")],
    ("zbox", "high_term_missing"): [("z = x @ weight.T - low @ wp.T - high @ wn.T", "z = x @ weight.T - low @ wp.T"),
                                    ("- low * (s @ wp) - high * (s @ wn)", "- low * (s @ wp)")],
    ("zbox", "stabiliser_sign"): [("d = z + epsilon * np.where(z >= 0, 1.0, -1.0)", "d = z - epsilon")],
    ("maxpool_wta", "ties_first"): [("winners = (win == top)",
                                     "winners = (win == top)\n            flat = winners.reshape(N, C, -1)\n"
                                     "            winners = (flat & (np.cumsum(flat, axis=2) == 1)).reshape(win.shape)")],
    ("maxpool_wta", "ties_full"): [("/ winners.sum(axis=(2, 3), keepdims=True)", "/ 1.0")],
    ("maxpool_wta", "overlap_overwritten"): [
        ("out[:, :, y * stride:y * stride + K, x * stride:x * stride + K] += winners * share",
         "sl = (slice(None), slice(None), slice(y * stride, y * stride + K), slice(x * stride, x * stride + K))\n"
         "            out[sl] = np.where(winners, share, out[sl])")],
    ("maxpool_wta", "proportional"): [("winners = (win == top)", "winners = win")],
    ("sa", "abs_sum"): [("return (g ** 2).sum(axis=1)", "return np.abs(g).sum(axis=1)")],
    ("sa", "norm"): [("return (g ** 2).sum(axis=1)", "return np.sqrt((g ** 2).sum(axis=1))")],
    ("sa", "square_of_sum"): [("return (g ** 2).sum(axis=1)", "return g.sum(axis=1) ** 2")],
    ("sa", "softmax_probability"): [("g = net.backward(weights)",
                                     "p = np.exp(logits - logits.max(1, keepdims=True))\n    p /= p.sum(1, keepdims=True)\n"
                                     "    g = net.backward(p[np.arange(N), t][:, None] * (weights - p))")],
    ("sa", "target_ignored"): [("if target is None:", "if True:")],
    ("aopc", "divide_by_L"): [("return drops.mean(axis=1)", "return drops[:, 1:].mean(axis=1)")],
    ("aopc", "sign_flipped"): [("drops = c[:, :1] - c", "drops = c - c[:, :1]")],
    ("aopc", "column_major"): [("scores[:, r * cols + c]", "scores[:, c * rows + r]")],
    ("aopc", "abs_channels"): [("h = h.sum(axis=1)", "h = np.abs(h).sum(axis=1)")],
}


def broken_file(tmp_path, exercise, subs, name="student.py"):
    src = (SOLUTIONS / f"{exercise}.py").read_text()
    for old, new in subs:
        assert src.count(old) == 1, f"{old!r} occurs {src.count(old)} times in the {exercise} solution"
        src = src.replace(old, new)
    path = tmp_path / name
    path.write_text(src)
    return path


@pytest.mark.parametrize("exercise,mistake", list(BROKEN), ids=[f"{e}-{m}" for e, m in BROKEN])
def test_broken_solution_is_diagnosed(tmp_path, exercise, mistake):
    report = run(exercise, broken_file(tmp_path, exercise, BROKEN[(exercise, mistake)]))
    text = report.text()
    assert not report.passed, text
    assert "Traceback" not in text
    fails = failures(report)
    diagnosed = [r for r in fails if r.mistake == mistake]
    assert diagnosed, f"no check named [{mistake}]:\n{text}"
    # every value mismatch that is diagnosed is consistent with this mistake (a check may not
    # tell two mistakes apart: with one channel, sum |g| = sqrt(sum g^2))
    assert all(mistake in r.mistakes for r in fails if r.mistakes), text
    r = diagnosed[0]
    hint = check.Exercise(exercise).meta["hints"][mistake]
    assert any(hint in line for line in r.lines)
    assert any("first divergence at" in line for line in r.lines)


def test_diagnosis_reports_location_and_size(tmp_path):
    report = run("epsilon_dense", broken_file(tmp_path, "epsilon_dense", BROKEN[("epsilon_dense", "stabiliser_sign")]))
    r = next(r for r in report.results if r.id == "hand_epsilon")
    # z = (-0.5, 3), eps 0.25: with the wrong sign the first output's denominator is -0.25
    # instead of -0.75: R_in[0, 0] = 1*1*1/-0.25 + 1*2*2/3.25 = -2.54545 (reference -0.102564)
    assert "first divergence at R_in[0, 0]: got -2.54545, expected -0.102564" in r.lines[0]
    chain = next(r for r in report.results if r.id == "chain_random")
    assert "first layer that diverges (walking back from the output) is layer 4" in chain.lines[0]


def test_output_size_mistake_gets_shape_hint(tmp_path):
    path = broken_file(tmp_path, "conv_relevance", [("H, W = in_hw", "H, W = (Ho - 1) * stride + K - 2 * padding, "
                                                                       "(Wo - 1) * stride + K - 2 * padding")])
    report = run("conv_relevance", path)
    r = next(r for r in report.results if r.id == "T_stride")
    assert r.problem == "shape" and any("reached by no window" in line for line in r.lines), report.text()


def test_missing_denominator_guard_is_reported_as_nan(tmp_path):
    path = broken_file(tmp_path, "epsilon_dense", [("s = np.zeros_like(R, dtype=np.float64)\n    np.divide(R, d, out=s, where=d != 0)",
                                                    "s = R / d")])
    with np.errstate(all="ignore"):
        report = run("epsilon_dense", path)
    r = next(r for r in report.results if r.id == "zero_z_lrp0")
    assert r.status == "fail" and r.problem == "nan", report.text()
    assert "drop that output's relevance" in " ".join(r.lines)


def test_unsummed_sa_and_forbidden_gradient(tmp_path):
    report = run("sa", broken_file(tmp_path, "sa", [("return (g ** 2).sum(axis=1)", "return g ** 2")]))
    r = failures(report)[0]
    assert r.problem == "shape" and any("not summed over channels" in line for line in r.lines)
    report = run("sa", broken_file(tmp_path, "sa", [("g = net.backward(weights)", "g = net.gradient(x, target=t)")],
                                   name="s2.py"))
    assert {r.problem for r in failures(report)} == {"forbidden"}, report.text()
    assert "net.forward and net.backward" in report.text()


def test_aopc_shape_mistakes(tmp_path):
    report = run("aopc", broken_file(tmp_path, "aopc", [("return drops.mean(axis=1)", "return drops.mean()")]))
    r = next(r for r in report.results if r.id == "aopc_hand")
    assert r.problem == "shape" and any("not the mean over images" in line for line in r.lines)
    report = run("aopc", broken_file(tmp_path, "aopc", [("rows, cols = -(-H // size), -(-W // size)",
                                                         "rows, cols = H // size, W // size")], name="s2.py"))
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
    "wrong_shape": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    return R.copy()\n", "shape",
                    "has shape"),
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
    "list": ("def epsilon_dense(a, weight, bias, R, epsilon):\n    return 'abc'\n", "dtype", "dtype <U3"),
    "mutates": ("import importlib.util, pathlib\n"
                "spec = importlib.util.spec_from_file_location('sol', %r)\n"
                "sol = importlib.util.module_from_spec(spec); spec.loader.exec_module(sol)\n"
                "def epsilon_dense(a, weight, bias, R, epsilon):\n"
                "    out = sol.epsilon_dense(a, weight, bias, R, epsilon)\n    R *= 0\n    return out\n"
                % str(SOLUTIONS / "epsilon_dense.py"), "mutated", "modified its input 'R' in place"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_student_file_reported_cleanly(tmp_path, kind, capsys):
    src, problem, message = BAD[kind]
    path = tmp_path / "student.py"
    path.write_text(src)
    report = run("epsilon_dense", path)
    text = report.text()
    assert not report.passed
    assert "Traceback" not in text
    probs = {r.problem for r in failures(report)}
    assert problem in probs, text
    assert message in text, text


@pytest.mark.slow
def test_endless_loop_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(check, "TIMEOUT", 0.5)
    path = tmp_path / "student.py"
    path.write_text("def aopc(curves):\n    while True:\n        pass\n"
                    "def region_scores(heatmap, size):\n    raise NotImplementedError\n")
    report = run("aopc", path)
    r = next(r for r in report.results if r.id == "aopc_hand")
    assert r.problem == "timeout" and "longer than" in r.lines[0]


def test_missing_file_and_not_python(tmp_path):
    report = run("aopc", tmp_path / "nope.py")
    assert failures(report)[0].problem == "import" and "no such file" in report.text()
    (tmp_path / "a.txt").write_text("x")
    report = run("aopc", tmp_path / "a.txt")
    assert "not a Python file" in report.text()


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
    p = subprocess.run([sys.executable, "-m", "minilrp.check", "aopc", str(SOLUTIONS / "aopc.py")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "ALL PASSED" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "minilrp.check", "aopc",
                        str(broken_file(tmp_path, "aopc", BROKEN[("aopc", "sign_flipped")]))],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "[FAIL]" in p.stdout and "hint [sign_flipped]" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


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


def test_cli_skeleton_and_json(tmp_path):
    out = tmp_path / "mine.py"
    code, _, _ = cli("--skeleton", "maxpool_wta", "-o", out)
    assert code == 0 and out.read_text() == check.skeleton_path("maxpool_wta").read_text()
    assert cli("--skeleton", "maxpool_wta", "-o", out)[0] == 2  # never overwrites
    code, text, _ = cli("--json", "maxpool_wta", out)
    assert code == 1
    data = json.loads(text)
    assert data["passed"] is False and data["results"][0]["problem"] == "not-implemented"
    assert cli("--skeleton", "nope")[0] == 2
    code, text, _ = cli("--skeleton", "sa")
    assert code == 0 and "def sa(net, x, target=None):" in text


# ----------------------------------------------------------------------------------------
# The committed references are current
# ----------------------------------------------------------------------------------------
def test_references_are_up_to_date():
    """Rebuild every reference file in memory from the engine and compare with the committed
    ones (fails after a change of the engine's conventions or of the bundled models: rerun
    tools/make_exercise_references.py)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_exercise_references as mk
    finally:
        sys.path.pop(0)
    stale = [name for name in mk.BUILDERS if not mk.same_as_committed(mk.build(name))]
    assert not stale, f"stale exercise references: {stale}; run tools/make_exercise_references.py"


def test_mistakes_differ_from_the_answer_and_have_hints():
    for name in EXERCISES:
        ex = check.Exercise(name)
        for case in ex.meta["cases"]:
            entries = [case] if case["kind"] == "call" else list(case["layers"].values())
            for entry in entries:
                exp = ex.arrays[entry["expected"]]
                for m, key in entry["mistakes"].items():
                    assert m in ex.meta["hints"]
                    assert not np.allclose(ex.arrays[key], exp, rtol=1e-6, atol=1e-8 * np.abs(exp).max())


def test_student_helper_module_next_to_the_file_imports(tmp_path):
    (tmp_path / "my_helpers.py").write_text("import numpy as np\ndef drops(c):\n    return c[:, :1] - c\n")
    (tmp_path / "student.py").write_text(
        (SOLUTIONS / "aopc.py").read_text().replace("drops = c[:, :1] - c", "drops = my_helpers.drops(c)")
        .replace("import numpy as np", "import numpy as np\nimport my_helpers"))
    assert run("aopc", tmp_path / "student.py").passed
    assert str(tmp_path) not in sys.path
