#!/usr/bin/env python
"""Regenerate the committed worked-by-hand checks of the course exercises.

    .venv/bin/python tools/make_exercise_references.py              # every exercise
    .venv/bin/python tools/make_exercise_references.py sa aopc      # some
    .venv/bin/python tools/make_exercise_references.py --check      # compare, write nothing

Writes ``minilrp/teaching/exercises/<name>.npz`` from each exercise module's ``committed(book)``
(minilrp/teaching/exercises/<name>.py): the small checks worked by hand, their inputs, the
right outputs (from minilrp's reference path) and the outputs of the typical mistakes. The
random checks are not stored: the checker draws them at check time (``fresh(book, rng)``).

Rerun after changing a convention of the engine (``tests/test_check.py`` fails until then).
To add an exercise, see docs/instructors.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from minilrp.teaching.cases import CaseBook  # noqa: E402
from minilrp.teaching.checker import reference_path  # noqa: E402
from minilrp.teaching.exercises import EXERCISES, definition  # noqa: E402


def build(name) -> CaseBook:
    module = definition(name)
    book = CaseBook(name, module.HINTS)
    module.committed(book)
    return book


def same_as_committed(book) -> bool:
    path = reference_path(book.exercise)
    if not path.exists():
        return False
    try:
        old = CaseBook.load(path, book.exercise, book.hints)
    except ValueError:
        return False
    return old.same_as(book)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"exercises (default all): {', '.join(EXERCISES)}")
    p.add_argument("--check", action="store_true",
                   help="rebuild in memory and compare with the committed files; write nothing")
    args = p.parse_args(argv)
    names = args.names or list(EXERCISES)
    bad = [n for n in names if n not in EXERCISES]
    if bad:
        p.error(f"unknown exercise(s) {bad}; known: {', '.join(EXERCISES)}")
    stale = []
    for name in names:
        book = build(name)
        if args.check:
            if not same_as_committed(book):
                stale.append(name)
            continue
        data = book.to_bytes()
        reference_path(name).write_bytes(data)
        print(f"{name}: wrote {reference_path(name).relative_to(REPO)}: {len(book.cases)} checks, "
              f"{len(data) / 1024:.1f} KB")
    if args.check:
        print("stale: " + ", ".join(stale) if stale else "all references up to date")
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
