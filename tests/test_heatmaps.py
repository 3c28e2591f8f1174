"""Heatmap figures: robust per-image scaling, colour bars that read the same on every image,
overlays, and labels that do not collide."""
import numpy as np
import pytest

from minilrp import MinilrpError
from minilrp.pictures.heatmaps import heatmap_grid, robust_scale


def test_robust_scale_is_a_percentile_of_the_magnitude():
    m = np.zeros((2, 10, 10))
    m[0].flat[:] = np.arange(100.0)
    m[1, 0, 0] = -5.0
    assert robust_scale(m, 100).tolist() == [99.0, 5.0]
    assert robust_scale(m, 50)[0] == pytest.approx(49.5)
    assert robust_scale(m, 50)[1] == 5.0  # a median of 0 falls back to the maximum
    assert robust_scale(np.zeros((1, 2, 2))).tolist() == [1.0]


def images_and_maps():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 1, 6, 6))
    R = rng.standard_normal((3, 1, 6, 6))
    R[0, 0, 0, 0] = 100.0  # one hot pixel: clipped, the rest still visible
    S = rng.uniform(0, 1, (3, 6, 6))
    return x, R, S


def test_values_drawn_are_the_clipped_scaled_maps():
    x, R, S = images_and_maps()
    fig = heatmap_grid(x, {"LRP": R, "SA": S}, titles=["a", "b", "c"], low=0, high=1)
    axes = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(axes) == 9  # 3 images x (image row + 2 maps)
    lrp = np.asarray(axes[3].images[0].get_array())  # row 1, image 0
    scale = np.percentile(np.abs(R[0, 0]), 99.5)
    np.testing.assert_allclose(lrp, np.clip(R[0, 0] / scale, -1, 1))
    assert lrp[0, 0] == 1.0 and np.abs(lrp).max() == 1.0
    assert axes[3].images[0].get_clim() == (-1, 1)  # signed: centred on zero, symmetric
    sa = axes[6].images[0]
    assert sa.get_clim() == (0, 1) and np.asarray(sa.get_array()).min() >= 0  # unsigned from zero
    img = np.asarray(axes[0].images[0].get_array())
    np.testing.assert_allclose(img, x[0, 0])  # gray_r: 0 white, 1 black
    assert axes[0].images[0].get_cmap().name == "gray_r"


def test_one_colour_bar_per_row_and_the_scaling_in_the_title():
    x, R, S = images_and_maps()
    fig = heatmap_grid(x, {"LRP": R, "SA": S}, clip=99)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 3
    assert [list(b.get_yticks()) for b in bars[1:]] == [[-1, 0, 1], [0, 0.5, 1]]
    assert "the 99th percentile of |value|" in fig._suptitle.get_text()
    assert "max |value|" in heatmap_grid(x, {"LRP": R}, clip=None)._suptitle.get_text()


def test_overlay_is_transparent_where_the_map_is_zero():
    x, R, _ = images_and_maps()
    R[1] = 0.0
    fig = heatmap_grid(x, {"LRP": R}, overlay=True)
    ax = [a for a in fig.axes if a.images and a.get_label() != "<colorbar>"][4]  # row 1, image 1
    grey, heat = ax.images
    assert np.all(np.asarray(heat.get_array())[..., 3] == 0)


def test_labels_do_not_collide():
    """Every text (titles, row labels, colour-bar ticks, the suptitle) is clear of every other
    text and of every image."""
    x, R, S = images_and_maps()
    maps = {"gradient x input": R, "EpsilonAlpha2Beta1Flat": R, "SA": S, "LRP-0": R}
    fig = heatmap_grid(x, maps, titles=["Ankle boot", "Pullover", "T-shirt/top"], title="four methods")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent"))
             if t.get_text() and t.get_visible()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    images = [ax.get_window_extent(renderer) for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(texts) > 20
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            assert not a.overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
        for box in images:
            assert not a.overlaps(box), texts[i].get_text()
    width, height = fig.get_size_inches() * fig.dpi
    assert width >= 500 and all(b.x0 >= 0 and b.x1 <= width and b.y0 >= 0 and b.y1 <= height for b in boxes)


def test_bad_maps_are_refused():
    x, R, S = images_and_maps()
    with pytest.raises(MinilrpError, match="do not fit"):
        heatmap_grid(x, {"LRP": R[:2]})
    with pytest.raises(MinilrpError, match="NaN"):
        heatmap_grid(x, {"LRP": np.full_like(R, np.nan)})
    with pytest.raises(MinilrpError, match="signed"):
        heatmap_grid(x, {"LRP": R}, signed={"LRP": False})
    with pytest.raises(MinilrpError, match="at least one"):
        heatmap_grid(x, {})
