"""``python -m minilrp.check``: check a student's exercise, or grade a folder of them.

    python -m minilrp.check --list                        the exercises
    python -m minilrp.check --skeleton NAME [-o FILE]     hand out a skeleton
    python -m minilrp.check NAME student_file.py          every check, pass/fail each, as it runs
    python -m minilrp.check grade NAME DIR --out grades.csv    every DIR/*.py, in parallel

Options of both: ``--seed S`` (the random inputs; printed, so a result can be reproduced),
``--timeout SEC`` (per call of the student's function, default 5), ``--memory MB`` (default
1024), ``--json`` (for machines; a pipe may close early: ``--json | head`` is fine).

Exit status: 0 when every check passed (checks needing a bundled model that is missing are
skipped; for ``grade``: when grading finished), 1 when one failed, 2 for an unknown exercise
or bad usage. The checker is minilrp/teaching/checker.py, the grader teaching/grader.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .teaching import checker

USAGE_EPILOG = ("exit status: 0 all checks passed, 1 a check failed, 2 unknown exercise or bad usage; "
                "grade a folder: python -m minilrp.check grade NAME DIR --out grades.csv")


def _list() -> str:
    from .teaching.exercises import definition
    lines = ["exercises (python -m minilrp.check NAME student_file.py):"]
    for name in checker.available():
        d = definition(name)
        lines.append(f"  {name:<16} {d.TITLE}  [implement: {', '.join(f + '()' for f in d.FUNCTIONS)}]")
    lines.append("a skeleton to start from: python -m minilrp.check --skeleton NAME -o my_file.py")
    lines.append("grade a folder of submissions: python -m minilrp.check grade NAME DIR --out grades.csv")
    return "\n".join(lines)


def _unknown(name) -> str:
    return f"unknown exercise {name!r}; available: {', '.join(checker.available())}"


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return v
    return parse


def _common(p):
    p.add_argument("--seed", type=int, help="seed of the random inputs (default: a new one, printed)")
    p.add_argument("--timeout", type=_positive(float), default=checker.TIMEOUT,
                   help=f"seconds per call of the student's function (default {checker.TIMEOUT:g})")
    p.add_argument("--memory", type=_positive(int), default=checker.MEMORY_MB,
                   help=f"MB the student's code may allocate (default {checker.MEMORY_MB})")
    p.add_argument("--json", action="store_true", help="print JSON (for autograders)")


def _print(text="", end="\n"):
    sys.stdout.write(text + end)
    sys.stdout.flush()


def check_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m minilrp.check",
                                description="Check an exercise solution: committed checks worked by hand "
                                            "and fresh random ones, in a separate process.",
                                epilog=USAGE_EPILOG)
    p.add_argument("exercise", nargs="?", help="exercise name (see --list)")
    p.add_argument("student_file", nargs="?", help="your .py file")
    p.add_argument("--list", action="store_true", help="list the exercises")
    p.add_argument("--skeleton", metavar="NAME", help="print (or with -o write) the skeleton of an exercise")
    p.add_argument("-o", "--output", help="with --skeleton: write the skeleton to this file")
    _common(p)
    args = p.parse_args(argv)
    if args.list:
        _print(_list())
        return 0
    if args.skeleton:
        if args.skeleton not in checker.available():
            print(_unknown(args.skeleton), file=sys.stderr)
            return 2
        text = checker.skeleton_path(args.skeleton).read_text()
        if not args.output:
            _print(text, end="")
            return 0
        out = Path(args.output)
        if out.exists():
            print(f"{out} exists already: not overwritten", file=sys.stderr)
            return 2
        out.write_text(text)
        _print(f"wrote the skeleton of {args.skeleton!r} to {out}; check it with: "
               f"python -m minilrp.check {args.skeleton} {out}")
        return 0
    if not args.exercise:
        p.print_usage(sys.stderr)
        print(_list(), file=sys.stderr)
        return 2
    if args.exercise not in checker.available():
        print(_unknown(args.exercise), file=sys.stderr)
        return 2
    if not args.student_file:
        print(f"usage: python -m minilrp.check {args.exercise} student_file.py", file=sys.stderr)
        return 2
    ex = checker.Exercise(args.exercise, args.seed)
    if args.json:
        report = checker.check(ex, args.student_file, args.timeout, args.memory)
        _print(json.dumps(report.to_dict(), indent=1))
    else:
        # each verdict as its check finishes
        _print(checker.Report(ex.name, args.student_file, seed=ex.seed).header())
        width = max([len(c["id"]) for c in ex.cases] + [8])

        def show(result):
            text = result.text(width)
            if text:
                _print(text)

        report = checker.check(ex, args.student_file, args.timeout, args.memory, on_result=show)
        _print(report.footer())
    return 0 if report.passed else 1


def grade_main(argv) -> int:
    from .teaching import grader
    p = argparse.ArgumentParser(prog="python -m minilrp.check grade",
                                description="Grade every DIR/*.py against one exercise: each file in its own "
                                            "process with the time and memory limits, several at once; one "
                                            "row per file (score, first failing check, named mistakes, seed).")
    p.add_argument("exercise", help="exercise name (see python -m minilrp.check --list)")
    p.add_argument("folder", help="a folder of submissions, one .py file per student")
    p.add_argument("--out", help="write the rows as CSV to this file")
    p.add_argument("--jobs", type=_positive(int), help="submissions checked at once (default: the number of cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _common(p)
    args = p.parse_args(argv)
    if args.exercise not in checker.available():
        print(_unknown(args.exercise), file=sys.stderr)
        return 2
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"{folder}: not a folder", file=sys.stderr)
        return 2
    files = grader.submissions(folder)
    if not files:
        print(f"{folder}: no .py files to grade", file=sys.stderr)
        return 2
    if args.out and not Path(args.out).resolve().parent.is_dir():
        print(f"{args.out}: its folder does not exist", file=sys.stderr)
        return 2
    ex = checker.Exercise(args.exercise, args.seed)
    print(f"grading {len(files)} submissions of {ex.name!r}, seed {ex.seed}, {args.timeout:g} s per call",
          file=sys.stderr)
    rows = grader.grade(ex, folder, jobs=args.jobs, timeout=args.timeout, memory_mb=args.memory,
                        progress=not args.no_progress)
    if args.out:
        try:
            grader.write_csv(rows, args.out)
        except OSError as e:
            print(f"{args.out}: cannot write the grades ({e.strerror or e})", file=sys.stderr)
            return 2
        print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    if args.json:
        for r in rows:  # one JSON object per line: a pipe can stop reading at any row
            _print(json.dumps(r))
    elif not args.out:
        for r in rows:
            _print(f"{r['file']:<30} {r['score']:6.2f}  {r['status']:<12} {r['first_failing_check']:<16} {r['mistakes']}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return grade_main(argv[1:]) if argv[:1] == ["grade"] else check_main(argv)
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, no traceback at exit either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
