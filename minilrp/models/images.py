"""Picture files -> a model's raw pixels: the one image loader (the demo uses it).

    from minilrp.models.images import load_image
    pixels, note = load_image("shirt.png", net)      # (C, H, W) floats in [0, 1]
    x = net.preprocess(pixels[None])                 # the network's input space

What a user's picture needs before a model trained on Fashion-MNIST can judge it, each step
said in the returned note (nothing is done silently):

- **Bit depth.** 8-bit pixels are divided by 255, 16-bit greyscale (PNG/TIFF, Pillow's
  ``I;16`` modes, or ``I`` with values in 0..65535) by 65535: *scaled*, never clipped, so an
  object drawn with 141 grey levels keeps 141 levels. Float images (``F``) must already lie
  in [0, 1].
- **Modes.** Greyscale, RGB, palette, CMYK, bilevel, with or without alpha; converted to the
  model's channels (grey: Pillow's ITU-R 601 luma; a grey picture for an RGB model is
  repeated over the three channels).
- **Transparency** (an alpha channel, or a palette/colour-key transparency that is used) is
  flattened onto ``background``, the value of the model's training background in [0, 1]
  pixel space: 0 (black) for the bundled models, whose Fashion-MNIST garments are light on
  black. Resizing happens before flattening, on premultiplied alpha (Pillow's own), so
  transparent pixels' hidden colours never bleed in.
- **Light objects on the model's background** (one-channel models, as the existing demo
  did): an opaque picture whose average is nearer the opposite of ``background`` (a garment
  photographed on white) is inverted; in a picture with transparency the background is
  known, so only an object nearer the background than its opposite (a dark garment cut out)
  is inverted, before flattening.
- **Size.** Resized to the model's input size (bilinear). A picture above ``max_pixels``
  (default 50 megapixels, more than a 48-megapixel phone photo) is refused with an error
  naming its size and the limit, before it is decoded; so is anything Pillow's own
  decompression-bomb guard stops.
- EXIF orientation is applied; of an animated picture the first frame is used.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import MinilrpError

MAX_PIXELS = 50_000_000
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def load_image(path, net, background=0.0, max_pixels=MAX_PIXELS):
    """A picture file -> (pixels (C, H, W) float64 in [0, 1] for ``net``, a one-line note of
    everything done to it). Raises MinilrpError naming the file and the problem."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    shape = tuple(net.input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise MinilrpError(f"picture files need a model with 1 or 3 input channels (C, H, W); "
                           f"{net.name} takes {shape}")
    C, H, W = shape
    bg = np.asarray(background, np.float64).reshape(-1)
    if bg.size not in (1, C) or not np.all((bg >= 0) & (bg <= 1)):
        raise MinilrpError(f"background must be 1 or {C} values in [0, 1], got {background!r}")
    bg = np.broadcast_to(bg.reshape(-1, 1, 1), (C, 1, 1))
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; ours (max_pixels) decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise MinilrpError(f"{w}x{h} = {w * h:,} pixels is more than the "
                                       f"limit of {max_pixels:,} pixels; downscale it first")
                notes = [f"{name}: {w}x{h} {im.mode}"]
                if getattr(im, "n_frames", 1) > 1:
                    notes.append(f"first of {im.n_frames} frames")
                orientation = im.getexif().get(0x0112, 1)  # the EXIF Orientation tag
                if orientation not in (1, None):
                    notes.append(f"turned upright (EXIF orientation {orientation})")
                colour, alpha = _to_float(ImageOps.exif_transpose(im), C, (W, H), notes)
    except FileNotFoundError:
        raise MinilrpError(f"image file {path} does not exist") from None
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
        raise MinilrpError(f"{path}: {size} is more than the limit of {max_pixels:,} pixels "
                           "(Pillow refuses it as a possible decompression bomb); downscale "
                           "it first") from None
    except MinilrpError as e:
        raise MinilrpError(f"{path}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MinilrpError(f"cannot read {path} as an image ({type(e).__name__}: {e})") from None
    notes.append(f"resized to {W}x{H}")
    if C == 1 and alpha is not None and alpha.any():
        obj = float((alpha * colour).sum() / max(alpha.sum(), 1e-12))
        if abs(obj - bg[0, 0, 0]) < 0.5:
            colour = 1 - colour
            notes.append("the object inverted (it is near the model's background in tone; the "
                         "model expects objects that contrast with it, light on black here)")
    if alpha is not None:
        colour = alpha * colour + (1 - alpha) * bg
        notes.append(f"transparency flattened onto the model's background ({_tone(bg)})")
    elif C == 1 and abs(colour.mean() - bg[0, 0, 0]) > 0.5:
        colour = 1 - colour
        notes.append(f"inverted (light background; the model expects objects on {_tone(bg)})")
    return np.clip(colour, 0.0, 1.0), ", ".join(notes)


def _to_float(im, C, size, notes):
    """The picture resized to ``size`` as (colour (C, H, W), alpha (1, H, W) or None), floats
    in [0, 1]. 16-bit and float pixels are resized in float, 8-bit ones in Pillow's modes."""
    from PIL import Image
    mode = im.mode
    if im.mode in _SIXTEEN_BIT or im.mode in ("I", "F"):
        im = im.convert("F")  # exact for 16- and 32-bit integers up to 2**24
        lo, hi = im.getextrema()
        if mode == "F":
            if lo < 0 or hi > 1:
                raise MinilrpError(f"float pixels range over [{lo:g}, {hi:g}]; minilrp reads "
                                   "float images in [0, 1] only")
            scale = 1.0
        elif lo < 0 or hi > 65535:
            raise MinilrpError(f"32-bit integer pixels range over [{lo:g}, {hi:g}]: not a "
                               "16-bit image, so their scale is unknown")
        else:
            scale = 65535.0
            notes.append("16-bit, scaled by 1/65535")
        grey = np.asarray(im.resize(size, Image.BILINEAR), np.float64) / scale
        if C == 3:
            notes.append("grey repeated over RGB")
        return np.repeat(grey[None], C, axis=0), None
    if C == 1 and im.mode not in ("1", "L", "LA", "La"):
        notes.append("to grey")
    has_alpha = im.mode in _ALPHA_MODES or "transparency" in im.info or \
        (im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA")
    if has_alpha:
        im = im.convert("RGBA")
        if im.getextrema()[3][0] == 255:  # an alpha channel that hides nothing
            has_alpha = False
    elif im.mode not in ("1", "L", "P", "RGB"):  # CMYK, YCbCr, LAB, HSV: through RGB
        im = im.convert("RGB")
    target = ("L" if C == 1 else "RGB") + ("A" if has_alpha else "")
    a = np.asarray(im.convert(target).resize(size, Image.BILINEAR), np.float64) / 255
    a = a[:, :, None] if a.ndim == 2 else a
    a = a.transpose(2, 0, 1)
    return (a[:C], a[C:]) if has_alpha else (a, None)


def _tone(bg):
    v = float(bg.mean())
    return "black" if v == 0 else "white" if v == 1 else f"{v:g}"
