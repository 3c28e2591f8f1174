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
# # Tutorial 2: gradients and sensitivity analysis
#
# The gradient of a class score with respect to the input pixels says how the score would
# change if a pixel changed a little. *Sensitivity analysis* (SA; Simonyan et al. 2014,
# Samek et al. 2017) maps its square:
#
# $$\mathrm{SA}_p = \sum_c \left(\frac{\partial f_t(x)}{\partial x_{c,p}}\right)^2$$
#
# In this tutorial you will
#
# 1. run the backward pass by hand, layer by layer, from the forward caches of tutorial 1,
# 2. check it against finite differences,
# 3. draw SA heatmaps, and see how noisy they are and what SmoothGrad does about it.

# %%
import numpy as np
import matplotlib.pyplot as plt

import minilrp
from minilrp import sensitivity
from minilrp.pictures.heatmaps import heatmap_grid

plt.rcParams["figure.dpi"] = 100
np.set_printoptions(precision=4, suppress=True)

net = minilrp.load_model("fmnist-cnn")
images, labels, classes = minilrp.load_samples()
x = net.preprocess(images[:6])

# %% [markdown]
# ## 1. The backward pass by hand
#
# We want $g = \partial f_t / \partial x$ for the predicted class $t$ of each image. Start at
# the output with a one-hot row at $t$ (the derivative of $f_t$ with respect to the logits),
# and apply the chain rule layer by layer, from the last to the first. Every layer's rule
# needs only its forward cache:
#
# | layer | forward | backward (gradient w.r.t. its input) |
# |---|---|---|
# | Dense | $z = a W^\top + b$ | $g_a = g_z W$ |
# | ReLU | $\max(a, 0)$ | $g_a = g_z \cdot [a > 0]$ |
# | Flatten | reshape | reshape back |
# | MaxPool2d | window max | $g_z$ goes to each window's argmax |
# | Conv2d | cross-correlation | transposed convolution of $g_z$ |

# %%
logits = net.forward(x)
t = logits.argmax(axis=1)
g = np.zeros_like(logits)
g[np.arange(len(x)), t] = 1.0                  # d f_t / d logits

for layer in reversed(net.layers):
    name = type(layer).__name__
    if name == "Dense":
        g = g @ layer.weight                    # written out by hand
    elif name == "ReLU":
        g = g * (layer.a > 0)                   # by hand: the ReLU's cached input
    elif name == "Flatten":
        g = g.reshape(layer.a.shape)
    else:                                       # MaxPool2d and Conv2d: the layer's own backward
        g = layer.backward(g)
    print(f"{name:10s} -> gradient of shape {g.shape}")

engine = net.gradient(x)                        # the same, in one call
print("by hand == net.gradient:", np.allclose(g, engine, rtol=1e-4, atol=1e-6))

# %% [markdown]
# ## 2. A finite-difference check
#
# The chain rule is easy to get wrong, so check it numerically: nudge one pixel by $\pm h$ and
# watch the logit, $\partial f / \partial x_p \approx (f(x + h e_p) - f(x - h e_p)) / 2h$. In
# float64, with $h = 10^{-6}$, the two should agree to about 6 digits (a ReLU network is
# piecewise linear, so the only error is rounding, unless the nudge flips a ReLU or a max).

# %%
net64 = minilrp.load_model("fmnist-cnn", dtype=np.float64)
x64 = x[:1].astype(np.float64)
t0 = int(net64.forward(x64).argmax())
grad = net64.gradient(x64, target=t0)[0, 0]

rng = np.random.default_rng(0)
pixels = [tuple(p) for p in np.argwhere(images[0] > 0)[rng.choice(np.sum(images[0] > 0), 5, replace=False)]]
h = 1e-6
for (r, c) in pixels:
    up, down = x64.copy(), x64.copy()
    up[0, 0, r, c] += h
    down[0, 0, r, c] -= h
    fd = (net64.forward(up)[0, t0] - net64.forward(down)[0, t0]) / (2 * h)
    print(f"pixel ({r:2d},{c:2d}): backward {grad[r, c]: .8f}   finite difference {fd: .8f}")

# %% [markdown]
# ## 3. SA heatmaps
#
# `sensitivity.sa` squares the gradient and sums over channels (one channel here). Unsigned
# maps are drawn with a sequential colormap from zero (pale = 0, dark = high), signed ones with
# a diverging map centred on zero (red > 0 > blue), never `jet`. Each map is divided by its
# 99.5th percentile of |value| and clipped beyond, so that a few extreme pixels do not wash out
# the rest and one colour bar per row reads the same on every image (the figure's title says so).

# %%
S = sensitivity.sa(net, x)
gxi = sensitivity.gradient_x_input(net, x)
titles = [classes[k] for k in t]
heatmap_grid(x, {"SA": S, "gradient x input": gxi}, titles=titles, low=net.input_low, high=net.input_high,
             fig=plt.figure())
plt.show()

# %% [markdown]
# SA answers "which pixels would change the score most if they changed?", not "which pixels
# are evidence for the class?". It is large on edges and even on the *background* around the
# object (a stroke drawn there would change the score), and it is blind to the sign: it cannot
# tell evidence from counter-evidence. Gradient x input (signed: red raises the score, blue
# lowers it) is zero wherever the input is zero, so the background drops out.
#
# ## 4. How noisy is SA?
#
# The gradient of a ReLU network is piecewise constant and jumps wherever a unit switches on
# or off, so SA can change a lot under an invisible change of the input (Smilkov et al. 2017).
# Add noise of 2% of the input range and compare the maps with the rank correlation:

# %%
from scipy.stats import spearmanr


def rank_corr(a, b):
    return spearmanr(a.ravel(), b.ravel())[0]


rng = np.random.default_rng(1)
corr_sa = []
for trial in range(3):
    noisy = np.clip(x + 0.02 * rng.standard_normal(x.shape).astype(x.dtype), 0, 1)
    S_noisy = sensitivity.sa(net, noisy, target=t)
    corr_sa.append([rank_corr(S[i], S_noisy[i]) for i in range(len(x))])
print("rank correlation of SA with SA under 2% noise, per image:", np.mean(corr_sa, axis=0).round(3))

# %% [markdown]
# SmoothGrad averages the gradient over many noisy copies of the input; the squared version
# (SmoothGrad-squared) is the smoothed counterpart of SA. Compare the maps:

# %%
SG2 = sensitivity.smoothgrad(net, x, n_samples=16, noise=0.1, squared=True).sum(axis=1)
heatmap_grid(x, {"SA": S, "SmoothGrad$^2$": SG2}, titles=titles, low=net.input_low, high=net.input_high,
             fig=plt.figure())
plt.show()

# %%
corr_sg = []
for trial in range(2):
    noisy = np.clip(x + 0.02 * rng.standard_normal(x.shape).astype(x.dtype), 0, 1)
    SG2_noisy = sensitivity.smoothgrad(net, noisy, target=t, n_samples=16, noise=0.1,
                                       squared=True, seed=trial + 1).sum(axis=1)
    corr_sg.append([rank_corr(SG2[i], SG2_noisy[i]) for i in range(len(x))])
print(f"mean rank correlation under 2% noise: SA {np.mean(corr_sa):.3f}, SmoothGrad^2 {np.mean(corr_sg):.3f}")

# %% [markdown]
# ## 5. Your turn
#
# The exercise `sa` asks you to write SA yourself from `net.forward` and `net.backward`:
#
# ```
# python -m minilrp.check --skeleton sa -o my_sa.py     # the skeleton, with the formula
# python -m minilrp.check sa my_sa.py                   # check it against the references
# ```
#
# **Next:** tutorial 3 replaces the gradient by relevance: LRP redistributes the score itself.
