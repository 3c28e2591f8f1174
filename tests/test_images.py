"""The image loader (minilrp/models/images.py) on real files written here with Pillow (and,
for the oversized cases, PNGs written byte by byte so no test holds 225 megapixels): bit
depths scaled, every mode converted, transparency flattened onto the model's background, and
oversized or broken pictures refused with one clear error."""
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from minilrp import Dense, Flatten, MinilrpError, Network
from minilrp.models.images import MAX_PIXELS, load_image


def net_for(C, H=28, W=28):
    """The loader reads only the model's input shape: a one-layer network of that shape."""
    return Network([Flatten(), Dense(C * H * W, 2, weight=np.zeros((2, C * H * W), np.float32))],
                   (C, H, W), name=f"net{C}x{H}x{W}")


GREY = net_for(1)


def png_by_hand(path, width, height, bit_depth=1):
    """A valid greyscale PNG of any size whose pixels are all 0, written chunk by chunk (the
    zero rows compress to almost nothing; no image is ever held in memory)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)
    z = zlib.compressobj()
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------
# bit depth
# ------------------------------------------------------------------------------------------
def object_with_141_levels():
    """A 28x28 16-bit picture: black, with an object drawn in 141 distinct grey levels spread
    over the whole 16-bit range (converting to 8 bits by clipping leaves two levels)."""
    a = np.zeros((28, 28), np.uint16)
    levels = np.linspace(300, 65535, 141).round().astype(np.uint16)
    a.reshape(-1)[100:241] = levels
    return a, levels


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    raw, levels = object_with_141_levels()
    Image.fromarray(raw).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    pixels, note = load_image(tmp_path / "deep.png", GREY)
    assert pixels.shape == (1, 28, 28)
    np.testing.assert_allclose(pixels[0], raw / 65535, rtol=0, atol=1e-12)
    assert len(np.unique(pixels[0].reshape(-1)[100:241])) == 141
    assert "16-bit, scaled by 1/65535" in note and "inverted" not in note


def test_16bit_big_endian_tiff_and_32bit_integers(tmp_path):
    raw, _ = object_with_141_levels()
    Image.frombytes("I;16B", (28, 28), raw.astype(">u2").tobytes()).save(tmp_path / "be.tif")
    assert Image.open(tmp_path / "be.tif").mode == "I;16B"
    pixels, _ = load_image(tmp_path / "be.tif", GREY)
    np.testing.assert_allclose(pixels[0], raw / 65535, rtol=0, atol=1e-12)
    # 32-bit integers within 0..65535 are a 16-bit picture; beyond, the scale is unknown
    Image.fromarray(raw.astype(np.int32)).save(tmp_path / "i32.tif")
    np.testing.assert_allclose(load_image(tmp_path / "i32.tif", GREY)[0][0], raw / 65535, atol=1e-12)
    Image.fromarray(raw.astype(np.int32) * 4).save(tmp_path / "big.tif")
    with pytest.raises(MinilrpError, match=r"big\.tif: 32-bit integer pixels range over \[0, 262140\]"):
        load_image(tmp_path / "big.tif", GREY)


def test_16bit_picture_resized_keeps_its_range(tmp_path):
    raw = np.full((56, 84), 0, np.uint16)
    raw[14:42, 21:63] = 50000
    Image.fromarray(raw).save(tmp_path / "big16.png")
    pixels, note = load_image(tmp_path / "big16.png", GREY)
    assert pixels.shape == (1, 28, 28) and "resized to 28x28" in note
    assert pixels[0, 14, 14] == pytest.approx(50000 / 65535, abs=1e-6)  # inside the object
    assert pixels[0, 1, 1] == 0 and pixels.max() <= 50000 / 65535 + 1e-9


def test_float_images_must_lie_in_unit_range(tmp_path):
    a = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    Image.fromarray(a, "F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(load_image(tmp_path / "f.tif", GREY)[0][0], a, atol=1e-7)
    Image.fromarray(a * 255, "F").save(tmp_path / "f255.tif")
    with pytest.raises(MinilrpError, match=r"float pixels range over \[0, 255\]; minilrp reads float images in \[0, 1\]"):
        load_image(tmp_path / "f255.tif", GREY)


# ------------------------------------------------------------------------------------------
# modes
# ------------------------------------------------------------------------------------------
def square(value, size=8, fill=0):
    """A uint8 size x size picture: `fill`, with the 4x4 centre square at `value`."""
    a = np.full((size, size), fill, np.uint8)
    a[2:6, 2:6] = value
    return a


def expected(value, size=8):
    return square(value, size).astype(np.float64) / 255


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "CMYK", "LA", "RGBA", "I;16"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_becomes_the_same_pixels(tmp_path, mode, channels):
    """A white square on black, saved in each mode, loads as the same pixels for a grey and
    an RGB model (CMYK via TIFF: JPEG would blur it)."""
    grey = Image.fromarray(square(255))
    im = grey.convert(mode) if mode != "I;16" else Image.fromarray(square(255).astype(np.uint16) * 257)
    path = tmp_path / f"sq.{'tif' if mode == 'CMYK' else 'png'}"
    im.save(path)
    assert Image.open(path).mode == mode
    pixels, note = load_image(path, net_for(channels, 8, 8))
    assert pixels.shape == (channels, 8, 8)
    np.testing.assert_allclose(pixels, np.repeat(expected(255)[None], channels, 0), atol=1e-12)
    assert f"{mode}" in note and "resized to 8x8" in note


def test_rgb_colours_become_luma_for_grey_models(tmp_path):
    a = np.zeros((8, 8, 3), np.uint8)
    a[2:6, 2:6] = (200, 100, 50)
    Image.fromarray(a).save(tmp_path / "c.png")
    pixels, note = load_image(tmp_path / "c.png", net_for(1, 8, 8))
    luma = round((200 * 299 + 100 * 587 + 50 * 114) / 1000) / 255  # ITU-R 601, as Pillow's "L"
    assert pixels[0, 3, 3] == pytest.approx(luma, abs=1 / 255) and pixels[0, 0, 0] == 0
    assert "to grey" in note
    np.testing.assert_allclose(load_image(tmp_path / "c.png", net_for(3, 8, 8))[0][:, 3, 3],
                               np.array([200, 100, 50]) / 255, atol=1e-12)


def test_light_background_is_inverted_as_before(tmp_path):
    Image.fromarray(square(20, fill=255)).save(tmp_path / "shirt.png")  # dark garment on white
    pixels, note = load_image(tmp_path / "shirt.png", net_for(1, 8, 8))
    np.testing.assert_allclose(pixels[0], 1 - square(20, fill=255) / 255, atol=1e-12)
    assert "inverted (light background" in note


# ------------------------------------------------------------------------------------------
# transparency
# ------------------------------------------------------------------------------------------
def rgba_garment(value, hidden=255):
    """A garment of grey `value` (opaque, with one half-transparent pixel) on a fully
    transparent background whose hidden colour is `hidden` (white, as many editors store it:
    ignoring alpha makes the background white)."""
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., :3] = hidden
    a[2:6, 2:6] = (value, value, value, 255)
    a[1, 1] = (value, value, value, 128)
    return a


def test_alpha_is_flattened_onto_the_models_black_background(tmp_path):
    Image.fromarray(rgba_garment(200)).save(tmp_path / "cut.png")
    pixels, note = load_image(tmp_path / "cut.png", net_for(1, 8, 8))
    want = np.zeros((8, 8))
    want[2:6, 2:6] = 200 / 255
    want[1, 1] = 200 / 255 * 128 / 255
    np.testing.assert_allclose(pixels[0], want, atol=1 / 255)
    assert pixels[0, 0, 0] == 0  # the hidden white never shows
    assert "transparency flattened onto the model's background (black)" in note
    assert "inverted" not in note
    # the same for an RGB model, and for LA and palette pictures with transparency
    rgb, _ = load_image(tmp_path / "cut.png", net_for(3, 8, 8))
    np.testing.assert_allclose(rgb, np.repeat(want[None], 3, 0), atol=1 / 255)
    Image.fromarray(rgba_garment(200)).convert("LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(load_image(tmp_path / "la.png", net_for(1, 8, 8))[0][0], want, atol=1 / 255)


def test_palette_and_colour_key_transparency(tmp_path):
    p = Image.fromarray(square(1, fill=0), "P")        # index 1 = the garment, 0 = background
    p.putpalette([255, 255, 255, 180, 180, 180] + [0] * 762)
    p.save(tmp_path / "p.png", transparency=0)
    pixels, note = load_image(tmp_path / "p.png", net_for(1, 8, 8))
    np.testing.assert_allclose(pixels[0], expected(180), atol=1e-12)
    assert "flattened" in note
    Image.fromarray(square(180, fill=255)).save(tmp_path / "key.png", transparency=255)  # L + tRNS
    pixels, note = load_image(tmp_path / "key.png", net_for(1, 8, 8))
    np.testing.assert_allclose(pixels[0], expected(180), atol=1e-12)
    assert "flattened" in note and "inverted" not in note


def test_dark_cut_out_object_is_inverted_then_flattened(tmp_path):
    Image.fromarray(rgba_garment(40, hidden=0)).save(tmp_path / "dark.png")
    pixels, note = load_image(tmp_path / "dark.png", net_for(1, 8, 8))
    assert pixels[0, 3, 3] == pytest.approx(1 - 40 / 255, abs=1e-12) and pixels[0, 0, 0] == 0
    assert "the object inverted" in note and "flattened onto the model's background (black)" in note


def test_opaque_alpha_channel_counts_as_no_transparency(tmp_path):
    a = np.dstack([square(20, fill=255)] * 3 + [np.full((8, 8), 255, np.uint8)])
    Image.fromarray(a).save(tmp_path / "opaque.png")
    pixels, note = load_image(tmp_path / "opaque.png", net_for(1, 8, 8))
    np.testing.assert_allclose(pixels[0], 1 - square(20, fill=255) / 255, atol=1e-12)
    assert "flattened" not in note and "inverted (light background" in note


def test_background_is_a_parameter(tmp_path):
    Image.fromarray(rgba_garment(200)).save(tmp_path / "cut.png")
    pixels, note = load_image(tmp_path / "cut.png", net_for(3, 8, 8), background=1.0)
    assert pixels[:, 0, 0].tolist() == [1.0, 1.0, 1.0] and "(white)" in note
    with pytest.raises(MinilrpError, match="background must be 1 or 3 values in"):
        load_image(tmp_path / "cut.png", net_for(3, 8, 8), background=(0.0, 2.0, 0.0))


# ------------------------------------------------------------------------------------------
# size, broken files, odd models
# ------------------------------------------------------------------------------------------
def test_decompression_bomb_refused_in_one_line(tmp_path):
    path = png_by_hand(tmp_path / "huge.png", 15000, 15000)
    with pytest.raises(MinilrpError) as e:
        load_image(path, GREY)
    assert str(e.value) == (f"{path}: 225,000,000 pixels is more than the limit of {MAX_PIXELS:,} "
                            "pixels (Pillow refuses it as a possible decompression bomb); "
                            "downscale it first")


def test_above_our_limit_refused_before_decoding(tmp_path):
    path = png_by_hand(tmp_path / "large.png", 8000, 7000)  # 56 MP: below Pillow's guard
    with pytest.raises(MinilrpError, match=r"large\.png: 8000x7000 = 56,000,000 pixels is more "
                                           r"than the limit of 50,000,000 pixels; downscale it first"):
        load_image(path, GREY)
    Image.fromarray(square(255, size=40)).save(tmp_path / "small.png")
    with pytest.raises(MinilrpError, match=r"40x40 = 1,600 pixels is more than the limit of 1,000"):
        load_image(tmp_path / "small.png", GREY, max_pixels=1000)
    assert load_image(tmp_path / "small.png", GREY, max_pixels=1600)[0].shape == (1, 28, 28)


def test_broken_and_missing_files(tmp_path):
    Image.fromarray(square(255, size=64)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(MinilrpError, match=r"cannot read .*cut\.png as an image"):
        load_image(tmp_path / "cut.png", GREY)
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(MinilrpError, match=r"cannot read .*text\.png as an image \(UnidentifiedImageError"):
        load_image(tmp_path / "text.png", GREY)
    with pytest.raises(MinilrpError, match=r"image file .*nope\.png does not exist"):
        load_image(tmp_path / "nope.png", GREY)


def test_models_without_picture_input_refused(tmp_path):
    Image.fromarray(square(255)).save(tmp_path / "sq.png")
    flat = Network([Dense(4, 2, weight=np.zeros((2, 4), np.float32))], (4,), name="flat")
    with pytest.raises(MinilrpError, match=r"picture files need a model with 1 or 3 input channels"):
        load_image(tmp_path / "sq.png", flat)


def test_exif_orientation_and_animation_are_applied_and_said(tmp_path):
    a = np.zeros((4, 8), np.uint8)  # 8 wide, 4 high: a bar in the top-left corner
    a[0, :2] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "turned.png", exif=exif)
    pixels, note = load_image(tmp_path / "turned.png", net_for(1, 8, 4))
    np.testing.assert_allclose(pixels[0], np.rot90(a, -1) / 255, atol=1e-12)
    assert "turned upright (EXIF orientation 6)" in note
    frames = [Image.fromarray(square(v)) for v in (255, 100)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    pixels, note = load_image(tmp_path / "anim.gif", net_for(1, 8, 8))
    np.testing.assert_allclose(pixels[0], expected(255), atol=1e-12)
    assert "first of 2 frames" in note


@pytest.mark.slow
def test_demo_refuses_a_huge_png_in_one_line_and_reads_16bit(tmp_path):
    """The demo (a subprocess, as a user runs it) uses this loader: one line, exit 2."""
    huge = png_by_hand(tmp_path / "huge.png", 15000, 15000)
    r = subprocess.run([sys.executable, "-m", "minilrp.demo", "--images", str(huge), "--quick",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"minilrp.demo: error: {huge}: 225,000,000 pixels is more than the limit of 50,000,000 "
        "pixels (Pillow refuses it as a possible decompression bomb); downscale it first"]
    raw, _ = object_with_141_levels()
    Image.fromarray(raw).save(tmp_path / "deep.png")
    r = subprocess.run([sys.executable, "-m", "minilrp.demo", "--images", str(tmp_path / "deep.png"),
                        "--quick", "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "note: deep.png: 28x28 I;16, 16-bit, scaled by 1/65535, resized to 28x28" in r.stdout
