"""Exercise maxpool_wta: winner-take-all relevance through MaxPool2d."""
from __future__ import annotations

import numpy as np

from ...engine.layers import MaxPool2d
from ...explain.rules import WinnerTakeAll
from .shared import NUMPY_ONLY, bundled, sample_inputs

TITLE = "Winner-take-all relevance through MaxPool2d"
FUNCTIONS = ["maxpool_wta"]
SUMMARY = "each window's relevance goes to its maximum; ties split evenly; overlapping windows add up"
POLICY = NUMPY_ONLY
HINTS = {"ties_first": "ties: you gave all of a window's relevance to the *first* maximum "
                       "(what PyTorch's gradient does); minilrp splits it evenly among all "
                       "tied maxima (after a ReLU, windows of zeros are common)",
         "ties_last": "ties: you gave all of a window's relevance to the *last* maximum; "
                      "split it evenly among all tied maxima",
         "ties_full": "ties: every tied maximum received the window's full relevance, so "
                      "relevance is created; split it evenly (R / number of maxima)",
         "overlap_overwritten": "overlapping windows (stride < kernel): a pixel that is the "
                                "maximum of two windows must receive both shares (+=), "
                                "yours keeps only the last one (=)",
         "proportional": "this is the proportional rule (R shared in proportion to the "
                         "activations, as for a sum pool), not winner-take-all",
         "minimum": "the relevance went to each window's minimum instead of its maximum"}
USUAL_CAUSES = ["ties: split evenly among all maxima of a window",
                "overlapping windows: accumulate (+=), do not overwrite",
                "window (oy, ox) covers rows oy*stride .. oy*stride + K - 1",
                "rows/columns no window covers (H - K not a multiple of stride) get 0"]
COMMON = dict(output="R_in", show_sums=True, shape_doc="like a: (N, C, H, W)",
              nan_hint="NaN: a window with no maximum found, or a division by a tie count of 0?")


def variant(a, R, K, s, ties="split", accumulate=True, pick="max"):
    """The rule written out window by window, with the usual mistakes as options."""
    out = np.zeros_like(a)
    N, C, H, W = a.shape
    Ho, Wo = (H - K) // s + 1, (W - K) // s + 1
    for n in range(N):
        for c in range(C):
            for oy in range(Ho):
                for ox in range(Wo):
                    win = a[n, c, oy * s:oy * s + K, ox * s:ox * s + K]
                    r = R[n, c, oy, ox]
                    if pick == "proportional":
                        tot = win.sum()
                        share = win * r / tot if tot != 0 else np.zeros_like(win)
                        pos = [(i, j) for i in range(K) for j in range(K)]
                        vals = [share[i, j] for i, j in pos]
                    else:
                        m = win.max() if pick == "max" else win.min()
                        pos = [(i, j) for i in range(K) for j in range(K) if win[i, j] == m]
                        pos = pos[:1] if ties == "first" else pos[-1:] if ties == "last" else pos
                        vals = [r / len(pos) if ties == "split" else r] * len(pos)
                    for (i, j), v in zip(pos, vals):
                        if accumulate:
                            out[n, c, oy * s + i, ox * s + j] += v
                        else:
                            out[n, c, oy * s + i, ox * s + j] = v
    return out


def mistakes(a, R, K, s):
    return {"ties_first": variant(a, R, K, s, ties="first"),
            "ties_last": variant(a, R, K, s, ties="last"),
            "ties_full": variant(a, R, K, s, ties="full"),
            "overlap_overwritten": variant(a, R, K, s, accumulate=False),
            "proportional": variant(a, R, K, s, pick="proportional"),
            "minimum": variant(a, R, K, s, pick="min")}


def add(book, cid, title, a, R, K, s, **extra):
    exp = WinnerTakeAll().relevance(MaxPool2d(K, s), a, R)[0]
    book.case(cid, title, "maxpool_wta", [("a", a), ("R", R), ("kernel_size", K), ("stride", s)],
              exp, mistakes(a, R, K, s), **{**COMMON, **extra})


def committed(book):
    a = np.array([[[[1.0, 3.0, 0.0, 2.0], [2.0, 0.5, 4.0, 1.0], [0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 2.0, 0.0]]]])
    add(book, "hand", "2x2 windows, stride 2, distinct maxima (4x4 plane)", a,
        np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 2, 2)
    a = np.array([[[[0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 3.0, 0.5], [2.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]]])
    add(book, "ties", "ties: a window of four zeros, windows with two equal maxima", a,
        np.array([[[[4.0, 2.0], [1.0, -2.0]]]]), 2, 2)
    a = np.array([[[[1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 2.0]]]])
    add(book, "overlap", "3x3 windows, stride 2 (overlapping): the centre is the maximum of all four", a,
        np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 3, 2)


def fresh(book, rng):
    g = rng("random_ties")
    add(book, "random_ties", "2x2 windows, stride 2, 2 channels of small integers (many ties)",
        g.integers(0, 3, (2, 2, 4, 4)).astype(np.float64), g.standard_normal((2, 2, 2, 2)), 2, 2)
    g = rng("stride1")
    add(book, "stride1", "2x2 windows, stride 1 (heavily overlapping), 2 channels",
        np.round(g.uniform(0, 3, (1, 2, 4, 4)), 1), g.standard_normal((1, 2, 3, 3)), 2, 1)
    g = rng("remainder")
    add(book, "remainder", "5x5 plane, 2x2 windows, stride 2: the last row and column are in no window",
        g.standard_normal((2, 1, 5, 5)), g.standard_normal((2, 1, 2, 2)), 2, 2)
    net = bundled("fmnist-cnn")
    if net is not None:
        g = rng("bundled")
        x, idx = sample_inputs(net, g, 1)
        net.forward(x)
        i = [j for j, layer in enumerate(net.layers) if isinstance(layer, MaxPool2d)][0]
        layer = net.layers[i]
        r, c = g.integers(0, layer.a.shape[2] - 8, 2)
        a = layer.a[:, :8, r:r + 8, c:c + 8].copy()
        K, s = layer.kernel_size, layer.stride
        Ho = (8 - K) // s + 1
        add(book, "bundled", f"the bundled fmnist-cnn's first max pool (layer {i}) on an 8-channel 8x8 crop of "
            f"real post-ReLU activations (test image {int(idx[0])}; many all-zero windows)", a,
            g.standard_normal((1, 8, Ho, Ho)), K, s,
            only_here="the smaller checks pass but this one does not: real activations after a ReLU "
                      "have many all-zero windows (4-way ties)")
