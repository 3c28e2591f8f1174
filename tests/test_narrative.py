"""The sentences beside the reports' tables: each template is chosen by the numbers."""
from minilrp.evaluate import narrative as T


def test_sentences_follow_the_numbers():
    up, down, zero = ({"mean": m, "low": lo, "high": hi} for m, lo, hi in
                      ((1.2, 1.0, 1.4), (-0.9, -1.1, -0.7), (0.1, -0.2, 0.4)))
    assert "faster than random" in T.versus_random("SA", "MoRF", up)
    assert "*more slowly*" in T.versus_random("LRP", "MoRF", down)
    assert "cannot be told apart" in T.versus_random("LRP", "MoRF", zero)
    assert "keeps the score higher" in T.versus_random("LRP", "LeRF", down)
    assert "+1.20 [+1.00, +1.40]" in T.versus_random("SA", "MoRF", up)
    # the blank-background reason needs both numbers that predict it
    assert T.blank_reason("LRP", "uniform", 0.05, 0.30, 0.21, 1.0).startswith("Why: `uniform` changes 100%")
    assert T.blank_reason("LRP", "constant:background", 0.05, 0.30, 0.21, 0.0) == ""
    assert T.blank_reason("LRP", "uniform", 0.25, 0.30, 0.21, 1.0) == ""
    assert T.flips("LRP X", {"uniform": ("below", "-1"), "constant:background": ("above", "+2")}) \
        == "LRP X: the verdict depends on the fill: it loses under `uniform` (-1), wins under `constant:background` (+2)."
    assert T.flips("LRP X", {"uniform": ("above", "1"), "blur": ("above", "2")}) == ""
    labels = ["9 Dense", "7 Dense", "0 Conv2d"]
    iv = [{"mean": m, "low": m - 0.05, "high": m + 0.05} for m in (0.9, 0.3, 0.2)]
    text = T.randomisation("M", labels, ["unchanged", "changed", "changed"], iv, "rho", 0.5, "cascading")
    assert "only once the layers down to 7 Dense" in text and "0.30 [0.25, 0.35]" in text
    assert "alpha-beta" in T.alpha_beta_reason("M", ["AlphaBeta(alpha=2, beta=1)"], ["unchanged"], ["changed"])
    assert T.alpha_beta_reason("M", ["Gamma(gamma=0.25)"], ["unchanged"], ["changed"]) == ""
    assert T.alpha_beta_reason("M", ["ZPlus()"], ["changed"], ["changed"]) == ""


def study_rows():
    """Rows as the perturbation study makes them, for two fills: LRP loses to SA under uniform
    noise while avoiding blank regions, and wins under the background fill."""
    rows = []

    def add(p, m, o, vs_rand, vs_sa=None, blank=0.3):
        rows.append(dict(perturbation=p, method=m, ordering=o, random_minus_aopc=-vs_rand[0],
                         random_minus_low=-vs_rand[2], random_minus_high=-vs_rand[1],
                         minus_sa=None if vs_sa is None else vs_sa[0],
                         minus_sa_low=None if vs_sa is None else vs_sa[1],
                         minus_sa_high=None if vs_sa is None else vs_sa[2], blank_first_quarter=blank))
    for p, lrp in (("uniform", (-1.0, -1.2, -0.8)), ("constant:background", (2.9, 2.7, 3.1))):
        add(p, "Random", "random", (0, 0, 0), blank=0.30)
        add(p, "SA", "MoRF", (1.2, 1.0, 1.4), blank=0.21)
        add(p, "SA", "LeRF", (-2.4, -2.6, -2.2))
        add(p, "Gradient x Input", "MoRF", (0.1, -0.1, 0.3), (-1.1, -1.3, -0.9), blank=0.01)
        add(p, "Gradient x Input", "LeRF", (-0.6, -0.8, -0.4))
        add(p, "LRP X", "MoRF", (lrp[0] + 1.2, lrp[1] + 1.2, lrp[2] + 1.2), lrp, blank=0.04)
        add(p, "LRP X", "LeRF", (0.5, 0.3, 0.7))

    def row(p, m, o):
        return next(r for r in rows if (r["perturbation"], r["method"], r["ordering"]) == (p, m, o))
    return rows, row


def test_perturbation_words_and_flips():
    rows, row = study_rows()
    words = "\n".join(T.perturbation_words(rows, "uniform", ["X"], row, blank_change=1.0))
    assert "- SA: distorting its most relevant regions first lowers the score faster than random order " \
           "(AOPC +1.20 [+1.00, +1.40] above random). Least relevant first (LeRF), it keeps the score higher " \
           "than random order (AOPC -2.40 [-2.60, -2.20] relative to random)." in words
    assert "It loses to SA by -1.00 [-1.20, -0.80]." in words
    assert "LeRF), it lowers the score *faster* than random order (AOPC +0.50 [+0.30, +0.70]" in words
    assert words.count("Why: `uniform` changes 100%") == 2  # Gradient x Input and LRP X lose to SA
    assert "Only 4% of the regions LRP X distorts first are blank (random order: 30%, SA's 21%)" in words
    calm = "\n".join(T.perturbation_words(rows, "constant:background", ["X"], row, blank_change=0.0))
    assert "Why" not in calm and "It beats SA by +2.90 [+2.70, +3.10]." in calm

    class Fill:
        def __init__(self, name):
            self.name = name
    flips = T.perturbation_flips(rows, [Fill("uniform"), Fill("constant:background")], ["X"], row,
                                 {"uniform": 1.0, "constant:background": 0.0})
    assert flips[2] == ("- LRP X against SA (MoRF): the verdict depends on the fill: it loses under `uniform` "
                        "(-1.00 [-1.20, -0.80]), wins under `constant:background` (+2.90 [+2.70, +3.10]).")
    assert flips[3].startswith("  Why: `uniform`")
    assert T.perturbation_flips(rows, [Fill("uniform")], ["X"], row, {"uniform": 1.0}) == []


def test_input_zeros_reason_needs_zeros_and_reports_the_signed_correlation():
    chance = {"mean": 0.35, "low": 0.3, "high": 0.4}
    signed = {"mean": 0.01, "low": -0.01, "high": 0.03}
    text = T.input_zeros_reason("GxI", 0.51, chance, signed)
    assert "exactly 0 on 51% of the pixels" in text and "correlates at 0.35" in text
    assert "Signed, the correlation with every layer randomised is +0.01 [-0.01, +0.03]" in text
    assert T.input_zeros_reason("SA", 0.0, chance, signed) == ""
    assert "Signed" not in T.input_zeros_reason("GxI", 0.51, chance, {"mean": 0.8, "low": 0.7, "high": 0.9})


def test_conservation_sentence():
    ratio = {"mean": 0.741, "low": 0.71, "high": 0.772}
    shares = {"bias": 0.313, "stabiliser": -0.0538, "dropped": 0.0}
    text = T.conservation("AB", ratio, shares, 1.1e-3, "f(x)", ["Epsilon(epsilon=1e-06)", "AlphaBeta(alpha=2, beta=1)"])
    assert text.startswith("AB: its sum is 74.1% [71.0, 77.2] of f(x); biases absorb 31.3%, stabilisers -5.38%")
    assert "negative stabiliser share is alpha-beta's" in text
    assert "alpha-beta" not in T.conservation("AB", ratio, shares, 1e-7, "f(x)", ["ZBox()"])
    assert "only for networks without biases" in T.conservation("GxI", {"mean": 0.54, "low": 0.5, "high": 0.6})


def test_constant_maps_get_their_own_sentence():
    nan = {"mean": float("nan"), "low": float("nan"), "high": float("nan")}
    text = T.randomisation("Flat", ["1 Dense"], ["inconclusive"], [nan], "rho", 0.5, "cascading")
    assert "constant" in text and "nan" not in text
    assert "undefined" in T.random_logit("Flat", nan, "rho", 0.5, "inconclusive")
    assert T.interval(nan) == "undefined"
