"""Exercise aopc: region scores and the area over the perturbation curve."""
from __future__ import annotations

import numpy as np

from ...evaluate import perturbation
from .shared import NUMPY_ONLY, bundled, reference_relevance, sample_inputs

TITLE = "Region perturbation: region scores and AOPC"
FUNCTIONS = ["region_scores", "aopc"]
SUMMARY = "region_scores: sum a heatmap over s x s grid regions; aopc = 1/(L+1) sum_k (f(x_0) - f(x_k))"
POLICY = NUMPY_ONLY
HINTS = {"divide_by_L": "you divided by L (or skipped k = 0): AOPC = 1/(L+1) sum_{k=0..L} "
                        "(f(x_0) - f(x_k)), the k = 0 term (0) included",
         "sign_flipped": "the sign is flipped: AOPC averages f(x_0) - f(x_k) (the *drop* "
                         "of the score), positive when the score falls",
         "relative_drop": "you divided by f(x_0): AOPC is in score units, not relative",
         "trapezoid": "this is a trapezoidal area; AOPC is the plain mean over the L+1 "
                      "steps k = 0..L",
         "last_step_only": "this is only the final drop f(x_0) - f(x_L); AOPC averages "
                           "over every step",
         "column_major": "regions are numbered column by column; number them row by row: "
                         "region index = row * (number of region columns) + column",
         "abs_channels": "you summed |heatmap| over channels; sum the signed values (the "
                         "relevance of a pixel is the sum over its channels)",
         "mean_not_sum": "you averaged over each region; the region score is the *sum* "
                         "of the heatmap over it"}
USUAL_CAUSES = ["AOPC: the mean over k = 0..L of f(x_0) - f(x_k), one value per image",
                "regions: row-major numbering, the last row/column of regions partial "
                "when s does not divide the image size",
                "channels summed (signed) before the regions"]


def scores_variant(h, size, order="row", remainder="partial", reduce="sum", pool="sum"):
    """Region scores written out, with the usual mistakes as options."""
    h = np.asarray(h, dtype=np.float64)
    m = (np.abs(h).sum(1) if reduce == "abs" else h.sum(1)) if h.ndim == 4 else h
    N, H, W = m.shape
    nr, nc = (-(-H // size), -(-W // size)) if remainder == "partial" else (H // size, W // size)
    out = np.zeros((N, nr * nc))
    for r in range(nr):
        for c in range(nc):
            block = m[:, r * size:(r + 1) * size, c * size:(c + 1) * size]
            v = block.sum((1, 2)) if pool == "sum" else block.mean((1, 2))
            out[:, (r * nc + c) if order == "row" else (c * nr + r)] = v
    return out


def aopc_mistakes(c):
    drop = c[:, :1] - c
    L = c.shape[1] - 1
    return {"divide_by_L": drop.sum(1) / L,
            "sign_flipped": -drop.mean(1),
            "relative_drop": np.divide(drop.mean(1), c[:, 0], out=np.full(len(c), np.nan), where=c[:, 0] != 0),
            "trapezoid": np.trapezoid(drop, axis=1) / L,
            "last_step_only": drop[:, -1]}


def morf_zero_curves(net, x, heatmap, size=4):
    """MoRF curves written out plainly (regions in decreasing score order, ties by index, each
    distorted region set to 0), independent of minilrp.perturbation's random streams.
    -> (N, R + 1) target logits."""
    scores = scores_variant(heatmap, size)
    order = np.argsort(-scores, axis=1, kind="stable")
    t = net.forward(x).argmax(1)
    N, R = scores.shape
    W = x.shape[3]
    curves = np.zeros((N, R + 1))
    for n in range(N):
        xk = np.repeat(x[n:n + 1], R + 1, axis=0)
        for k in range(1, R + 1):
            xk[k] = xk[k - 1]
            row, col = divmod(order[n, k - 1], -(-W // size))
            xk[k, :, row * size:(row + 1) * size, col * size:(col + 1) * size] = 0.0
        curves[n] = net.forward(xk)[:, t[n]]
    return curves


def add_scores(book, cid, title, h, size):
    exp = perturbation.region_scores(h, perturbation.grid(h.shape[-2:], size))
    H, W = h.shape[-2:]
    v = {"column_major": scores_variant(h, size, order="col"), "mean_not_sum": scores_variant(h, size, pool="mean")}
    if h.ndim == 4:
        v["abs_channels"] = scores_variant(h, size, reduce="abs")
    dropped = [len(h), (H // size) * (W // size)]
    hint = [{"shape": dropped, "hint": "the partial regions are missing: when s does not divide the "
                                       "image, the last row/column of regions is smaller but counts"}] \
        if dropped[1] != exp.shape[1] else []
    book.case(cid, title, "region_scores", [("heatmap", h), ("size", size)], exp, v, output="scores",
              shape_doc="(N, R), R = ceil(H/s) * ceil(W/s)", shape_hint=hint,
              nan_hint="NaN in the scores: the heatmap is finite, so a division crept in?")


def add_aopc(book, cid, title, c):
    book.case(cid, title, "aopc", [("curves", c)], perturbation.aopc(c), aopc_mistakes(c), output="aopc",
              shape_doc="(N,): one value per image",
              shape_hint=[{"shape": [], "hint": "one AOPC per image (N,), not the mean over images"}],
              nan_hint="NaN: AOPC needs no division by the data")


def committed(book):
    add_aopc(book, "aopc_hand", "two curves worked by hand: falling [3, 2, 1, 0] and rising [0, 1, 1, 2]",
             np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 1.0, 2.0]]))
    add_scores(book, "scores_hand", "a 4x4 map, 2x2 regions, worked by hand", np.arange(16.0).reshape(1, 4, 4), 2)


def fresh(book, rng):
    add_aopc(book, "aopc_random", "5 random curves of 13 steps", rng("aopc_random").standard_normal((5, 13)).cumsum(1) + 4)
    net = bundled("fmnist-cnn")
    if net is not None:
        x, idx = sample_inputs(net, rng("aopc_bundled"), 4)
        R, _ = reference_relevance(net, x, "EpsilonGammaBox")
        add_aopc(book, "aopc_bundled", f"MoRF curves measured on the bundled fmnist-cnn (test images "
                 f"{idx.tolist()}, 16 regions of 7x7, EpsilonGammaBox heatmaps, regions set to 0)",
                 morf_zero_curves(net, x, R, size=7))
    add_scores(book, "scores_channels", "two channels (summed first), 6x6, 3x3 regions",
               rng("scores_channels").standard_normal((2, 2, 6, 6)), 3)
    add_scores(book, "scores_remainder", "5x7 map, 2x2 regions: partial regions at the border",
               rng("scores_remainder").standard_normal((2, 5, 7)), 2)
    add_scores(book, "scores_28", "28x28 heatmaps (N, 1, H, W), 4x4 regions (49 per image)",
               rng("scores_28").standard_normal((2, 1, 28, 28)), 4)
