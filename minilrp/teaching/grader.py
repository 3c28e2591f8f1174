"""Grade a folder of submissions of one exercise: every file in its own process, in parallel.

    rows = grade("epsilon_dense", "submissions/", jobs=2)      # one dict per file
    write_csv(rows, "grades.csv")

One :class:`~minilrp.teaching.checker.Exercise` (one seed: every student gets the same fresh
inputs, and the right outputs are computed once) serves all submissions, and one zygote
process (teaching/sandbox.py) forks every student's process from its set-up state; a thread
per worker drives one student process at a time, so ``jobs`` files run at once on as many
cores. A file that crashes, loops, prints, exhausts its memory or does not import
gets its row like any other; the grader itself never stops for a submission.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .checker import MEMORY_MB, TIMEOUT, Exercise, Report, Result, check
from .sandbox import Zygote

COLUMNS = ["file", "score", "passed", "failed", "checks", "status", "first_failing_check", "problem",
           "mistakes", "detail", "seed", "seconds"]


def submissions(folder) -> list[Path]:
    """The ``*.py`` files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).glob("*.py") if p.is_file())


def status(report: Report) -> str:
    """passed / failed / import-error / timeout / died / forbidden (the first that applies)."""
    problems = [r.problem for r in report.results if r.status == "fail"]
    if not problems:
        return "passed"
    if any(r.id == "import" for r in report.results):
        return {"timeout": "timeout", "died": "died", "forbidden": "forbidden"}.get(problems[0], "import-error")
    for p in ("timeout", "died", "forbidden"):
        if p in problems:
            return p
    return "failed"


def row(report: Report, path, seconds) -> dict:
    """One CSV row: the score, the first failing check with its first line, every named mistake."""
    c = report.counts()
    fails = [r for r in report.results if r.status == "fail" and r.problem != "not-run"]
    first = fails[0] if fails else None
    mistakes = []
    for r in fails:
        mistakes += [m for m in r.mistakes if m not in mistakes]
    return {"file": Path(path).name, "score": round(report.score, 4), "passed": c["pass"], "failed": c["fail"],
            "checks": c["pass"] + c["fail"], "status": status(report),
            "first_failing_check": first.id if first else "", "problem": first.problem or "" if first else "",
            "mistakes": ";".join(mistakes), "detail": (first.lines[0] if first and first.lines else "")[:300],
            "seed": report.seed, "seconds": round(seconds, 2)}


def _one(ex, path, timeout, memory_mb, zygote):
    start = time.perf_counter()
    try:
        report = check(ex, path, timeout, memory_mb, zygote=zygote)
    except Exception as e:  # noqa: BLE001 - a checker bug must not stop the class's grading
        report = Report(ex.name, str(path), seed=ex.seed, timeout=timeout)
        report.results.append(Result("internal", "the checker ran", "fail",
                                     [f"internal error of the checker: {type(e).__name__}: {e}"], problem="internal"))
    return report, time.perf_counter() - start


def grade(exercise, folder, jobs=None, seed=None, timeout=TIMEOUT, memory_mb=MEMORY_MB, progress=False,
          reports=None) -> list[dict]:
    """Rows (sorted by file name) for every submission in ``folder``. exercise: a name or an
    Exercise; jobs: parallel student processes (default: the number of cores); progress: a
    bar on stderr; reports: a dict to receive {file name: Report}."""
    ex = exercise if isinstance(exercise, Exercise) else Exercise(exercise, seed)
    files = submissions(folder)
    jobs = max(1, jobs or os.cpu_count() or 1)
    from tqdm import tqdm
    bar = tqdm(total=len(files), disable=not progress, unit="submission", file=sys.stderr)
    out = {}
    with Zygote(ex.policy, ex.name) as zygote, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_one, ex, f, timeout, memory_mb, zygote): f for f in files}
        for fut in as_completed(futures):
            path = futures[fut]
            report, seconds = fut.result()
            out[path.name] = (report, seconds)
            bar.set_postfix_str(path.name)
            bar.update(1)
    bar.close()
    if reports is not None:
        reports.update({name: r for name, (r, _) in out.items()})
    return [row(out[f.name][0], f, out[f.name][1]) for f in files]


def write_csv(rows, path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
