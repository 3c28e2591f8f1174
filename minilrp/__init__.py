"""minilrp: a from-scratch NumPy engine that explains image classifiers.

    import minilrp
    net = minilrp.load_model("fmnist-cnn")
    images, labels, classes = minilrp.load_samples()
    x = net.preprocess(images[:8])
    probs, pred = net.predict(x)
    R = net.relevance(x, "EpsilonGammaBox")            # LRP heatmaps, (8, 1, 28, 28)
    S = minilrp.sensitivity.sa(net, x)                 # SA maps, (8, 28, 28)

The folders tell the story (README, "Layout"): ``engine/`` runs the network, ``explain/``
holds the readable LRP rules, composites, ledger and SA, ``fast/`` a faster implementation of
the same rules, ``evaluate/`` region perturbation, ``pictures/`` heatmaps and reports,
``models/`` the weight format, bundled models and importers, ``teaching/`` the exercises.
The names a user types live here: ``minilrp.Epsilon``, ``minilrp.Composite``, and the
modules ``minilrp.rules``, ``minilrp.composites``, ``minilrp.sensitivity``,
``minilrp.perturbation``, ``minilrp.sanity``, ``minilrp.render``, ... (``from minilrp import rules``).
"""
import importlib

from .errors import MinilrpError, WeightFileError
from .engine.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU
from .engine.network import Network
from .explain.composites import PRESETS, Composite, get_composite
from .explain.rules import (LRP0, AlphaBeta, Epsilon, Flat, Gamma, Proportional, Rule, WinnerTakeAll,
                            WSquare, ZBox, ZPlus)
from .models.io import load, save
from .models.data import available_models, load_model, load_samples

__version__ = "0.1.0"

# Modules reachable as minilrp.<name>, imported on first use (matplotlib and friends load
# only when a picture is asked for).
_MODULES = {
    "layers": ".engine.layers", "kernels": ".engine.kernels", "network": ".engine.network",
    "rules": ".explain.rules", "composites": ".explain.composites", "ledger": ".explain.ledger",
    "sensitivity": ".explain.sensitivity", "perturbation": ".evaluate.perturbation",
    "render": ".pictures.render", "plots": ".pictures.plots", "report": ".pictures.report",
    "io": ".models.io", "data": ".models.data", "importers": ".models.importers",
    "images": ".models.images", "statedict": ".models.statedict",
    "sanity": ".evaluate.sanity", "similarity": ".evaluate.similarity",
}


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(_MODULES[name], __name__)
    raise AttributeError(f"module 'minilrp' has no attribute {name!r}")


__all__ = ["MinilrpError", "WeightFileError", "Dense", "Conv2d", "MaxPool2d", "AvgPool2d",
           "ReLU", "Flatten", "Network", "Rule", "Epsilon", "LRP0", "Gamma", "AlphaBeta", "ZPlus",
           "ZBox", "WSquare", "Flat", "WinnerTakeAll", "Proportional", "Composite", "PRESETS",
           "get_composite", "load", "save", "available_models", "load_model", "load_samples",
           *_MODULES]
