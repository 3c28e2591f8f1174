"""Check a student's exercise: committed and freshly drawn inputs, the student's code in its own
process, one verdict per check as it finishes.

    report = run("epsilon_dense", "my_epsilon.py")            # seed drawn and printed
    report = run("epsilon_dense", "my_epsilon.py", seed=1234)  # the same inputs again

An :class:`Exercise` holds the checks: the worked-by-hand ones committed in
``exercises/<name>.npz``, and fresh ones (random layers, networks, inputs, crops of the
bundled models' activations) drawn from ``seed`` when it is built, with their right outputs
computed then by minilrp's reference path (exercises/shared.py) and the outputs of the typical
mistakes beside them. A file of answers looked up from committed data cannot pass.

:func:`check` runs a student's file against an Exercise in a separate process
(teaching/sandbox.py: the forbidden parts of minilrp blocked, a memory limit, a time limit per
call enforced from outside), compares each output here (teaching/compare.py) and reports
every check as it finishes. The first timeout ends the exercise; a process that dies is
reported and replaced for the checks that follow.
"""
from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cases import CaseBook
from .compare import compare
from .exercises import EXERCISES, definition
from .sandbox import StudentProcess, Zygote

TIMEOUT = 5.0  # seconds per call of the student's function (and for importing the file)
MEMORY_MB = 1024  # address space the student's code may add to its process
MAX_DEATHS = 3  # processes a file may kill before its remaining checks are not run


# ======================================================================================
# Exercises
# ======================================================================================
def _folder() -> Path:
    return Path(__file__).resolve().parent / "exercises"


def available() -> list[str]:
    """Names of the exercises."""
    return list(EXERCISES)


def skeleton_path(name: str) -> Path:
    return _folder() / "skeletons" / f"{name}.py"


def reference_path(name: str) -> Path:
    return _folder() / f"{name}.npz"


def new_seed() -> int:
    """A fresh seed for the random checks (six digits: easy to retype)."""
    return 100_000 + secrets.randbelow(900_000)


def keyed_rng(seed, exercise):
    """rng(case id) -> a Generator keyed by (seed, exercise, case id): a check's inputs do not
    depend on which other checks exist."""
    def rng(cid):
        return np.random.default_rng([int(seed), zlib.crc32(exercise.encode()), zlib.crc32(cid.encode())])
    return rng


class Exercise:
    """One exercise's checks: the committed ones, then fresh ones drawn from ``seed`` (a new
    one when None). Read-only once built: one Exercise serves any number of students."""

    def __init__(self, name: str, seed=None):
        self.name = name
        self.module = definition(name)
        self.seed = new_seed() if seed is None else int(seed)
        self.book = CaseBook.load(reference_path(name), name, self.hints)
        fresh = CaseBook(name, self.hints)
        self.module.fresh(fresh, keyed_rng(self.seed, name))
        self.book.extend(fresh)

    @property
    def title(self) -> str:
        return self.module.TITLE

    @property
    def functions(self) -> list:
        return list(self.module.FUNCTIONS)

    @property
    def hints(self) -> dict:
        return self.module.HINTS

    @property
    def policy(self) -> dict:
        return self.module.POLICY

    @property
    def cases(self) -> list:
        return self.book.cases

    def calls(self, case):
        """The calls of a case, each a dict: label and layer (for a chain's steps, else "" and
        None), names and values of the arguments, expected output, {mistake: its output}."""
        steps = [case] if case["kind"] == "call" else case["layers"]
        out = []
        for step in steps:
            names, values = self.book.resolve(step["args"])
            out.append({"label": step.get("label", ""), "layer": step.get("layer"), "names": names,
                        "values": values, "expected": self.book.arrays[step["expected"]],
                        "mistakes": {m: self.book.arrays[k] for m, k in step["mistakes"].items()}})
        return out


# ======================================================================================
# Results
# ======================================================================================
@dataclass
class Result:
    id: str
    title: str
    status: str  # "pass", "fail", "skip"
    lines: list = field(default_factory=list)  # details, printed under the check
    mistakes: list = field(default_factory=list)  # named mistakes the output matches
    problem: str | None = None  # kind of failure: "import", "missing", "not-implemented",
    # "exception", "forbidden", "type", "dtype", "shape", "nan", "values", "precision",
    # "mutated", "timeout", "died", "not-run", "internal"
    seconds: float | None = None  # the student's function's time (sum over a chain's calls)

    @property
    def mistake(self):
        """The first named mistake recognised, or None."""
        return self.mistakes[0] if self.mistakes else None

    def text(self, width=8) -> str:
        if self.problem == "not-run":
            return ""  # said once, by the check that ended the exercise
        out = [f"  [{self.status.upper()}] {self.id:<{width}}  {self.title}"]
        out.extend(f"         {line}" for line in self.lines)
        return "\n".join(out)


@dataclass
class Report:
    exercise: str
    student: str
    seed: int | None = None
    timeout: float | None = None
    results: list = field(default_factory=list)
    width: int = 8

    @property
    def passed(self) -> bool:
        return bool(self.results) and not any(r.status == "fail" for r in self.results)

    def counts(self):
        return {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}

    @property
    def score(self) -> float:
        """Share of the checks that ran or should have (skips left out) that passed."""
        c = self.counts()
        return c["pass"] / max(1, c["pass"] + c["fail"])

    def header(self) -> str:
        seed = (f", seed {self.seed} (--seed {self.seed} draws the same random inputs again)"
                if self.seed is not None else "")
        return f"minilrp.check: exercise {self.exercise!r}, student file {self.student}{seed}"

    def footer(self) -> str:
        c = self.counts()
        verdict = "ALL PASSED" if self.passed else "NOT YET"
        return (f"{sum(c.values())} checks: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped"
                f"  -> {verdict}")

    def text(self) -> str:
        body = [r.text(self.width) for r in self.results]
        return "\n".join([self.header(), *[b for b in body if b], self.footer()])

    def to_dict(self):
        return {"exercise": self.exercise, "student": self.student, "seed": self.seed,
                "timeout": self.timeout, "passed": self.passed, "score": round(self.score, 4),
                "counts": self.counts(),
                "results": [{"id": r.id, "title": r.title, "status": r.status, "problem": r.problem,
                             "mistakes": r.mistakes, "details": r.lines,
                             "seconds": None if r.seconds is None else round(r.seconds, 4)}
                            for r in self.results]}


# ======================================================================================
# Running the checks
# ======================================================================================
class _Session:
    """The student's process for one file, restarted after a death (up to MAX_DEATHS)."""

    def __init__(self, ex, path, timeout, memory_mb, zygote):
        self.ex, self.path, self.timeout, self.memory_mb, self.zygote = ex, path, timeout, memory_mb, zygote
        self.proc, self.deaths, self.functions = None, 0, None

    def open(self):
        """Start a process and import the file: None, or (problem, message)."""
        self.close()
        calls = sum(len(c.get("layers", [c])) for c in self.ex.cases) + 2  # and import, inspect
        self.proc = StudentProcess(self.zygote, self.path, self.memory_mb, cpu_seconds=calls * self.timeout + 60)
        if self.proc.started.get("status") != "ready":
            return "internal", f"the checker's process did not start: {self.proc.started.get('message', '')}"
        reply = self.proc.request({"op": "import"}, self.timeout)
        name = Path(self.path).name
        status = reply["status"]
        if status == "ok":
            info = self.proc.request({"op": "inspect", "functions": self.ex.functions}, self.timeout)
            self.functions = info if info.get("status") == "ok" else {"callable": {}, "defined": []}
            return None
        if status == "timeout":
            return "timeout", f"could not import {name}: importing took longer than {self.timeout:g} s (--timeout)"
        if status == "died":
            return "died", f"could not import {name}: the process running it died ({reply['message']})"
        message = reply.get("message", "")
        if message.startswith("SyntaxError") and "(" not in message:
            message += f" ({name})"
        return ("forbidden" if status == "forbidden" else "import"), f"could not import {name}: {message}"

    def call(self, function, names, values):
        if self.proc is None or not self.proc.alive:
            problem = self.open()
            if problem:
                return {"status": "died", "message": problem[1]}
        return self.proc.request({"op": "call", "function": function, "names": names, "args": values},
                                 self.timeout)

    def close(self):
        if self.proc is not None:
            self.proc.close()


def _error_lines(reply, function, timeout, memory_mb):
    """A reply other than "ok" -> (problem, lines)."""
    status, message = reply["status"], reply.get("message", "")
    if status == "timeout":
        return "timeout", [f"{function} ran longer than {timeout:g} s (an endless loop?); the process "
                           "was stopped (--timeout sets the limit)"]
    if status == "died":
        return "died", [f"the process running {function} died: {message}"]
    if status == "not-implemented":
        return "not-implemented", [f"{function} is not implemented yet: it raises {message} (the "
                                   "skeleton's placeholder)"]
    if status == "forbidden":
        return "forbidden", [message]
    if status == "missing":
        return "missing", [f"{function} is not defined"]
    extra = (f" (the process may use {memory_mb} MB more than its start-up: --memory)"
             if "MemoryError" in message else "")
    return "exception", [f"{function} raised {message}{extra}"]


def _printed(reply):
    p = reply.get("printed") or {}
    if not p.get("count"):
        return []
    return [f"(your function printed {p['count']} line(s); first: {p['first'][0][:100]!r})"] if p["first"] else []


def _run_case(ex, case, session, only_here):
    """-> (problem, lines, mistakes, seconds); problem None when the check passed."""
    fn, output = case["function"], case.get("output", "output")
    matched_layers, seconds = [], 0.0
    for step in ex.calls(case):
        reply = session.call(fn, step["names"], step["values"])
        seconds += reply.get("seconds") or 0.0
        at = f"at {step['label']}: " if step["label"] else ""
        if reply["status"] != "ok":
            problem, lines = _error_lines(reply, fn, session.timeout, session.memory_mb)
            return problem, [at + lines[0]] + lines[1:] + _printed(reply), [], seconds
        res = compare(reply["value"], step["expected"], output, case, step["mistakes"], ex.hints,
                      ex.module.USUAL_CAUSES, label=step["label"], only_here=only_here)
        if res is None and reply.get("mutated"):
            res = ("mutated", [f"{fn} modified its input {reply['mutated']!r} in place: inputs must stay "
                               "untouched (in the engine they are the network's forward caches)"], [])
        if res is None:
            matched_layers.append(str(step["layer"]))
            continue
        problem, lines, matched = res
        if step["layer"] is not None:  # a chain: say how far it got
            ok = f"layers {', '.join(matched_layers)} matched; " if matched_layers else ""
            if problem not in ("values", "precision"):  # compare's own lines name the layer
                lines = [at + lines[0]] + lines[1:]
            lines = [f"{ok}the first layer that diverges (walking back from the output) is layer "
                     f"{step['layer']}"] + lines
        return problem, lines + _printed(reply), matched, seconds
    return None, [], [], seconds


def check(ex: Exercise, student_file, timeout=TIMEOUT, memory_mb=MEMORY_MB, on_result=None, zygote=None) -> Report:
    """Run every check of ``ex`` on ``student_file``; ``on_result(result)`` is called as each
    check finishes. zygote: a :class:`~minilrp.teaching.sandbox.Zygote` for ``ex.policy`` to
    fork the student's process from (the grader shares one; default: one for this call).
    Never raises for anything the student's file does."""
    report = Report(ex.name, str(student_file), seed=ex.seed, timeout=timeout,
                    width=max([len(c["id"]) for c in ex.cases] + [8]))

    def emit(result):
        report.results.append(result)
        if on_result is not None:
            on_result(result)
        return result

    path = Path(student_file)
    if not path.exists() or path.is_dir() or path.suffix != ".py":
        why = "no such file" if not path.exists() else "not a Python file (.py)"
        emit(Result("import", "the file imports", "fail", [f"{path}: {why}"], problem="import"))
        return report
    own = zygote is None
    try:
        zygote = Zygote(ex.policy, ex.name) if own else zygote
    except RuntimeError as e:
        emit(Result("setup", "the checker's process starts", "fail", [str(e)], problem="internal"))
        return report
    session = _Session(ex, str(path), timeout, memory_mb, zygote)
    try:
        problem = session.open()
        if problem:
            emit(Result("import", "the file imports", "fail", [problem[1]], problem=problem[0]))
            return report
        callable_ = session.functions["callable"]
        missing = [f for f in ex.functions if not callable_.get(f)]
        for f in missing:
            defined = session.functions["defined"]
            emit(Result(f"function {f}", f"the file defines {f}()", "fail",
                        [f"{path.name} has no function {f!r}" + (f" (it defines: {', '.join(defined)})" if defined else "")
                         + f"; the skeleton's signature is in {skeleton_path(ex.name).name}"], problem="missing"))
        not_implemented, ended = set(), None
        for case in ex.cases:
            fn = case["function"]
            if ended:
                emit(Result(case["id"], case["title"], "fail", [ended], problem="not-run"))
                continue
            if fn in missing:
                emit(Result(case["id"], case["title"], "skip", [f"needs {fn}()"]))
                continue
            if fn in not_implemented:
                emit(Result(case["id"], case["title"], "fail", [f"{fn} is not implemented yet (see above)"],
                            problem="not-implemented"))
                continue
            earlier = [r for r in report.results if r.status != "skip" and
                       any(c["id"] == r.id and c["function"] == fn for c in ex.cases)]
            only_here = bool(earlier) and all(r.status == "pass" for r in earlier)
            problem, lines, mistakes, seconds = _run_case(ex, case, session, only_here)
            if problem is None:
                emit(Result(case["id"], case["title"], "pass", seconds=seconds))
                continue
            if problem == "not-implemented":
                not_implemented.add(fn)
            session.deaths += problem == "died"
            if problem == "timeout" or session.deaths >= MAX_DEATHS:
                why = "the first timeout" if problem == "timeout" else f"dying {MAX_DEATHS} times"
                ended = f"not run: {why} ended the exercise"
                rest = len(ex.cases) - ex.cases.index(case) - 1
                if rest:
                    lines = lines + [f"{why} ends the exercise: the remaining {rest} check(s) were not run"]
            emit(Result(case["id"], case["title"], "fail", lines, mistakes, problem, seconds))
    finally:
        session.close()
        if own:
            zygote.close()
    return report


def run(exercise: str, student_file, seed=None, timeout=TIMEOUT, memory_mb=MEMORY_MB, on_result=None) -> Report:
    """Build ``exercise`` with ``seed`` (new when None) and check ``student_file``."""
    return check(Exercise(exercise, seed), student_file, timeout, memory_mb, on_result)
