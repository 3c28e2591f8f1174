"""The same network in PyTorch, for peer benchmarks (torch is a tool dependency only)."""
import numpy as np

from minilrp import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU


def to_torch(net, dtype=None):
    """A torch.nn.Sequential computing exactly what ``net`` computes (eval mode)."""
    import torch
    from torch import nn
    mods = []
    for layer in net.layers:
        if isinstance(layer, Conv2d):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, bias=layer.bias is not None)
        elif isinstance(layer, Dense):
            m = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        elif isinstance(layer, MaxPool2d):
            m = nn.MaxPool2d(layer.kernel_size, layer.stride)
        elif isinstance(layer, AvgPool2d):
            m = nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, ReLU):
            m = nn.ReLU()
        elif isinstance(layer, Flatten):
            m = nn.Flatten()
        else:
            raise TypeError(layer)
        with torch.no_grad():
            for name, p in layer.params().items():
                getattr(m, name).copy_(torch.from_numpy(np.asarray(p)))
        mods.append(m)
    model = nn.Sequential(*mods).eval()
    return model.to(torch.float64 if (dtype or net.dtype) == np.float64 else torch.float32)


def vgg16_shaped(seed=0, n_classes=1000):
    """VGG-16's layer shapes at 224x224 with random (He-scaled) weights."""
    rng = np.random.default_rng(seed)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(MaxPool2d(2, 2))
        else:
            w = rng.standard_normal((v, c, 3, 3), dtype=np.float32) * np.sqrt(2.0 / (9 * c))
            layers += [Conv2d(c, v, 3, 1, 1, weight=w, bias=np.full(v, 0.01, np.float32)), ReLU()]
            c = v
    layers.append(Flatten())
    for i, (n_in, n_out) in enumerate([(25088, 4096), (4096, 4096), (4096, n_classes)]):
        w = rng.standard_normal((n_out, n_in), dtype=np.float32) * np.sqrt(2.0 / n_in)
        layers.append(Dense(n_in, n_out, weight=w, bias=np.full(n_out, 0.01, np.float32)))
        if i < 2:
            layers.append(ReLU())
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return Network(layers, (3, 224, 224), name="vgg16-shaped", mean=mean, std=std)
