"""The README's examples run: its Python code blocks, in order, in one fresh interpreter, and its
``python -m minilrp.check`` command lines."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_readme_has_examples():
    assert len(blocks("python")) >= 2
    assert any("python -m minilrp.check" in b for b in blocks("bash"))


@pytest.mark.slow
def test_python_blocks_run(tmp_path):
    code = "\n\n".join(blocks("python"))
    env = dict(os.environ, MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, f"a README example failed:\n{p.stderr[-3000:]}"
    assert "mean" in p.stdout  # the AOPC summary printed by the first block


@pytest.mark.slow
def test_check_command_lines_run(tmp_path):
    """Every ``python -m minilrp.check`` line of the README, in order, in an empty folder (with a
    ``submissions/`` folder for the grading example): exit 0 or 1 (a skeleton fails its checks),
    never a traceback."""
    lines = [line.split("#")[0].strip() for b in blocks("bash") for line in b.splitlines()
             if line.startswith("python -m minilrp.check")]
    assert len(lines) >= 4
    (tmp_path / "submissions").mkdir()
    (tmp_path / "submissions" / "alice.py").write_text("def epsilon_dense(a, weight, bias, R, epsilon):\n    return a\n")
    for line in lines:
        args = shlex.split(line)[1:]  # without "python"
        p = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert p.returncode in (0, 1), f"{line}: exit {p.returncode}\n{p.stderr[-2000:]}"
        assert "Traceback" not in p.stdout + p.stderr, line
    assert (tmp_path / "my_epsilon.py").exists() and (tmp_path / "grades.csv").exists()
