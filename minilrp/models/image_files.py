"""A user's image file (PNG, JPEG, ...) to a network's input size and channels.

Shared by ``python -m minilrp.demo --images my.png`` and the playground's upload. Pillow
decodes; the size is checked before any pixel is decoded, so a small file that claims a huge
image (a decompression bomb) is refused instead of filling memory.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import MinilrpError

MAX_PIXELS = 40_000_000  # width x height a picture may claim (a 40 Mpx photo still loads)


def read_image_file(source, input_shape, name=None, max_pixels=MAX_PIXELS):
    """source: a path or a binary file object (``name`` names it in messages); input_shape: the network's (C, H, W) with
    C = 1 (grey) or 3 (RGB). -> (pixels (C, H, W) float64 in [0, 1], a note of what was done).

    The picture is converted to grey or RGB and resized (bilinear) to H x W. A grey picture
    whose mean is above 1/2 is inverted: Fashion-MNIST (and MNIST) show light objects on
    black, and a drawing or photo on white paper would otherwise be read as its negative.
    Raises MinilrpError for a missing, unreadable or oversized picture."""
    from PIL import Image, UnidentifiedImageError
    C, H, W = input_shape
    if C not in (1, 3):
        raise MinilrpError(f"pictures become 1 (grey) or 3 (RGB) channels; the network takes {C}")
    name = name or str(getattr(source, "name", source))
    try:
        with Image.open(source) as im:
            size = im.size
            if size[0] * size[1] > max_pixels:
                raise MinilrpError(f"{name}: a {size[0]}x{size[1]} picture is too large "
                                   f"(at most {max_pixels:,} pixels)")
            im = im.convert("L" if C == 1 else "RGB")
            im = im.resize((W, H), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float64) / 255
    except FileNotFoundError:
        raise MinilrpError(f"image file {name} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise MinilrpError(f"cannot read {name} as an image ({e})") from None
    a = a[None] if C == 1 else a.transpose(2, 0, 1)
    note = f"{os.path.basename(name)}: {size[0]}x{size[1]} {'to grey' if C == 1 else 'RGB'}, resized to {W}x{H}"
    if C == 1 and a.mean() > 0.5:
        a = 1 - a
        note += ", inverted (light background; the model expects light objects on black)"
    return a, note
