#!/usr/bin/env python
"""How long the batch grader takes for a class: N submissions of one exercise.

    .venv/bin/python benchmarks/grade_submissions.py                       # 100 x epsilon_dense
    .venv/bin/python benchmarks/grade_submissions.py --exercise sa --n 100 --jobs 2

Writes N submissions into a temporary folder, a realistic mix built from the reference
solution in tests/exercise_solutions/: 60% correct, 30% with one typical mistake (each broken
variant of tests/test_check.py in turn), 5% raising an exception, 3% syntax errors and 2%
endless loops (each costs the full time limit), then times ``python -m minilrp.check grade``
(the real command, a fresh process: its start-up and the fresh checks' construction count)
and prints the wall time, the time per submission and the grades' status counts.
The target (issue 14): 100 submissions in under 2 minutes on a 2-core machine.
"""
from __future__ import annotations

import argparse
import collections
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def make_class(folder, exercise, n):
    from test_check import BROKEN, broken_source
    solution = (ROOT / "tests" / "exercise_solutions" / f"{exercise}.py").read_text()
    broken = [subs for (e, _), subs in BROKEN.items() if e == exercise]
    first = solution.split("def ", 1)[1].split("(", 1)[0]
    kinds = (["correct"] * 60 + ["broken"] * 30 + ["raises"] * 5 + ["syntax"] * 3 + ["loop"] * 2)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "correct":
            src = solution
        elif kind == "broken":
            src = broken_source(exercise, broken[i % len(broken)])
        elif kind == "raises":
            src = solution.replace(f"def {first}(", f"def {first}(*_a):\n    raise ValueError('x')\ndef _old(", 1)
        elif kind == "syntax":
            src = solution + "\ndef oops(:\n"
        else:
            src = solution.replace(f"def {first}(", f"def {first}(*_a):\n    while True:\n        pass\ndef _old(", 1)
        (folder / f"student_{i:03d}_{kind}.py").write_text(src)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exercise", default="epsilon_dense")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--jobs", type=int, default=None, help="default: the number of cores")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "class"
        folder.mkdir()
        make_class(folder, args.exercise, args.n)
        out = Path(tmp) / "grades.csv"
        cmd = [sys.executable, "-m", "minilrp.check", "grade", args.exercise, str(folder), "--out", str(out),
               "--seed", str(args.seed), "--timeout", str(args.timeout), "--no-progress"]
        if args.jobs:
            cmd += ["--jobs", str(args.jobs)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
    counts = collections.Counter(r["status"] for r in rows)
    print(f"{args.n} submissions of {args.exercise!r} graded in {wall:.1f} s "
          f"({wall / args.n:.2f} s per submission, jobs={args.jobs or 'all cores'}, timeout {args.timeout:g} s)")
    print("statuses:", dict(sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
