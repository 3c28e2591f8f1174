"""minilrp: a from-scratch NumPy engine that explains image classifiers.

    from minilrp import load_model, load_samples
    net = load_model("fmnist-cnn")
    images, labels, classes = load_samples()
    probs, pred = net.predict(net.preprocess(images[:8]))
"""
from .errors import MinilrpError, WeightFileError
from .layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU
from .network import Network
from .io import load, save
from .data import available_models, load_model, load_samples

__version__ = "0.1.0"
__all__ = ["MinilrpError", "WeightFileError", "Dense", "Conv2d", "MaxPool2d", "AvgPool2d",
           "ReLU", "Flatten", "Network", "load", "save", "available_models", "load_model",
           "load_samples"]
