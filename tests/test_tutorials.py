"""The tutorials run top to bottom, and their notebooks match their sources.

Each tutorial's percent-format source ``tutorials/NN_name.py`` runs in a subprocess with
plain Python and the headless Agg backend (no Jupyter needed); ``tutorials/NN_name.ipynb``
(built by tools/build_tutorials.py) must hold exactly the source's code cells.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minilrp import available_models

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9]*.py"))
TIMEOUT = 300  # seconds per tutorial; each takes well under a minute on 2 idle cores
NEEDED = {"fmnist-cnn", "fmnist-mlp"}


def code_cells_py(path):
    """The code cells of a percent-format source: text between ``# %%`` markers (markdown
    cells and the jupytext header left out), blank lines at either end stripped."""
    lines = Path(path).read_text().splitlines()
    if lines and lines[0] == "# ---":
        end = lines.index("# ---", 1)
        lines = lines[end + 1:]
    cells, kind, current = [], None, []
    for line in lines + ["# %% end"]:
        if line.startswith("# %%"):
            if kind == "code":
                cells.append("\n".join(current).strip("\n"))
            kind = "markdown" if "[markdown]" in line else "code"
            current = []
        else:
            current.append(line)
    return [c for c in cells if c.strip()]


def code_cells_ipynb(path):
    nb = json.loads(Path(path).read_text())
    assert nb["nbformat"] == 4
    cells = []
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            cells.append(src.strip("\n"))
    return [c for c in cells if c.strip()]


def test_there_are_five_tutorials():
    assert [p.name[:2] for p in TUTORIALS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("src", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_notebook_in_sync_with_source(src):
    nb = src.with_suffix(".ipynb")
    assert nb.exists(), f"{nb.name} missing: run tools/build_tutorials.py"
    py, ipynb = code_cells_py(src), code_cells_ipynb(nb)
    assert len(py) == len(ipynb), f"{src.name}: {len(py)} code cells, {nb.name}: {len(ipynb)}; rebuild"
    for i, (a, b) in enumerate(zip(py, ipynb)):
        assert a == b, f"code cell {i} differs between {src.name} and {nb.name}: run tools/build_tutorials.py"
    data = json.loads(nb.read_text())
    assert data["metadata"]["kernelspec"]["name"] == "python3"
    outputs = [o for c in data["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs, f"{nb.name} was committed without outputs: build it executed"
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{nb.name} has an error output"
    assert nb.stat().st_size < 600_000, f"{nb.name} is {nb.stat().st_size} bytes: keep figures small"


def run_tutorial(src, tmp_path, extra_code=""):
    if not NEEDED <= set(available_models()):
        pytest.skip(f"the bundled models {sorted(NEEDED)} are not installed")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore::DeprecationWarning")
    code = f"import runpy, sys\n{extra_code}\nrunpy.run_path({str(src)!r}, run_name='__main__')\n"
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert p.returncode == 0, f"{src.name} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("src", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(src, tmp_path):
    out = run_tutorial(src, tmp_path)
    assert out.strip()


@pytest.mark.slow
def test_byo_model_tutorial_without_torch(tmp_path):
    """Tutorial 5 is skipped gracefully (a NumPy fallback) when PyTorch is not installed."""
    src = next(p for p in TUTORIALS if p.name.startswith("05"))
    out = run_tutorial(src, tmp_path, extra_code="sys.modules['torch'] = None  # import torch -> ImportError")
    assert "PyTorch is not installed" in out
