# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 5: bring your own model
#
# minilrp explains any plain chain of the layers it implements (Conv2d, Dense, ReLU, MaxPool2d,
# AvgPool2d, Flatten), with weights trained anywhere. In this tutorial you
#
# 1. train a small CNN with PyTorch (a few seconds on the CPU),
# 2. export it to minilrp's weight format with `minilrp.importers.from_torch` and load it back,
# 3. check that minilrp computes the same logits and gradients as PyTorch,
# 4. explain its predictions.
#
# PyTorch is optional for minilrp (never needed at run time). If it is not installed, this
# tutorial trains a small model with NumPy instead, using minilrp's own backward pass, and
# skips the PyTorch comparisons. To install the CPU build: `pip install torch==2.13.0`.

# %%
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

import minilrp
from minilrp import sensitivity
from minilrp.pictures.heatmaps import heatmap_grid

plt.rcParams["figure.dpi"] = 100
np.set_printoptions(precision=4, suppress=True)

try:
    import torch
    from torch import nn
    HAVE_TORCH = True
    torch.manual_seed(0)
    torch.set_num_threads(2)
    print("PyTorch", torch.__version__)
except ImportError:
    HAVE_TORCH = False
    print("PyTorch is not installed: training a small model with NumPy instead (the PyTorch cells are skipped)")

# %% [markdown]
# ## 1. Data and a model
#
# To stay fast, we train on 800 of the 1000 bundled Fashion-MNIST test images and hold out
# the other 200. (For a real model, train on the 60 000 training images: the bundled models
# were made that way by `tools/train_fmnist.py`.) Pixels are scaled to [0, 1].

# %%
images, labels, classes = minilrp.load_samples()
X = images.astype(np.float32)[:, None] / 255.0           # (1000, 1, 28, 28) in [0, 1]
X_train, y_train, X_test, y_test = X[:800], labels[:800], X[800:], labels[800:]

if HAVE_TORCH:
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(X_train), torch.from_numpy(y_train)
    for epoch in range(6):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(X_test)).argmax(1).numpy() == y_test).mean()
    print(f"PyTorch model, held-out accuracy {acc:.3f}")

# %% [markdown]
# ## 2. Export to minilrp
#
# `from_torch` walks the module (an `nn.Sequential`, or any module whose forward runs its
# layers in order), converts every layer, folds batch norms, drops dropout, and checks the
# converted network against the module on a random input. We also record the valid input
# range, [0, 1]: the z^B rule needs it. Anything minilrp cannot represent (a residual
# connection, an unsupported layer) is refused with an error naming the layer.

# %%
if HAVE_TORCH:
    from minilrp.models.importers import from_torch
    net = from_torch(model, input_shape=(1, 28, 28), classes=classes, name="my-fashion-cnn",
                     input_range=([0.0], [1.0]), provenance={"trained_on": "800 bundled test images"})
    print(net)

# %% [markdown]
# Without PyTorch, here is the same idea in NumPy: a small MLP built from minilrp layers and
# trained by gradient descent. minilrp's layers compute input gradients; the forward caches
# give the weight gradients too: for a Dense layer $z = aW^\top + b$, $\partial L/\partial W =
# g^\top a$ and $\partial L/\partial b = \sum_n g$, with $g = \partial L / \partial z$.

# %%
if not HAVE_TORCH:
    from minilrp import Dense, Flatten, ReLU
    rng = np.random.default_rng(0)
    layers = [Flatten(),
              Dense(784, 64, weight=rng.standard_normal((64, 784)).astype(np.float32) * float(np.sqrt(2 / 784)),
                    bias=np.zeros(64, np.float32)),
              ReLU(),
              Dense(64, 10, weight=rng.standard_normal((10, 64)).astype(np.float32) * float(np.sqrt(2 / 64)),
                    bias=np.zeros(10, np.float32))]
    net = minilrp.Network(layers, (1, 28, 28), classes=classes, name="my-fashion-mlp",
                          input_range=([0.0], [1.0]), provenance={"trained_on": "800 bundled test images"})
    for epoch in range(15):
        perm = rng.permutation(len(X_train))
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            logits = net.forward(X_train[idx])
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = p
            g[np.arange(len(idx)), y_train[idx]] -= 1          # d(cross-entropy)/d(logits)
            g /= len(idx)
            for layer in reversed(net.layers):
                g_in = layer.backward(g)
                if isinstance(layer, Dense):                    # weight gradients from the cache
                    layer.weight -= 0.1 * (g.T @ layer.a)
                    layer.bias -= 0.1 * g.sum(0)
                g = g_in
    _, pred = net.predict(X_test)
    print(f"NumPy-trained MLP, held-out accuracy {np.mean(pred == y_test):.3f}")
    print(net)

# %% [markdown]
# Save it in minilrp's format (a `.npz` of plain arrays and a JSON record: loading it never
# runs code) and load it back, as a user of your model would:

# %%
path = Path(f"{net.name}.npz")
minilrp.save(path, net)
mine = minilrp.load_model(str(path))
print(f"saved {path} ({path.stat().st_size / 1024:.0f} KB);", mine.name, mine.provenance)
print("same logits after the round trip:", np.array_equal(mine.forward(X_test), net.forward(X_test)))

# %% [markdown]
# ## 3. Does minilrp compute what PyTorch computes?
#
# Logits and input gradients, in float64 on both sides, on the held-out images:

# %%
if HAVE_TORCH:
    model64 = model.double()
    xt64 = torch.from_numpy(X_test.astype(np.float64)).requires_grad_(True)
    out = model64(xt64)
    target = out.argmax(1)
    out.gather(1, target[:, None]).sum().backward()
    mine64 = minilrp.load_model(str(path), dtype=np.float64)
    logits64 = mine64.forward(X_test.astype(np.float64))
    grad64 = mine64.gradient(X_test.astype(np.float64), target=target.numpy())
    print("largest logit difference:   ", np.abs(logits64 - out.detach().numpy()).max())
    print("largest gradient difference:", np.abs(grad64 - xt64.grad.numpy()).max())
else:
    print("skipped: PyTorch is not installed")

# %% [markdown]
# ## 4. Explain it
#
# Everything from tutorials 2 to 4 now works on your model. SA and two LRP composites for
# six held-out images (for an MLP, EpsilonGammaBox has no conv layer to put z^B on, so it
# is plain epsilon there; `Montavon` puts z^B on the first layer whatever its type):

# %%
x = mine.preprocess(images[800:806])
probs, pred = mine.predict(x)
maps = {"SA": sensitivity.sa(mine, x)}
for name in ("EpsilonGammaBox", "Montavon"):
    maps[name] = mine.relevance(x, name)
heatmap_grid(x, maps, titles=[f"{classes[p]} ({probs[i, p]:.2f})" for i, p in enumerate(pred)],
             low=mine.input_low, high=mine.input_high, fig=plt.figure())
plt.show()
print("ledger of the last call (Montavon), image 0:")
print(mine.ledger.table(0))

# %% [markdown]
# From the command line, the demo and the perturbation experiment take your file too:
#
# ```
# python -m minilrp.demo --model my-fashion-cnn.npz
# python -m minilrp.experiments perturbation --model my-fashion-cnn.npz --quick
# ```
#
# and `python -m minilrp.convert` converts a saved PyTorch state dict or an ONNX file without
# writing Python (see its `--help`).
