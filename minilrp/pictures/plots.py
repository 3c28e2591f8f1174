"""Plots of region-perturbation results: mean curves with bands, SA-vs-LRP disagreement maps.

Object-API matplotlib (no pyplot, no backend switch): every function returns a Figure to save
with ``fig.savefig``.
"""
from __future__ import annotations

import numpy as np

from ..errors import MinilrpError
from ..evaluate.perturbation import _curves, relative_to

def plot_curves(curves: dict, relative=None, band="se", title=None, ylabel=None, ax=None):
    """Mean curves with bands, one line per entry of ``curves`` ({label: (N, L + 1)}); band: "se"
    (+- 1 standard error), "ci" (+- 1.96 SE) or None. relative: the label of a baseline (e.g. the
    random ordering) to subtract image by image first. Returns a matplotlib Figure (object API,
    no pyplot and no backend switch: save it with fig.savefig)."""
    from matplotlib.figure import Figure
    if not curves:
        raise MinilrpError("plot_curves needs at least one curve")
    if band not in ("se", "ci", None):
        raise MinilrpError(f"band must be 'se', 'ci' or None, got {band!r}")
    if relative is not None and relative not in curves:
        raise MinilrpError(f"relative baseline {relative!r} is not among the curves")
    if ax is None:
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for label, c in curves.items():
        c = _curves(c)
        if relative is not None:
            c = relative_to(c, curves[relative])
        steps = np.arange(c.shape[1])
        mean = c.mean(axis=0)
        (line,) = ax.plot(steps, mean, label=label, lw=1.6)
        if band and c.shape[0] > 1:
            se = c.std(axis=0, ddof=1) / np.sqrt(c.shape[0]) * (1.96 if band == "ci" else 1.0)
            ax.fill_between(steps, mean - se, mean + se, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("perturbation step k (regions distorted)")
    ax.set_ylabel(ylabel or ("score minus the baseline's" if relative else "mean class score f(x_k)"))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_disagreement(images, dmap, titles=None, fig=None):
    """Images (n, C, H, W) or (n, H, W) (dark on white) above their SA-minus-LRP rank
    disagreement maps (n, H, W) in [-1, 1] (:func:`disagreement`), on a diverging colormap
    centred on 0 with symmetric limits and a colour bar (red: SA ranks higher, blue: LRP ranks
    higher). fig: an empty figure to draw into (e.g. ``plt.figure()`` in a notebook). -> Figure."""
    from matplotlib.figure import Figure
    img = np.asarray(images, dtype=np.float64)
    d = np.asarray(dmap, dtype=np.float64)
    img = img.mean(axis=1) if img.ndim == 4 else img
    if img.ndim != 3 or d.shape != img.shape:
        raise MinilrpError(f"images {np.shape(images)} and disagreement maps {d.shape} do not match")
    n = len(img)
    size = (1.6 * n + 1.2, 3.9)
    if fig is None:
        fig = Figure(figsize=size, layout="constrained")
    else:
        fig.set_size_inches(size)
        fig.set_layout_engine("constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(img[i], cmap="gray_r")
        im = axes[1, i].imshow(d[i], cmap="RdBu_r", vmin=-1, vmax=1)
        if titles is not None:
            axes[0, i].set_title(str(titles[i]), fontsize=9)
        for a in axes[:, i]:
            a.set_xticks([])
            a.set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=9)
    axes[1, 0].set_ylabel("SA rank - LRP rank", fontsize=9)
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8, ticks=[-1, 0, 1])
    return fig
