#!/usr/bin/env python
"""Save every figure a tutorial shows as a PNG, to look at them without Jupyter.

    .venv/bin/python tools/tutorial_figures.py                     # every tutorial -> tutorial-figures/
    .venv/bin/python tools/tutorial_figures.py 03_lrp_rules --out /tmp/figs

Runs each percent-format source in ``tutorials/`` with plain Python and the headless Agg backend;
every ``plt.show()`` saves the open figures as ``<out>/<tutorial>-<n>.png`` at the figure's own
dpi (what the notebook shows inline) instead of showing them. The run happens in a temporary
working directory, as in tests/test_tutorials.py.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def render(src: Path, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    saved = []

    def show(*args, **kwargs):
        for num in plt.get_fignums():
            fig = plt.figure(num)
            path = out / f"{src.stem}-{len(saved) + 1:02d}.png"
            fig.savefig(path, dpi=fig.dpi)
            saved.append(path)
        plt.close("all")

    old_show, old_cwd = plt.show, os.getcwd()
    plt.show = show
    try:
        with tempfile.TemporaryDirectory() as cwd:
            os.chdir(cwd)
            runpy.run_path(str(src), run_name="__main__")
    finally:
        os.chdir(old_cwd)
        plt.show = old_show
        plt.close("all")
        plt.rcdefaults()
    return saved


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="tutorial names (default: every tutorials/*.py)")
    p.add_argument("--out", default="tutorial-figures", help="folder for the PNGs (default: tutorial-figures)")
    args = p.parse_args(argv)
    sources = sorted((REPO / "tutorials").glob("[0-9]*.py"))
    if args.names:
        sources = [s for s in sources if s.stem in args.names or s.name in args.names]
        if not sources:
            p.error(f"no tutorial named {args.names}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for src in sources:
        for path in render(src, out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
