"""The batch grader on a folder of 30 mixed submissions of one exercise: correct, wrong (named
mistakes), crashing, looping, printing, memory-hungry, syntax errors, shortcuts. Every file gets
the row it deserves, and the grader survives them all."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minilrp.teaching import checker, grader

SOLUTIONS = Path(__file__).resolve().parent / "exercise_solutions"
SOLUTION = (SOLUTIONS / "epsilon_dense.py").read_text()
SEED = 4242
N_CHECKS = 9  # epsilon_dense: 4 worked by hand + 5 fresh (with the bundled fmnist-mlp installed)
HEAD = "def epsilon_dense(a, weight, bias, R, epsilon):\n"


def sub(old, new):
    assert SOLUTION.count(old) == 1
    return SOLUTION.replace(old, new)


# file name: (source, status, first failing check, problem of that check, named mistake in the row)
SUBMISSIONS = {
    "correct_plain.py": (SOLUTION, "passed", "", "", ""),
    "correct_prints.py": (sub("    return a * c", "    print('R_in', (a * c).sum())\n    return a * c"),
                          "passed", "", "", ""),
    "correct_helpers.py": ("import numpy as np\n\ndef sign0(z):\n    return np.where(z >= 0, 1.0, -1.0)\n\n"
                           + HEAD + "    z = a @ weight.T + (0 if bias is None else bias)\n"
                           "    d = z + epsilon * sign0(z)\n    s = np.divide(R, d, out=np.zeros_like(R), where=d != 0)\n"
                           "    return a * (s @ weight)\n", "passed", "", "", ""),
    "correct_einsum.py": ("import numpy as np\n" + HEAD + "    z = np.einsum('ni,oi->no', a, weight)\n"
                          "    if bias is not None:\n        z = z + bias\n"
                          "    d = z + epsilon * np.where(z >= 0, 1.0, -1.0)\n"
                          "    s = np.where(d != 0, R / np.where(d != 0, d, 1.0), 0.0)\n"
                          "    return np.einsum('no,oi,ni->ni', s, weight, a)\n", "passed", "", "", ""),
    "correct_loops.py": ("import numpy as np\n" + HEAD + "    out = np.zeros(a.shape)\n"
                         "    for n in range(a.shape[0]):\n        for k in range(weight.shape[0]):\n"
                         "            z = a[n] @ weight[k] + (0.0 if bias is None else bias[k])\n"
                         "            d = z + epsilon * (1.0 if z >= 0 else -1.0)\n"
                         "            if d != 0:\n                out[n] += a[n] * weight[k] / d * R[n, k]\n"
                         "    return out\n", "passed", "", "", ""),
    "correct_copy.py": (SOLUTION.replace("epsilon_dense", "_impl") + "\n" + HEAD
                        + "    return _impl(a.copy(), weight.copy(), bias, R.copy(), epsilon)\n", "passed", "", "", ""),
    "wrong_stabiliser_sign.py": (sub("d = z + epsilon * sign0", "d = z - epsilon * sign0"), "failed",
                                 "hand_epsilon", "values", "stabiliser_sign"),
    "wrong_stabiliser_plus.py": (sub("d = z + epsilon * sign0", "d = z + epsilon"), "failed", "hand_epsilon",
                                 "values", "stabiliser_plus"),
    "wrong_no_stabiliser.py": (sub("d = z + epsilon * sign0", "d = z"), "failed", "hand_epsilon", "values",
                               "missing_stabiliser"),
    "wrong_np_sign.py": (sub("sign0 = np.where(z >= 0, 1.0, -1.0)", "sign0 = np.sign(z)"), "failed", "zero_z",
                         "values", "np_sign"),
    "wrong_bias.py": (sub("z = z + bias", "z = z"), "failed", "hand_lrp0", "values", "bias_ignored"),
    "wrong_no_input.py": (sub("return a * c", "return c"), "failed", "hand_lrp0", "values", "no_input_factor"),
    "wrong_layout.py": (sub("z = a @ weight.T", "z = a @ weight").replace("c = s @ weight", "c = s @ weight.T"),
                        "failed", "hand_lrp0", "values", "weight_layout"),
    "wrong_float32.py": (sub("z = a @ weight.T", "a, weight = a.astype(np.float32), weight.astype(np.float32)\n"
                                                 "    z = a @ weight.T").replace("return a * c", "return (a * c).astype(float)"),
                         "failed", "no_bias", "precision", "float32"),  # the hand-worked numbers survive float32
    "wrong_shape.py": (HEAD + "    return R[:, :1].copy()\n", "failed", "hand_lrp0", "shape", ""),
    "wrong_none.py": (HEAD + "    pass\n", "failed", "hand_lrp0", "type", ""),
    "wrong_mutates.py": (sub("    return a * c", "    R *= 1.0 + 0 * c.sum()\n    a += 0\n    a *= 2\n    return a * c / 2"),
                         "failed", "hand_lrp0", "mutated", ""),
    "crash_raises.py": (HEAD + "    raise ValueError('not today')\n", "failed", "hand_lrp0", "exception", ""),
    "crash_exit.py": ("import os\n" + HEAD + "    os._exit(1)\n", "died", "hand_lrp0", "died", ""),
    "crash_segfault.py": ("import faulthandler\n" + HEAD + "    faulthandler._sigsegv()\n", "died", "hand_lrp0", "died", ""),
    "crash_at_import.py": ("raise RuntimeError('broken setup')\n" + SOLUTION, "import-error", "import", "import", ""),
    "crash_sys_exit.py": ("import sys\nsys.exit(2)\n", "import-error", "import", "import", ""),
    "loop_in_function.py": (HEAD + "    while True:\n        pass\n", "timeout", "hand_lrp0", "timeout", ""),
    "loop_at_import.py": ("while True:\n    pass\n", "timeout", "import", "timeout", ""),
    "loop_printing.py": (HEAD + "    while True:\n        print('still here')\n", "timeout", "hand_lrp0", "timeout", ""),
    "syntax_error.py": (HEAD + "    return a *\n", "import-error", "import", "import", ""),
    "missing_function.py": ("def epsilon(a, weight, bias, R, epsilon):\n    return a\n", "failed",
                            "function epsilon_dense", "missing", ""),
    "memory_hog.py": ("import numpy as np\n" + HEAD + "    return np.zeros((50000, 50000)) + 1\n", "failed",
                      "hand_lrp0", "exception", ""),
    "forbidden_library.py": ("from minilrp import Epsilon\n" + SOLUTION, "forbidden", "import", "forbidden", ""),
    "skeleton.py": (checker.skeleton_path("epsilon_dense").read_text(), "failed", "hand_lrp0", "not-implemented", ""),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    for name, (src, *_) in SUBMISSIONS.items():
        (folder / name).write_text(src)
    (folder / "notes.txt").write_text("not a submission")
    out = tmp_path_factory.mktemp("out") / "grades.csv"
    p = subprocess.run([sys.executable, "-m", "minilrp.check", "grade", "epsilon_dense", str(folder), "--out", str(out),
                        "--seed", str(SEED), "--timeout", "1", "--memory", "300", "--jobs", "2"],
                       capture_output=True, text=True, timeout=600)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    return folder, p, rows


@pytest.mark.slow
def test_thirty_mixed_submissions_give_the_expected_csv(graded):
    folder, p, rows = graded
    assert len(SUBMISSIONS) == 30
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and f"seed {SEED}" in p.stderr
    assert [r["file"] for r in rows] == sorted(SUBMISSIONS)  # one row per .py file, sorted, nothing else
    assert list(rows[0]) == grader.COLUMNS
    for r in rows:
        src, status, first, problem, mistake = SUBMISSIONS[r["file"]]
        got = (r["status"], r["first_failing_check"], r["problem"])
        assert got == (status, first, problem), (r["file"], got, r["detail"])
        assert r["seed"] == str(SEED)
        assert (mistake in r["mistakes"].split(";")) if mistake else True, (r["file"], r["mistakes"])
        if status == "passed":
            assert (r["score"], r["passed"], r["failed"]) == ("1.0", str(N_CHECKS), "0"), r
        else:
            assert float(r["score"]) < 1 and r["detail"], r
    by = {r["file"]: r for r in rows}
    assert by["syntax_error.py"]["detail"].startswith("could not import syntax_error.py: SyntaxError")
    assert "ran longer than 1 s" in by["loop_in_function.py"]["detail"]
    assert by["loop_in_function.py"]["checks"] == str(N_CHECKS)  # the checks not run count as failed
    assert "MemoryError" in by["memory_hog.py"]["detail"]
    assert "killed by signal SIGSEGV" in by["crash_segfault.py"]["detail"]
    assert "importing minilrp is not allowed" in by["forbidden_library.py"]["detail"]
    # a failure on the bundled model only would show in the score: the mistakes cost checks
    assert float(by["wrong_np_sign.py"]["score"]) > float(by["wrong_bias.py"]["score"])


@pytest.mark.slow
def test_json_rows_in_a_pipe(tmp_path):
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text(SOLUTION if name != "b.py" else sub("return a * c", "return c"))
    cmd = (f"{sys.executable} -m minilrp.check grade epsilon_dense {tmp_path} --json --seed {SEED} "
           f"--no-progress | head -1")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    first = json.loads(p.stdout)
    assert first["file"] == "a.py" and first["status"] == "passed" and first["seed"] == SEED


def test_grade_in_process_and_reports(tmp_path):
    """The library call: rows and full reports, one Exercise for all files."""
    for name in ("a_ok.py", "b_bad.py"):
        (tmp_path / name).write_text(SOLUTION if name == "a_ok.py" else sub("return a * c", "return c"))
    ex = checker.Exercise("epsilon_dense", SEED)
    reports = {}
    rows = grader.grade(ex, tmp_path, jobs=2, reports=reports)
    assert [r["status"] for r in rows] == ["passed", "failed"]
    assert reports["a_ok.py"].passed and reports["b_bad.py"].results[0].mistake == "no_input_factor"
    assert all(r["seed"] == SEED for r in rows)
    out = tmp_path / "g.csv"
    grader.write_csv(rows, out)
    assert out.read_text().splitlines()[0] == ",".join(grader.COLUMNS)


def test_grade_cli_errors(tmp_path):
    from minilrp import check as cli
    assert cli.main(["grade", "epsilon_dense", str(tmp_path)]) == 2  # no .py files
    assert cli.main(["grade", "epsilon_dense", str(tmp_path / "nope")]) == 2
    (tmp_path / "a.py").write_text("x = 1\n")
    assert cli.main(["grade", "epsilon_dense", str(tmp_path), "--out", str(tmp_path / "no" / "g.csv")]) == 2
