"""``python -m minilrp.check``: check a student's exercise (the checker is minilrp/teaching/checker.py).

    python -m minilrp.check --list                      the exercises
    python -m minilrp.check --skeleton NAME [-o FILE]   hand out a skeleton
    python -m minilrp.check NAME student_file.py        run every check, pass/fail each

Exit status: 0 when every check passed (checks needing a bundled model that is missing are
skipped), 1 when one failed, 2 for an unknown exercise or bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .teaching.checker import Exercise, available, run, skeleton_path


def _list() -> str:
    lines = ["exercises (python -m minilrp.check NAME student_file.py):"]
    for name in available():
        ex = Exercise(name)
        lines.append(f"  {name:<16} {ex.title}  [implement: {', '.join(f + '()' for f in ex.meta['functions'])}]")
    lines.append("a skeleton to start from: python -m minilrp.check --skeleton NAME -o my_file.py")
    return "\n".join(lines)


def _unknown(name) -> str:
    return f"unknown exercise {name!r}; available: {', '.join(available())}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m minilrp.check",
        description="Check an exercise solution against committed reference outputs.",
        epilog="exit status: 0 all checks passed, 1 a check failed, 2 unknown exercise or bad usage")
    p.add_argument("exercise", nargs="?", help="exercise name (see --list)")
    p.add_argument("student_file", nargs="?", help="your .py file")
    p.add_argument("--list", action="store_true", help="list the exercises")
    p.add_argument("--skeleton", metavar="NAME", help="print (or with -o write) the skeleton of an exercise")
    p.add_argument("-o", "--output", help="with --skeleton: write the skeleton to this file")
    p.add_argument("--json", action="store_true", help="print the report as JSON (for autograders)")
    args = p.parse_args(argv)
    if args.list:
        print(_list())
        return 0
    if args.skeleton:
        if args.skeleton not in available():
            print(_unknown(args.skeleton), file=sys.stderr)
            return 2
        text = skeleton_path(args.skeleton).read_text()
        if args.output:
            out = Path(args.output)
            if out.exists():
                print(f"{out} exists already: not overwritten", file=sys.stderr)
                return 2
            out.write_text(text)
            print(f"wrote the skeleton of {args.skeleton!r} to {out}; check it with: "
                  f"python -m minilrp.check {args.skeleton} {out}")
        else:
            print(text, end="")
        return 0
    if not args.exercise:
        p.print_usage(sys.stderr)
        print(_list(), file=sys.stderr)
        return 2
    if args.exercise not in available():
        print(_unknown(args.exercise), file=sys.stderr)
        return 2
    if not args.student_file:
        print(f"usage: python -m minilrp.check {args.exercise} student_file.py", file=sys.stderr)
        return 2
    report = run(args.exercise, args.student_file)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.text())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
