"""Image sets: numbered images from the bundled sample, a folder of picture files, an ``.npy``
array or the IDX files of MNIST-style data sets, read a slice at a time.

    images = open_images("fashion-mnist", net)   # the 10,000 test images of the Debian package
    raw = images.read(1000, 1500)                # (500, 28, 28) uint8: net.preprocess(raw)
    images.labels                                # (10000,) int64, or None where the source has none

Nothing but the slice asked for is held in memory (``.npy`` and uncompressed IDX files are
memory-mapped; a gzipped IDX file is decompressed once per process), so a data set of 50,000
images can be evaluated in bounded memory. An image set is picklable and small: it is what a
worker process receives, and it reopens its files there.

Sources (``open_images(spec, net)``):

- ``"bundled"``: the first 1000 Fashion-MNIST test images shipped with minilrp, with labels;
- ``"fashion-mnist"`` / ``"fashion-mnist:train"``: the IDX files of the Debian package
  ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), with labels;
- a path to an IDX image file (``*-idx3-ubyte``, optionally ``.gz``): labels from the sibling
  ``*-idx1-ubyte`` file when there is one;
- a path to an ``.npy`` file: (N, H, W) or (N, C, H, W), uint8 in [0, 255] or floats in [0, 1];
  labels from ``labels=`` (an ``.npy`` of N ints);
- a folder of picture files (PNG, JPEG, ...; searched recursively, in sorted path order),
  converted as the demo converts them (to the model's channels and size; grey images whose
  border is mostly light are inverted to Fashion-MNIST's light-on-black); labels when every file
  sits in a sub-folder named after one of the model's classes.

Every source is checked when opened (shapes against the model, every picture file's header),
and a file that turns out unreadable later raises a MinilrpError naming it.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import MinilrpError
from .images import IMAGE_SUFFIXES, load_image

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


class ImageSet:
    """N numbered raw images. ``read(start, stop)`` -> uint8 (n, H, W) / (n, C, H, W) or floats
    in [0, 1] (n, C, H, W), ready for ``net.preprocess``; ``labels``: (N,) int64 or None;
    ``description``: what a report says about them; ``fingerprint``: changes when the images
    do (a resumed run checks it)."""

    description = "images"
    labels = None

    def __len__(self):
        raise NotImplementedError

    def read(self, start, stop) -> np.ndarray:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash of the count, the shape and up to 16 evenly spaced images: cheap for 50,000
        images, and it changes when a different set is behind the same name."""
        h = hashlib.sha256(f"{type(self).__name__} {len(self)}".encode())
        for i in np.unique(np.linspace(0, len(self) - 1, 16).astype(np.int64)):
            a = np.ascontiguousarray(self.read(int(i), int(i) + 1))
            h.update(f"{a.dtype} {a.shape}".encode())
            h.update(a.tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def _range(self, start, stop):
        if not 0 <= start <= stop <= len(self):
            raise MinilrpError(f"images {start}..{stop} out of range: the set has {len(self)}")


class ArrayImages(ImageSet):
    """Images in an array, or in an ``.npy`` file opened memory-mapped in each process."""

    def __init__(self, array=None, path=None, labels=None, description=None, check_range=True):
        self.path, self._array = path, array
        a = self._data()
        if a.dtype != np.uint8 and a.dtype.kind != "f":
            raise MinilrpError(f"{self._what()}: images must be uint8 (0..255) or floats in [0, 1], got {a.dtype}")
        if a.ndim not in (3, 4) or a.shape[0] == 0:
            raise MinilrpError(f"{self._what()}: images must be shaped (N, H, W) or (N, C, H, W) with "
                               f"N >= 1, got {a.shape}")
        self.labels = _labels(labels, len(a), self._what())
        self.description = description or f"{len(a)} images from {path or 'an array'}"

    def _what(self):
        return self.path or "the image array"

    def _data(self):
        if self._array is None:
            try:
                self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise MinilrpError(f"cannot read {self.path} as a .npy array ({e})") from None
        return self._array

    def __getstate__(self):  # sent to another process: the path, not the (mapped) data
        state = dict(self.__dict__)
        if self.path is not None:
            state["_array"] = None
        return state

    def __len__(self):
        return len(self._data())

    def read(self, start, stop):
        self._range(start, stop)
        a = np.array(self._data()[start:stop])
        if a.dtype.kind == "f":
            bad = ~(np.isfinite(a) & (a >= 0) & (a <= 1)).reshape(len(a), -1).all(axis=1)
            if bad.any():
                raise MinilrpError(f"{self._what()}: image {start + int(np.argmax(bad))} has values "
                                   "outside [0, 1] (float images must be scaled to [0, 1])")
        return a


class IdxImages(ArrayImages):
    """An IDX image file (MNIST's format: magic 0x00000803, uint8, big-endian sizes), gzipped or
    not, with the labels of its sibling ``*-idx1-ubyte`` file when there is one."""

    def __init__(self, path, description=None):
        self.path, self._array = str(path), None
        labels_path = _sibling_labels(self.path)
        labels = _read_idx(labels_path, 1) if labels_path else None
        super().__init__(path=self.path, labels=labels, description=description or (
            f"{len(self._data())} images from the IDX file {self.path}"
            + (f" (labels: {labels_path})" if labels_path else " (no labels file)")))

    def _data(self):
        if self._array is None:
            self._array = _read_idx(self.path, 3)
        return self._array


class FolderImages(ImageSet):
    """Picture files under a folder, in sorted path order, converted for the model's input."""

    def __init__(self, folder, net):
        self.folder = str(folder)
        if len(net.input_shape) != 3:
            raise MinilrpError(f"picture files need a model with image inputs (C, H, W); it takes {net.input_shape}")
        self.input_shape, self.name = net.input_shape, self.folder  # what load_image reads of a net
        root = Path(folder)
        self.files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise MinilrpError(f"{folder}: no picture files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        from PIL import Image, UnidentifiedImageError
        for f in self.files:  # every header now: a bad file stops the run before any work
            try:
                with Image.open(root / f) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise MinilrpError(f"cannot read {root / f} as an image ({e})") from None
        names = {c.lower(): k for k, c in enumerate(net.classes)}
        first = [Path(f).parts[0].lower() if len(Path(f).parts) > 1 else None for f in self.files]
        if all(d in names for d in first):
            self.labels = np.array([names[d] for d in first], np.int64)
        self.description = (f"{len(self.files)} picture files under {self.folder}"
                            + (" (labels: their class folders)" if self.labels is not None else " (no labels)")
                            + ", converted to the model's channels and size as the demo does")

    def __len__(self):
        return len(self.files)

    def read(self, start, stop):
        self._range(start, stop)
        out = np.empty((stop - start,) + self.input_shape)
        for i, f in enumerate(self.files[start:stop]):
            out[i] = load_image(os.path.join(self.folder, f), self)[0]
        return out

    def fingerprint(self):
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f} {os.path.getsize(os.path.join(self.folder, f))}\n".encode())
        return h.hexdigest()[:16]


def _labels(labels, N, what):
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        try:
            labels = np.load(labels, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise MinilrpError(f"cannot read the labels {labels} as a .npy array ({e})") from None
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu" or lab.shape != (N,):
        raise MinilrpError(f"labels for {what} must be {N} ints, got {lab.dtype} {lab.shape}")
    return lab.astype(np.int64)


def _sibling_labels(path):
    name = os.path.basename(path)
    if "idx3" not in name:
        return None
    for cand in (name.replace("images", "labels").replace("idx3", "idx1"),):
        for suffix in ("", ".gz"):
            p = os.path.join(os.path.dirname(path), cand.removesuffix(".gz") + suffix)
            if p != path and os.path.exists(p):
                return p
    return None


def _read_idx(path, ndim):
    """An IDX file (optionally gzipped) -> a uint8 array with ``ndim`` dimensions (3: images
    (N, H, W), 1: labels (N,)); uncompressed files are memory-mapped."""
    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
            if len(head) < 4 + 4 * ndim or head[:2] != b"\0\0" or head[2] != 0x08 or head[3] != ndim:
                raise MinilrpError(f"{path} is not an IDX file of uint8 with {ndim} dimension(s) "
                                   f"(magic bytes {head[:4].hex()})")
            shape = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
            count = int(np.prod(shape))
            if opener is open:
                size = os.path.getsize(path)
                if size < len(head) + count:
                    raise MinilrpError(f"{path} is truncated: {size - len(head)} of {count} bytes of data")
                return np.memmap(path, np.uint8, "r", offset=len(head), shape=shape)
            data = f.read(count)
    except FileNotFoundError:
        raise MinilrpError(f"{path} does not exist") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise MinilrpError(f"cannot read {path} as an IDX file ({e})") from None
    if len(data) < count:
        raise MinilrpError(f"{path} is truncated: {len(data)} of {count} bytes of data")
    return np.frombuffer(data, np.uint8).reshape(shape)


class _Bundled(ArrayImages):
    def __init__(self):
        from .data import load_samples
        images, labels, _ = load_samples()
        super().__init__(images, labels=labels, description=(
            f"the {len(images)} bundled Fashion-MNIST test images (the first of the test set)"))

    def __getstate__(self):  # reloaded from the package in another process
        return {}

    def __setstate__(self, state):
        self.__init__()


def open_images(spec="bundled", net=None, labels=None) -> ImageSet:
    """An image set from a source name or path (see the module's docstring), checked against
    ``net`` (its input shape) when given. labels: an ``.npy`` file or array of ints for an
    ``.npy`` source."""
    spec = str(spec)
    if spec == "bundled":
        images = _Bundled()
    elif spec in ("fashion-mnist", "fashion-mnist:test", "fashion-mnist:train"):
        part = "train" if spec.endswith("train") else "t10k"
        path = os.path.join(FASHION_MNIST, f"{part}-images-idx3-ubyte.gz")
        if not os.path.exists(path):
            raise MinilrpError(f"{path} not found: install Fashion-MNIST with "
                               "`apt-get install dataset-fashion-mnist`, or give a path")
        images = IdxImages(path, description=(
            f"the Fashion-MNIST {'training' if part == 'train' else 'test'} set "
            f"({part}-images-idx3-ubyte.gz of the Debian package dataset-fashion-mnist, with labels)"))
    elif os.path.isdir(spec):
        if net is None:
            raise MinilrpError("a folder of picture files needs the model (to convert them)")
        images = FolderImages(spec, net)
    elif spec.endswith(".npy"):
        if not os.path.exists(spec):
            raise MinilrpError(f"{spec} does not exist")
        images = ArrayImages(path=spec, labels=labels)
    elif "idx3-ubyte" in os.path.basename(spec):
        images = IdxImages(spec)
    elif not os.path.exists(spec):
        raise MinilrpError(f"image source {spec!r} not found: give 'bundled', 'fashion-mnist', a "
                           "folder of pictures, an .npy file or an IDX (*-idx3-ubyte[.gz]) file")
    else:
        raise MinilrpError(f"{spec}: not a folder, an .npy file or an IDX (*-idx3-ubyte[.gz]) file")
    if labels is not None and (type(images) is not ArrayImages):
        raise MinilrpError("labels= applies to .npy image files only (the other sources carry their own)")
    if net is not None:
        _check_fits(images, net)
    return images


def _check_fits(images, net):
    if len(net.input_shape) != 3:
        raise MinilrpError(f"image sets need a model with image inputs (C, H, W); it takes {net.input_shape}")
    first = images.read(0, 1)
    try:
        net.preprocess(first)
    except MinilrpError as e:
        raise MinilrpError(f"{images.description}: {e}") from None
    if images.labels is not None and images.labels.size and (
            images.labels.min() < 0 or images.labels.max() >= net.n_classes):
        raise MinilrpError(f"{images.description}: labels must lie in 0..{net.n_classes - 1} (the "
                           f"model's classes), found {images.labels.min()}..{images.labels.max()}")
