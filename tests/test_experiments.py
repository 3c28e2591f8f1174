"""The experiment runner ``python -m minilrp.experiments perturbation --quick`` end to end."""
import csv
import subprocess
import sys

import numpy as np
import pytest

from minilrp import available_models
from minilrp.evaluate.perturbation_study import COMBOS
from minilrp.experiments import main

needs_model = pytest.mark.skipif("fmnist-cnn" not in available_models(),
                                 reason="the bundled fmnist-cnn weights are not in this checkout")


@needs_model
@pytest.mark.slow
def test_quick_run_writes_tables_figures_and_verdicts(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["perturbation", "--quick", "--n-images", "8", "--out", str(out), "--no-progress"]) == 0
    for name in ("results.md", "results.csv", "curves.npz", "curves_uniform.png",
                 "curves_constant-background.png", "disagreement.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "results.md").read_text()
    assert "python -m minilrp.experiments perturbation --quick --n-images 8" in md
    for p in ("uniform", "constant:background"):
        assert f"**Verdicts under `{p}`**" in md
        assert f"| `{p}` |" in md  # the at-a-glance row
    assert md.count("(i) SA > random under MoRF: **") == 2
    rows = list(csv.DictReader(open(out / "results.csv")))
    keys = {(r["perturbation"], r["method"], r["ordering"]) for r in rows}
    for p in ("uniform", "constant:background"):
        for m in ("SA", "Gradient x Input", "LRP EpsilonGammaBox", "LRP EpsilonPlusFlat", "Oracle"):
            assert (p, m, "MoRF") in keys and (p, m, "LeRF") in keys
        assert (p, "Random", "random") in keys
        for c in COMBOS:
            assert (p, "SA + LRP EpsilonGammaBox", c) in keys
    # the table is the curves': recompute one AOPC from the saved curves
    curves = np.load(out / "curves.npz")
    c = curves["uniform|SA|MoRF"].astype(np.float64)
    row = next(r for r in rows if (r["perturbation"], r["method"], r["ordering"]) == ("uniform", "SA", "MoRF"))
    np.testing.assert_allclose(float(row["aopc"]), (c[:, :1] - c).mean(), rtol=1e-4)
    assert c.shape == (8, 50)
    # the report is redone from the saved curves alone, identically (seeded determinism of the
    # curves themselves is tested in test_perturbation)
    first = (out / "results.csv").read_text()
    (out / "results.csv").unlink()
    assert main(["perturbation", "--report-only", "--out", str(out)]) == 0
    assert (out / "results.csv").read_text() == first
    assert main(["perturbation", "--report-only", "--out", str(tmp_path / "nothing")]) == 2


def test_bad_options_give_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minilrp.experiments", "perturbation", "--quick",
                        "--perturbation", "gaussian", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown perturbation 'gaussian'" in r.stderr
    assert main(["perturbation", "--quick", "--region-size", "0", "--out", str(tmp_path)]) == 2
    assert main(["perturbation", "--quick", "--model", "no-such-model", "--out", str(tmp_path)]) == 2
