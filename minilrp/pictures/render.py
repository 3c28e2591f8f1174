"""Heatmaps to pictures: colour conventions, overlays, grids, curve plots (matplotlib, headless).

Conventions:
- Signed maps (LRP, gradient x input, IG) use the diverging colormap ``bwr`` centred on zero
  with symmetric scaling per image: -m -> blue, 0 -> white, +m -> red, where m = max |R|
  (or its ``robust`` percentile, clipping the few hottest pixels).
- Unsigned maps (SA, |gradient|) use the sequential colormap ``magma_r`` from zero:
  0 -> pale yellow, the image's maximum -> near black. Never ``jet``.
- Channels: LRP maps are summed over channels (relevance adds up); gradients take the
  Euclidean norm over channels (a direction's length). SA is already channel-summed.
Figures are drawn with matplotlib's object API on the Agg canvas: no display needed, and
the global pyplot state is never touched.
"""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import MinilrpError

DIVERGING = "bwr"
SEQUENTIAL = "magma_r"


def reduce_channels(maps, how="sum") -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) by ``sum`` (relevance) or ``norm`` (gradients);
    (N, H, W) passes through."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 3:
        return maps
    if maps.ndim != 4:
        raise MinilrpError(f"a heatmap batch is (N, C, H, W) or (N, H, W), got shape {maps.shape}")
    if how == "sum":
        return maps.sum(axis=1)
    if how == "norm":
        return np.sqrt((maps ** 2).sum(axis=1))
    raise MinilrpError(f"channel reduction must be 'sum' or 'norm', got {how!r}")


def _scale(m, robust):
    """Per-image scale: max |m|, or its ``robust`` percentile (e.g. 99.5)."""
    a = np.abs(m).reshape(len(m), -1)
    s = a.max(axis=1) if robust is None else np.percentile(a, robust, axis=1)
    return np.where(s > 0, s, 1.0)


def signed_rgb(maps, robust=None, how="sum") -> np.ndarray:
    """Signed heatmaps -> RGB floats (N, H, W, 3) on the diverging map, centred on zero and
    scaled symmetrically per image."""
    m = reduce_channels(maps, how)
    if not np.all(np.isfinite(m)):
        raise MinilrpError("heatmap contains NaN or inf")
    s = _scale(m, robust).reshape(-1, 1, 1)
    v = np.clip(m / s, -1, 1) * 0.5 + 0.5
    return colormaps[DIVERGING](v)[..., :3]


def unsigned_rgb(maps, robust=None, how="norm") -> np.ndarray:
    """Non-negative maps (SA) -> RGB floats (N, H, W, 3) on the sequential map from zero."""
    m = reduce_channels(maps, how)
    if not np.all(np.isfinite(m)):
        raise MinilrpError("heatmap contains NaN or inf")
    if np.any(m < 0):
        raise MinilrpError("unsigned_rgb takes non-negative maps (SA, |gradient|); use signed_rgb")
    s = _scale(m, robust).reshape(-1, 1, 1)
    return colormaps[SEQUENTIAL](np.clip(m / s, 0, 1))[..., :3]


def image_rgb(x, low=None, high=None) -> np.ndarray:
    """Network inputs (N, C, H, W) -> RGB floats in [0, 1] (grey for one channel), scaled
    from the valid input range [low, high] (per channel) or each image's min..max."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise MinilrpError(f"images must be (N, 1 or 3, H, W), got {x.shape}")
    if low is None:
        low = x.min(axis=(1, 2, 3), keepdims=True)
        high = x.max(axis=(1, 2, 3), keepdims=True)
    else:
        low = np.asarray(low, dtype=np.float64).reshape(1, -1, 1, 1)
        high = np.asarray(high, dtype=np.float64).reshape(1, -1, 1, 1)
    v = np.clip((x - low) / np.where(high > low, high - low, 1.0), 0, 1)
    v = np.repeat(v, 3, axis=1) if v.shape[1] == 1 else v
    return v.transpose(0, 2, 3, 1)


def overlay(image_rgb_, heat_rgb, alpha=0.6) -> np.ndarray:
    """Blend heatmap colours over a (dimmed, grey) picture of the input."""
    grey = image_rgb_.mean(axis=-1, keepdims=True)
    return (1 - alpha) * grey + alpha * heat_rgb


def save_png(rgb, path, scale=8):
    """One RGB float image (H, W, 3) to a PNG, upscaled by pixel repetition."""
    rgb = np.asarray(rgb)
    big = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    fig = Figure(figsize=(big.shape[1] / 100, big.shape[0] / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(np.clip(big, 0, 1), interpolation="nearest")
    ax.axis("off")
    fig.savefig(path, dpi=100)


def grid(columns, row_labels=None, path=None, title=None, cell=1.6):
    """A grid figure: ``columns`` is a list of (header, RGB batch (N, H, W, 3)); one row per
    image. Returns the Figure; saves a PNG when ``path`` is given."""
    if not columns:
        raise MinilrpError("grid needs at least one column")
    n = len(columns[0][1])
    if any(len(c[1]) != n for c in columns):
        raise MinilrpError("every grid column needs the same number of images")
    fig = Figure(figsize=(cell * len(columns), cell * n + (0.5 if title else 0.2)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, len(columns), squeeze=False)
    for j, (header, rgb) in enumerate(columns):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(np.clip(rgb[i], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(header, fontsize=8)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def curves(series, path=None, xlabel="perturbation step k", ylabel="target logit f(x_k)", title=None):
    """Mean curves with bands: ``series`` maps a label to (mean (L+1,), low band, high band).
    Returns the Figure; saves a PNG when ``path`` is given."""
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, (mean, lo, hi) in series.items():
        k = np.arange(len(mean))
        line, = ax.plot(k, mean, label=label, lw=1.6)
        if lo is not None:
            ax.fill_between(k, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
