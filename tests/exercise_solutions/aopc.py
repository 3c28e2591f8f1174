import numpy as np


def region_scores(heatmap, size):
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim == 4:
        h = h.sum(axis=1)
    N, H, W = h.shape
    rows, cols = -(-H // size), -(-W // size)
    scores = np.zeros((N, rows * cols))
    for r in range(rows):
        for c in range(cols):
            block = h[:, r * size:(r + 1) * size, c * size:(c + 1) * size]
            scores[:, r * cols + c] = block.sum(axis=(1, 2))
    return scores


def aopc(curves):
    c = np.asarray(curves, dtype=np.float64)
    drops = c[:, :1] - c
    return drops.mean(axis=1)
