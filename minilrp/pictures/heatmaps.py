"""Figures that compare heatmaps of several images: colour bars, overlays, robust scaling.

    fig = heatmap_grid(x, {"SA": S, "LRP EpsilonGammaBox": R}, titles=classes, low=0, high=1)

One column per image, the images on top (garments dark on white: ink on paper, the way every
figure of the tutorials draws them), then one row per method. Every map is divided by its own
robust scale per image, the ``clip``-th percentile of |map| (99.5 by default, as Captum's
``visualize_image_attr`` and Montavon et al.'s tutorial clip the few hottest pixels), and
clipped beyond it, so that one colour bar per row reads the same on every image:
-1 .. 1 for signed maps (relevance, gradient x input: the diverging map centred on 0, red
evidence for the class, blue against), 0 .. 1 for unsigned ones (SA: the sequential map from 0).
The scaling is stated in the figure's title. ``overlay=True`` draws each map over its image,
with the colour's opacity growing with |value| (zero is transparent: the garment shows).

Object-API matplotlib (no pyplot state, no backend switch): returns a Figure (``fig.savefig(path)``
writes a file); in a notebook pass ``fig=plt.figure()`` and ``plt.show()`` it.
"""
from __future__ import annotations

import textwrap

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..errors import MinilrpError
from .render import DIVERGING, SEQUENTIAL, reduce_channels

INK = "gray_r"  # images: 0 (background) white, the input's maximum black


def robust_scale(maps, clip=99.5) -> np.ndarray:
    """Per-image scale of (n, H, W) maps: the clip-th percentile of |map| (max |map| for clip
    None or 100); 1 where the map is all zero. -> (n,)."""
    a = np.abs(np.asarray(maps, dtype=np.float64)).reshape(len(maps), -1)
    s = a.max(axis=1) if clip is None or clip >= 100 else np.percentile(a, clip, axis=1)
    return np.where(s > 0, s, np.where(a.max(axis=1) > 0, a.max(axis=1), 1.0))


def _grey(images, low, high):
    """Network inputs (n, C, H, W) -> (n, H, W) in [0, 1] (channel mean), from [low, high]
    (per channel) or each image's own range."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise MinilrpError(f"images must be (n, C, H, W), got shape {x.shape}")
    if low is None or high is None:
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
    else:
        lo = np.asarray(low, dtype=np.float64).reshape(1, -1, 1, 1)
        hi = np.asarray(high, dtype=np.float64).reshape(1, -1, 1, 1)
    return np.clip((x - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1).mean(axis=1)


def _signed(m):
    return bool(np.any(m < 0))


def heatmap_grid(images, maps: dict, titles=None, clip=99.5, overlay=False, low=None, high=None,
                 signed=None, cell=1.45, title=None, how=None, fig=None) -> Figure:
    """The images (n, C, H, W) over one row per entry of ``maps`` ({label: (n, C, H, W) or
    (n, H, W)}), each row with its colour bar. titles: one per image (e.g. the class);
    signed: {label: bool} (default: a map with a negative value is signed); how: the channel
    reduction per label ("sum" for relevance, the default, "norm" for gradients); low/high: the
    images' valid range (default: each image's own); fig: an empty figure to draw into (e.g.
    ``plt.figure()`` in a notebook; resized here). -> the Figure."""
    x = np.asarray(images)
    n = len(x)
    if not maps:
        raise MinilrpError("heatmap_grid needs at least one map")
    rows = {}
    for label, m in maps.items():
        m = reduce_channels(m, (how or {}).get(label, "sum"))
        if len(m) != n or m.shape[1:] != x.shape[2:]:
            raise MinilrpError(f"maps {label!r} of shape {np.shape(maps[label])} do not fit the images {x.shape}")
        if not np.all(np.isfinite(m)):
            raise MinilrpError(f"maps {label!r} contain NaN or inf")
        s = _signed(m) if signed is None or label not in signed else bool(signed[label])
        if not s and np.any(m < 0):
            raise MinilrpError(f"maps {label!r} have negative values: draw them as signed")
        rows[label] = (np.clip(m / robust_scale(m, clip)[:, None, None], -1 if s else 0, 1), s)
    grey = _grey(x, low, high)
    size = (cell * n + 1.6, cell * (len(rows) + 1) + 0.55)
    if fig is None:
        fig = Figure(figsize=size, layout="constrained", dpi=100)
        FigureCanvasAgg(fig)
    else:
        fig.set_size_inches(size)
        fig.set_layout_engine("constrained")
    axes = fig.subplots(len(rows) + 1, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(grey[i], cmap=INK, vmin=0, vmax=1, interpolation="nearest")
        if titles is not None:
            axes[0, i].set_title(str(titles[i]), fontsize=9)
    axes[0, 0].set_ylabel("image", fontsize=9)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=INK), ax=axes[0, :].tolist(), shrink=0.9,
                       aspect=12, ticks=[0, 1])
    bar.ax.set_yticklabels(["low", "high"])  # the valid input range
    bar.ax.tick_params(labelsize=7)
    for r, (label, (v, s)) in enumerate(rows.items(), start=1):
        cmap = colormaps[DIVERGING if s else SEQUENTIAL]
        norm = Normalize(-1 if s else 0, 1)
        for i in range(n):
            ax = axes[r, i]
            if overlay:
                ax.imshow(grey[i], cmap=INK, vmin=0, vmax=1.6, interpolation="nearest")  # dimmed
                rgba = cmap(norm(v[i]))
                rgba[..., 3] = np.clip(np.abs(v[i]), 0, 1) ** 0.7
                ax.imshow(rgba, interpolation="nearest")
            else:
                ax.imshow(v[i], cmap=cmap, norm=norm, interpolation="nearest")
        axes[r, 0].set_ylabel(label, fontsize=9)
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes[r, :].tolist(), shrink=0.9,
                           aspect=12, ticks=[-1, 0, 1] if s else [0, 0.5, 1])
        bar.ax.tick_params(labelsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    scale = "max |value|" if clip is None or clip >= 100 else f"the {clip:g}th percentile of |value|"
    what = "over the image, opacity = |value|" if overlay else "red > 0 > blue; SA: dark = high"
    chars = int(size[0] * 100 / 6.5)  # what fits the figure's width at this font size
    lines = ([title] if title else []) + textwrap.wrap(f"each map / {scale} per image, clipped ({what})", chars)
    fig.suptitle("\n".join(lines), fontsize=9)
    return fig
