"""``python -m minilrp.experiments sanity`` end to end, and the sentences its report computes."""
import csv
import subprocess
import sys

import numpy as np
import pytest

from minilrp import available_models
from minilrp.evaluate import narrative as T
from minilrp.evaluate import sanity as S
from minilrp.experiments import main

needs_model = pytest.mark.skipif("fmnist-cnn" not in available_models(),
                                 reason="the bundled fmnist-cnn weights are not in this checkout")
METHODS = "input,gradient,gradient_x_input,EpsilonGammaBox,EpsilonAlpha2Beta1"


@needs_model
@pytest.mark.slow
def test_sanity_run_writes_tables_figures_and_computed_verdicts(tmp_path):
    out = tmp_path / "run"
    assert main(["sanity", "--n-images", "6", "--methods", METHODS, "--out", str(out), "--no-progress"]) == 0
    for name in ("results.md", "results.csv", "scores.npz", "settings.json", "mprt_cascading.png",
                 "mprt_independent.png", "mprt_examples.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "results.md").read_text()
    assert f"python -m minilrp.experiments sanity --n-images 6 --methods {METHODS}" in md
    for title in ("## The published findings, checked on this run", "## At a glance",
                  "## Random logit (Sixt et al. 2020)", "## Input invariance (Kindermans et al. 2017)",
                  "## Conservation and completeness"):
        assert title in md
    # the findings the bundled CNN reproduces (test_sanity holds the constructions exact)
    assert "- Gradient is input-invariant (Kindermans et al. 2017): **holds**" in md
    assert "- Gradient x Input is not input-invariant (Kindermans et al. 2017): **holds**" in md
    assert "must flag it: **flagged**" in md
    rows = list(csv.DictReader(open(out / "results.csv")))
    scores = np.load(out / "scores.npz")
    # a table cell is the per-image values': recompute one, and its verdict
    row = next(r for r in rows if (r["test"], r["order"], r["step"], r["method"], r["measure"])
               == ("mprt", "cascading", "1", "Gradient", "spearman_abs"))
    v = scores["mprt|cascading|Gradient|spearman_abs"][0]
    s = S.interval(v)
    assert np.isclose(float(row["mean"]), v.mean(), rtol=1e-5) and row["verdict"] == S.similarity_verdict(s)
    assert scores["mprt|cascading|Gradient|spearman_abs"].shape == (4, 6)
    # the sentence beside the table is the template filled from these numbers
    import json
    steps = json.loads((out / "settings.json").read_text())["steps"]
    summaries = [S.interval(x) for x in scores["mprt|cascading|Gradient|spearman_abs"]]
    sentence = T.randomisation("Gradient", steps, [S.similarity_verdict(x) for x in summaries], summaries,
                               "Spearman |.|", 0.5, "cascading")
    assert f"- {sentence}" in md
    # the report is redone from the saved values alone, identically
    first = (out / "results.md").read_text()
    (out / "results.md").unlink()
    assert main(["sanity", "--report-only", "--out", str(out)]) == 0
    assert (out / "results.md").read_text() == first
    assert main(["sanity", "--report-only", "--out", str(tmp_path / "nothing")]) == 2


def test_bad_options_are_refused_before_computing(tmp_path, capsys):
    r = subprocess.run([sys.executable, "-m", "minilrp.experiments", "sanity", "--methods", "sa,saliency",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown method 'saliency'" in r.stderr
    assert not (tmp_path / "o").exists()
    for bad, message in ((["--n-images", "1"], "at least 2"), (["--threshold", "2"], "threshold"),
                         (["--measure", "pearson"], "measure"), (["--topk", "0"], "topk"),
                         (["--shift", "0"], "shift"), (["--seed", "-3"], "seed"),
                         (["--model", "no-such-model"], "no-such-model")):
        assert main(["sanity", "--quick", "--out", str(tmp_path / "p"), *bad]) == 2, bad
        assert message in capsys.readouterr().err
        assert not (tmp_path / "p").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["sanity", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "cannot write the output folder" in capsys.readouterr().err


@needs_model
def test_blank_changed_measures_the_fill():
    import minilrp
    net = minilrp.load_model("fmnist-cnn")
    images, _, _ = minilrp.load_samples()
    x = net.preprocess(images[:3])
    assert T.blank_changed(net, x, "uniform") > 0.99
    assert T.blank_changed(net, x, "constant:background") == 0.0
