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
# # Tutorial 1: the forward pass and its caches
#
# minilrp runs a trained image classifier layer by layer, in NumPy, and every layer keeps
# what it was given in the forward pass. Those *forward caches* are what the explanations
# of the next tutorials start from: the gradient (tutorial 2) and LRP (tutorial 3) walk the
# layers backwards and need each layer's input again.
#
# In this tutorial you will
#
# 1. load a bundled model and the bundled Fashion-MNIST test images,
# 2. classify them,
# 3. look inside: every layer's cached input, its shape, its activations,
# 4. recompute a convolution output, a max-pool output and the logits by hand from the caches.
#
# Runs top to bottom in a few seconds (the first run of minilrp compiles its numba kernels
# and caches them).

# %%
import numpy as np
import matplotlib.pyplot as plt

import minilrp

plt.rcParams["figure.dpi"] = 100
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. A bundled model and the sample images
#
# minilrp ships three small Fashion-MNIST classifiers trained with PyTorch and exported to
# its own weight format (a `.npz` of plain arrays plus a JSON description, never pickles),
# and the first 1000 test images of Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence).

# %%
print(minilrp.available_models())
net = minilrp.load_model("fmnist-cnn")
print(net)

# %% [markdown]
# Each line is a layer and the shape of its output for one image. The network works in its
# *input space*: raw `uint8` pixels are scaled (and, for models that need it, normalised) by
# `net.preprocess`. The weight file also records the valid range of that space, which the
# z^B rule of tutorial 3 uses.

# %%
images, labels, classes = minilrp.load_samples()
print(images.shape, images.dtype, labels[:10], classes)
x = net.preprocess(images[:8])
print(x.shape, x.dtype, "input range:", net.input_low, net.input_high)

fig, axes = plt.subplots(1, 8, figsize=(10, 1.7))
for ax, img, lab in zip(axes, images[:8], labels[:8]):
    ax.imshow(img, cmap="gray_r")          # garments dark on white, in every tutorial
    ax.set_title(classes[lab], fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. Classify
#
# `net.predict` runs the forward pass and returns softmax probabilities and the predicted
# classes. On the 1000 bundled images:

# %%
x_all = net.preprocess(images)
probs, pred = net.predict(x_all)
print(f"accuracy on the {len(images)} bundled test images: {np.mean(pred == labels):.3f}")
for i in range(5):
    print(f"image {i}: predicted {classes[pred[i]]:<12} p = {probs[i, pred[i]]:.3f}   true {classes[labels[i]]}")

# %% [markdown]
# ## 3. The forward caches
#
# After a forward pass every layer holds its input in `layer.a`. (The max-pool layer also keeps
# the position of each window's maximum, `layer.arg`.) Let us run one batch and walk the layers.

# %%
logits = net.forward(x)
for i, layer in enumerate(net.layers):
    a = layer.a
    print(f"layer {i}: {type(layer).__name__:10s} input {str(a.shape):18s} "
          f"min {a.min():8.3f}  max {a.max():8.3f}  zeros {np.mean(a == 0):5.1%}")

# %% [markdown]
# After every ReLU a large share of the activations is exactly zero: a ReLU network switches
# most of its units off for any given image. Here are the first 8 feature maps of the first
# convolution for image 0 (the input of layer 1, the ReLU), and the same after the ReLU (the
# input of layer 2, the max pool):

# %%
conv_out = net.layers[1].a[0]      # (32, 28, 28): output of the first conv = input of the ReLU
relu_out = net.layers[2].a[0]      # after the ReLU
m = np.abs(conv_out[:8]).max()     # one symmetric scale for the row: one colour bar reads all
fig, axes = plt.subplots(2, 8, figsize=(11, 3.2), layout="constrained")
for c in range(8):
    top = axes[0, c].imshow(conv_out[c], cmap="bwr", vmin=-m, vmax=m)
    bottom = axes[1, c].imshow(relu_out[c], cmap="magma_r", vmin=0, vmax=m)
    axes[0, c].set_title(f"channel {c}", fontsize=9)
    for ax in axes[:, c]:
        ax.set_xticks([])
        ax.set_yticks([])
axes[0, 0].set_ylabel("conv output", fontsize=9)
axes[1, 0].set_ylabel("after ReLU", fontsize=9)
fig.colorbar(top, ax=axes[0, :].tolist(), shrink=0.9)
fig.colorbar(bottom, ax=axes[1, :].tolist(), shrink=0.9)
fig.suptitle("image 0, the first 8 channels of the first conv (red > 0 > blue), then after the ReLU (dark = high)",
             fontsize=9)
plt.show()

# %% [markdown]
# ## 4. Recompute from the caches, by hand
#
# The caches are all we need to recompute any layer's output. The first convolution
# (PyTorch's cross-correlation, zero padding) at one output pixel:
#
# $$z_{o,y,x} = \sum_{c,i,j} a_{c,\,y+i-p,\,x+j-p}\, w_{o,c,i,j} + b_o$$

# %%
conv = net.layers[0]
a = conv.a[0]                                    # (1, 28, 28), the cached input of image 0
p, K = conv.padding, conv.kernel_size
a_padded = np.pad(a, ((0, 0), (p, p), (p, p)))
o, y, x0 = 5, 14, 10
by_hand = np.sum(a_padded[:, y:y + K, x0:x0 + K] * conv.weight[o]) + conv.bias[o]
print(f"by hand {by_hand:.6f}   engine {net.layers[1].a[0, o, y, x0]:.6f}")

# %% [markdown]
# The max pool: each output is the maximum of its 2 x 2 window, and `arg` records which of
# the four won (what the gradient and winner-take-all LRP follow backwards).

# %%
pool = net.layers[2]
out = net.layers[3].a                             # the pool's output = the next layer's input
c, oy, ox = np.unravel_index(np.argmax(out[0]), out[0].shape)   # the strongest window of image 0
win = pool.a[0, c, 2 * oy:2 * oy + 2, 2 * ox:2 * ox + 2]
print(f"window (channel {c}, row {oy}, column {ox}):", win.ravel())
print("max by hand", win.max(), " engine", out[0, c, oy, ox], " argmax offset i*2+j:", pool.arg[0, c, oy, ox])

# %% [markdown]
# And the logits: the last Dense layer is `z = a @ W.T + b` on its cached input.

# %%
dense = net.layers[-1]
print(np.allclose(dense.a @ dense.weight.T + dense.bias, logits, rtol=1e-5, atol=1e-5))
print("logits of image 0:", logits[0])

# %% [markdown]
# ## 5. Batches, dtypes, and a second model
#
# A batch gives the same numbers as one image at a time, and the network can compute in
# float64 (for reference values) as well as float32 (the default, faster):

# %%
one = net.forward(x[3:4])
print("batch == one by one:", np.allclose(one, logits[3:4], rtol=1e-5, atol=1e-5))
net64 = minilrp.load_model("fmnist-cnn", dtype=np.float64)
l64 = net64.forward(x.astype(np.float64))
print("largest float32 vs float64 difference:", np.abs(l64 - logits).max())

# %% [markdown]
# The bundled MLP works the same way; it flattens the image first:

# %%
mlp = minilrp.load_model("fmnist-mlp")
print(mlp)
_, pred_mlp = mlp.predict(mlp.preprocess(images))
print(f"MLP accuracy: {np.mean(pred_mlp == labels):.3f}, CNN accuracy: {np.mean(pred == labels):.3f}")

# %% [markdown]
# Bad input gets a clear error rather than a wrong answer, for example raw `uint8` images
# passed without `preprocess`, or one image without its batch axis:

# %%
for bad in (images[:2], x[0]):
    try:
        net.forward(bad)
    except minilrp.MinilrpError as e:
        print("MinilrpError:", e)

# %% [markdown]
# **Next:** tutorial 2 walks these layers backwards to get gradients and sensitivity maps.
