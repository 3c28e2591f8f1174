"""The size budget (README, "Size budget"): the readable core stays small enough to read in an
afternoon, each reference rule fits on one screen, and the fast path and the kernels have their
own budgets. Code lines: no blank lines, comments or docstrings."""
import ast
import inspect
import io
import textwrap
import tokenize
from pathlib import Path

import pytest

import minilrp
from minilrp.explain import rules

PACKAGE = Path(minilrp.__file__).parent
CORE = ["engine/layers.py", "engine/network.py", "explain/rules.py", "explain/composites.py",
        "explain/ledger.py", "explain/sensitivity.py"]
BUDGETS = {  # part: (files, code lines at most)
    "readable core": (CORE, 1000),
    "fast path": (sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "fast").glob("*.py")), 550),
    "engine kernels": (["engine/kernels.py"], 310),  # 300 until the element-wise pieces and the GEMM layout choice
}
RULE_LINES = 25  # a reference rule's relevance method, at most


def code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docstrings)
    return len(lines)


def test_code_lines_counts_code_only():
    src = '"""doc\nstring"""\n\n# comment\ndef f(x):\n    """doc"""\n    y = (x +\n         1)  # why\n    return y\n'
    assert code_lines(src) == 4  # def, the two lines of the expression, return


@pytest.mark.parametrize("part", BUDGETS)
def test_size_budget(part):
    files, budget = BUDGETS[part]
    counts = {f: code_lines((PACKAGE / f).read_text()) for f in files}
    total = sum(counts.values())
    assert total <= budget, f"{part}: {total} code lines, budget {budget}: {counts}"


@pytest.mark.parametrize("name", ["Epsilon", "Gamma", "AlphaBeta", "ZBox", "WSquare", "Flat", "WinnerTakeAll",
                                  "Proportional"])
def test_each_reference_rule_fits_on_one_screen(name):
    n = code_lines(textwrap.dedent(inspect.getsource(getattr(rules, name).relevance)))
    assert n <= RULE_LINES, f"{name}.relevance has {n} code lines (at most {RULE_LINES})"
