#!/usr/bin/env python
"""Build the tutorial notebooks from their percent-format sources, executed, with outputs.

    .venv/bin/python tools/build_tutorials.py                  # every tutorials/*.py
    .venv/bin/python tools/build_tutorials.py 03_lrp_rules     # one
    .venv/bin/python tools/build_tutorials.py --check          # sources and notebooks in sync?

The ``.py`` files in ``tutorials/`` are the source of truth (jupytext's percent format: cells
start with ``# %%``; edit them in any editor, or in Jupyter with jupytext installed, which
pairs them with the notebooks). This tool converts each one to a notebook with jupytext,
executes it with nbclient in a fresh Python kernel (the inline matplotlib backend, in a
temporary working directory) and writes ``tutorials/<name>.ipynb`` with its outputs, so the
notebooks read well online and open in plain Jupyter.

Needs, in the environment that runs it only (not test or runtime dependencies of minilrp):

    pip install jupytext nbformat nbclient ipykernel

``tests/test_tutorials.py`` runs the ``.py`` sources with plain Python (no Jupyter) and checks
that every notebook's code cells equal its source's; rebuild after editing a source.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TUTORIALS = REPO / "tutorials"
MAX_OUTPUT_BYTES = 500_000  # outputs beyond this (five readable 100-dpi figures are ~450 KB) mean a runaway cell


def build(src: Path, execute=True, timeout=600) -> Path:
    import jupytext
    import nbformat

    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    if execute:
        from nbclient import NotebookClient

        env_backend = os.environ.pop("MPLBACKEND", None)  # the kernel must use the inline backend
        try:
            with tempfile.TemporaryDirectory() as cwd:
                NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                               resources={"metadata": {"path": cwd}}).execute()
        finally:
            if env_backend is not None:
                os.environ["MPLBACKEND"] = env_backend
        size = sum(len(str(o)) for c in nb.cells for o in c.get("outputs", []))
        if size > MAX_OUTPUT_BYTES:
            raise SystemExit(f"{src.name}: {size} bytes of outputs (limit {MAX_OUTPUT_BYTES}): "
                             "make the figures smaller or fewer")
    for cell in nb.cells:  # no per-run noise in the committed file
        cell.metadata.pop("execution", None)
        if cell.get("outputs"):
            cell.outputs = merge_streams(cell.outputs)
    out = src.with_suffix(".ipynb")
    nbformat.write(nb, out)
    return out


def merge_streams(outputs):
    """Consecutive stream outputs of one name joined, each line reduced to what a terminal shows
    after its carriage returns (a progress bar's last state), as Jupyter displays them."""
    import nbformat
    merged = []
    for out in outputs:
        if out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream" \
                and merged[-1].get("name") == out.get("name"):
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
            out["text"] = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    return [nbformat.from_dict(o) for o in merged]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="tutorial names (default: every tutorials/*.py)")
    p.add_argument("--no-execute", action="store_true", help="convert only (no outputs)")
    p.add_argument("--check", action="store_true", help="only check that sources and notebooks are in sync")
    args = p.parse_args(argv)
    sources = sorted(TUTORIALS.glob("[0-9]*.py"))
    if args.names:
        sources = [s for s in sources if s.stem in args.names or s.name in args.names]
        missing = set(args.names) - {s.stem for s in sources} - {s.name for s in sources}
        if missing:
            p.error(f"no tutorial named {sorted(missing)}")
    if args.check:
        sys.path.insert(0, str(REPO / "tests"))
        from test_tutorials import code_cells_ipynb, code_cells_py
        bad = [s.name for s in sources if not s.with_suffix(".ipynb").exists() or
               code_cells_py(s) != code_cells_ipynb(s.with_suffix(".ipynb"))]
        print("out of sync: " + ", ".join(bad) if bad else "all notebooks in sync with their sources")
        return 1 if bad else 0
    for src in sources:
        t = time.perf_counter()
        out = build(src, execute=not args.no_execute)
        print(f"{out.relative_to(REPO)}: {out.stat().st_size / 1024:.0f} KB, {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
