"""Rendering conventions: colours of known pixels, symmetric scaling, PNG output."""
import numpy as np
import pytest

from minilrp import MinilrpError
from minilrp import render


def test_signed_colours_and_symmetric_scaling():
    R = np.zeros((1, 1, 2, 2))
    R[0, 0, 0, 0] = 2.0    # the positive maximum
    R[0, 0, 0, 1] = -1.0   # half the scale, negative
    rgb = render.signed_rgb(R)
    np.testing.assert_allclose(rgb[0, 0, 0], [1, 0, 0], atol=1e-6)            # red
    np.testing.assert_allclose(rgb[0, 1, 0], [1, 0.996, 0.996], atol=5e-3)   # zero: white
    assert rgb[0, 0, 1, 2] > rgb[0, 0, 1, 0] and rgb[0, 0, 1, 2] == pytest.approx(1.0)  # blue-ish
    # symmetric: -2 would be pure blue, so -1 sits half way (not the blue end)
    R[0, 0, 0, 1] = -2.0
    np.testing.assert_allclose(render.signed_rgb(R)[0, 0, 1], [0, 0, 1], atol=1e-6)
    # scaling is per image: doubling one image's map changes nothing
    np.testing.assert_allclose(render.signed_rgb(3 * R), render.signed_rgb(R))


def test_robust_scaling_clips():
    R = np.zeros((1, 1, 10, 10))
    R[0, 0, 0, 0] = 100.0
    R[0, 0, 1:3] = 1.0
    plain, robust = render.signed_rgb(R), render.signed_rgb(R, robust=95)
    assert plain[0, 1, 0, 1] > 0.9       # pale: 1/100 of the scale
    np.testing.assert_allclose(robust[0, 1, 0], [1, 0, 0], atol=1e-6)  # saturated red


def test_unsigned_from_zero():
    S = np.array([[[0.0, 1.0], [0.5, 0.25]]])
    rgb = render.unsigned_rgb(S)
    assert rgb[0, 0, 0].sum() > rgb[0, 1, 0].sum() > rgb[0, 0, 1].sum()  # darker with value
    with pytest.raises(MinilrpError, match="non-negative"):
        render.unsigned_rgb(-S)


def test_channel_reduction():
    m = np.arange(8.0).reshape(1, 2, 2, 2)
    np.testing.assert_allclose(render.reduce_channels(m, "sum"), m.sum(1))
    np.testing.assert_allclose(render.reduce_channels(m, "norm"), np.sqrt((m ** 2).sum(1)))
    with pytest.raises(MinilrpError):
        render.reduce_channels(m, "max")
    with pytest.raises(MinilrpError, match="NaN"):
        render.signed_rgb(np.full((1, 2, 2), np.nan))


def test_png_files(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (2, 1, 6, 6))
    img = render.image_rgb(x, [0.0], [1.0])
    np.testing.assert_allclose(img[..., 0], x[:, 0])
    render.save_png(img[0], tmp_path / "a.png")
    render.grid([("input", img), ("LRP", render.signed_rgb(x - 0.5))], ["a", "b"], path=tmp_path / "g.png")
    render.curves({"MoRF": (np.arange(5.0), np.arange(5.0) - 1, np.arange(5.0) + 1)}, path=tmp_path / "c.png")
    for name in ("a.png", "g.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
