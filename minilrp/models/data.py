"""Bundled models and sample images (shipped inside the package: no download at run time).

The files live in the repository's ``weights/`` folder, installed as the package
``minilrp.weights``; see weights/README.md for their provenance and the dataset licence.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import MinilrpError
from .io import load

SAMPLES_FILE = "fashion_mnist_test_1000.npz"


def _folder():
    try:  # installed (editable or not): the package minilrp.weights
        return resources.files("minilrp.weights")
    except ModuleNotFoundError:  # a source checkout on sys.path without installing
        return Path(__file__).resolve().parents[2] / "weights"


def available_models() -> list[str]:
    """Names of the bundled models (e.g. 'fmnist-cnn')."""
    return sorted(p.name[:-4] for p in _folder().iterdir()
                  if p.name.endswith(".npz") and p.name != SAMPLES_FILE)


def model_path(name: str) -> str:
    """Path of a bundled model's weight file."""
    if name not in available_models():
        raise MinilrpError(f"unknown model {name!r}; bundled models: {', '.join(available_models())}")
    return str(_folder() / f"{name}.npz")


def load_model(name_or_path: str, dtype=None):
    """A bundled model by name, or any minilrp ``.npz`` by path."""
    if os.path.sep in str(name_or_path) or str(name_or_path).endswith(".npz"):
        return load(name_or_path, dtype=dtype)
    return load(model_path(name_or_path), dtype=dtype)


def load_samples():
    """The first 1000 Fashion-MNIST test images: (images uint8 (1000, 28, 28),
    labels int64 (1000,), class names)."""
    with np.load(str(_folder() / SAMPLES_FILE), allow_pickle=False) as f:
        return f["images"], f["labels"].astype(np.int64), [str(c) for c in f["classes"]]
