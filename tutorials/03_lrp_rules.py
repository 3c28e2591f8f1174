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
# # Tutorial 3: LRP rules
#
# Layer-wise relevance propagation (Bach et al. 2015) explains a prediction by handing the
# class score back through the network, layer by layer, until it arrives at the pixels:
# each layer redistributes the relevance of its outputs over its inputs, in proportion to
# what each input contributed. *How* it does so is the rule, and the rule matters.
#
# In this tutorial you will
#
# 1. run one rule by hand on one layer, in the four steps every rule shares,
# 2. meet LRP-0, epsilon, gamma, alpha-beta and z^B, and see what each does to a heatmap,
# 3. check conservation with the relevance ledger,
# 4. use the named presets (composites) and the two max-pool choices.

# %%
import numpy as np
import matplotlib.pyplot as plt

import minilrp
from minilrp import render, sensitivity
from minilrp import PRESETS, Composite
from minilrp import Conv2d, Dense
from minilrp import AlphaBeta, Epsilon, Gamma, Proportional, ZBox, ZPlus

plt.rcParams["figure.dpi"] = 72
np.set_printoptions(precision=4, suppress=True)

net = minilrp.load_model("fmnist-cnn", dtype=np.float64)   # float64: sums to many digits
images, labels, classes = minilrp.load_samples()
x = net.preprocess(images[:4])
probs, pred = net.predict(x)


def show(rows, titles, row_names, signed=True):
    """Rows of heatmaps (each (N, C, H, W) or (N, H, W)) under the input images."""
    n = len(titles)
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(1.15 * n + 0.5, 1.15 * (len(rows) + 1)))
    pics = [render.image_rgb(x[:n], net.input_low, net.input_high)]
    pics += [render.signed_rgb(r[:n]) if signed else render.unsigned_rgb(r[:n]) for r in rows]
    for r, (pic, name) in enumerate(zip(pics, ["image"] + row_names)):
        for i in range(n):
            axes[r, i].imshow(pic[i])
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    for i, t in enumerate(titles):
        axes[0, i].set_title(t, fontsize=8)
    plt.show()


titles = [classes[p] for p in pred]

# %% [markdown]
# ## 1. One rule, one layer, by hand
#
# Every LRP rule on a linear layer (Dense, Conv2d, average pool) is the same four steps,
# with the layer's own arithmetic under modified parameters $\rho(w)$:
#
# 1. $z = \text{forward}(a, \rho(w), \rho(b))$, stabilised: $z + \varepsilon\,\mathrm{sign}_0(z)$
#    with $\mathrm{sign}_0(0) = +1$
# 2. $s = R / z$
# 3. $c = \text{backward}(s, \rho(w))$, the transposed layer (for a conv: the transposed convolution)
# 4. $R_\text{in} = a \odot c$
#
# LRP-epsilon uses $\rho(w) = w$. Relevance enters the output layer as the target logit
# times one-hot (the LRP Toolbox's and Montavon et al.'s convention). On the last Dense layer:

# %%
logits = net.forward(x)
R = np.zeros_like(logits)
rows = np.arange(len(x))
R[rows, pred] = logits[rows, pred]               # initial relevance: f_t(x) at the target

layer = net.layers[-1]
a, W, b, eps = layer.a, layer.weight, layer.bias, 0.25
z = a @ W.T + b                                   # 1. forward
s = R / (z + eps * np.where(z >= 0, 1.0, -1.0))   # 2. divide (stabilised)
c = s @ W                                         # 3. backward
R_in = a * c                                      # 4. times the input
engine, shares = Epsilon(eps).relevance(layer, a, R)
print("by hand == minilrp.rules.Epsilon:", np.allclose(R_in, engine))
print("relevance in:", R.sum(1), "out:", R_in.sum(1), "absorbed by bias and eps:", shares["bias"] + shares["stabiliser"])

# %% [markdown]
# That is the code minilrp runs. Every rule lives in `minilrp/explain/rules.py`, its formula
# beside its four steps on the layer's own `linear` (step 1) and `linear_T` (step 3):

# %%
import inspect
print(inspect.getsource(Epsilon.relevance))

# %% [markdown]
# `net.relevance(x, composite, fast=False)` runs exactly these rules, layer by layer. The
# default, `fast=True`, runs `minilrp/fast/`, the same rules implemented faster, held equal to
# them by a test (float64 to 1e-12):

# %%
R_ref = net.relevance(x, "EpsilonGammaBox", fast=False)
R_fast = net.relevance(x, "EpsilonGammaBox")
print("fast == reference:", np.abs(R_fast - R_ref).max() / np.abs(R_ref).max())

# %% [markdown]
# ## 2. The rules
#
# **LRP-0** ($\varepsilon = 0$) redistributes exactly in proportion to $a_j w_{jk}$. Through a
# whole ReLU network without biases it equals gradient x input, and like it, it is noisy.
# **LRP-epsilon** adds $\varepsilon$ to each denominator: weak, contradictory contributions
# ($z_k \approx 0$) absorb relevance instead of amplifying noise. The larger $\varepsilon$, the
# sparser the map:

# %%
eps_maps = [net.relevance(x, Composite("eps", default=Epsilon(e))) for e in (0.0, 0.1, 1.0)]
gxi = sensitivity.gradient_x_input(net, x)
show([gxi] + eps_maps, titles, ["grad x input", "LRP-0", "eps 0.1", "eps 1"])

# %% [markdown]
# **LRP-gamma** favours positive contributions: $\rho(w) = w + \gamma w^+$ (for inputs after a
# ReLU). **LRP-alpha-beta** treats positive and negative contributions apart,
# $R_j = \sum_k \left(\alpha \frac{(a_j w_{jk})^+}{z_k^+} - \beta \frac{(a_j w_{jk})^-}{z_k^-}\right) R_k$,
# with $\alpha - \beta = 1$ (alpha=1, beta=0 is the z+ rule). **z^B** serves the pixel layer,
# whose inputs are bounded, $l \le x \le h$ (here $[0, 1]$, recorded in the weight file):
# $z_{jk} = x_j w_{jk} - l_j w^+_{jk} - h_j w^-_{jk}$.
#
# minilrp follows Zennit's conventions to float64 rounding. The one that trips people most is
# alpha-beta's: some texts parametrise it with $\alpha + \beta = 1$. minilrp refuses that, with
# an explanation:

# %%
try:
    AlphaBeta(alpha=0.5, beta=0.5)
except minilrp.MinilrpError as e:
    print(e)

# %% [markdown]
# Applied to every conv and dense layer, the rules look like this (same images, signed maps:
# red = evidence for the class, blue = against, white = 0, each image scaled symmetrically):

# %%
rule_maps = {
    "gamma 0.25": net.relevance(x, Composite("g", default=Gamma(0.25))),
    "alpha2 beta1": net.relevance(x, Composite("ab", default=AlphaBeta(2, 1))),
    "z+": net.relevance(x, Composite("zp", default=ZPlus())),
    "eps + z^B first": net.relevance(x, Composite("box", default=Epsilon(0.25), first=((Conv2d,), ZBox()))),
}
show(list(rule_maps.values()), titles, list(rule_maps))

# %% [markdown]
# Some numbers behind the pictures: how much of the relevance is negative, and how much lands
# on the *background* (pixels that are exactly 0). Rules that end in $R_j = a_j c_j$ give a
# zero pixel zero relevance; z^B does not, because of the bound terms: a pixel at its lower
# bound 0 still gets $- h_j w^-_{jk}$.

# %%
background = (x == 0)
for name, Rm in {"LRP-0": eps_maps[0], "eps 1": eps_maps[2], **rule_maps}.items():
    total = np.abs(Rm).sum(axis=(1, 2, 3))
    neg = np.clip(-Rm, 0, None).sum(axis=(1, 2, 3)) / total
    bg = np.abs(Rm * background).sum(axis=(1, 2, 3)) / total
    print(f"{name:16s} negative share {neg.mean():6.1%}   share on the background {bg.mean():6.1%}")

# %% [markdown]
# ## 3. Conservation and the ledger
#
# A rule *conserves* relevance when each layer hands on exactly what it received. Biases and
# the stabiliser absorb some; the ledger records, for every layer of the last call, the
# relevance entering and leaving and where the difference went:

# %%
R_box = net.relevance(x, "EpsilonGammaBox")
print(net.ledger.table(0))
print("\nlogit of the target:", logits[0, pred[0]], " relevance at the pixels:", R_box[0].sum())
print("every difference accounted for:", np.abs(net.ledger.residual()).max() < 1e-9)

# %% [markdown]
# With the biases left out of the denominators and no stabiliser, what is left is what the
# ledger calls *dropped*: relevance reaching an output whose denominator is exactly 0. Here
# that happens at the pixel layer, where a window over the empty background has z = 0 once
# the bias is gone (the unit was active only thanks to its bias):

# %%
no_bias = Composite("no bias", default=Epsilon(0.0, bias=False), by_type={Conv2d: Gamma(0.25, 0.0, bias=False)})
net.relevance(x, no_bias)
print(net.ledger.table(0).splitlines()[-1])

# %% [markdown]
# z^B has no such hole: with bounds $l = 0$, $h = 1$ an all-zero window still has
# $z = -\sum_j h_j w^-_{jk} > 0$. With z^B at the pixels, conservation is exact, layer by layer,
# and the pixel relevance sums to the logit:

# %%
exact = Composite("exact", default=Epsilon(0.0, bias=False), by_type={Conv2d: Gamma(0.25, 0.0, bias=False)},
                  first=((Conv2d,), ZBox(epsilon=0.0)))
R_exact = net.relevance(x, exact)
print("pixel sums:", R_exact.sum(axis=(1, 2, 3)))
print("logits:    ", logits[rows, pred])

# %% [markdown]
# ## 4. Presets and max-pool choices
#
# A *composite* assigns a rule to every layer. minilrp names the usual ones (those of Zennit,
# plus Montavon et al.'s depth-banded recipe); `net.relevance(x, name)` takes the name:

# %%
print(", ".join(PRESETS))
names = ["EpsilonGammaBox", "EpsilonPlus", "EpsilonAlpha2Beta1Flat", "Montavon"]
show([net.relevance(x, n) for n in names], titles, names)

# %% [markdown]
# Max pooling is not linear, so it needs its own choice. By default its relevance follows the
# gradient (winner-take-all, ties split evenly); `Proportional` treats it as a sum pool and
# spreads each window's relevance over all four inputs in proportion to their activations:

# %%
wta = net.relevance(x, "EpsilonGammaBox")
prop = net.relevance(x, Composite("prop", default=Epsilon(1e-6), by_type={Conv2d: Gamma(0.25)},
                                  first=((Conv2d,), ZBox()), maxpool=Proportional()))
show([wta, prop, prop - wta], titles, ["winner-take-all", "proportional", "difference"])
print("both conserve the same total:", np.allclose(wta.sum(axis=(1, 2, 3)), prop.sum(axis=(1, 2, 3)), rtol=0.05))

# %% [markdown]
# ## 5. Your turn
#
# Five exercises build these rules yourself, checked against minilrp's reference outputs:
#
# ```
# python -m minilrp.check --list
# python -m minilrp.check --skeleton epsilon_dense -o my_epsilon.py
# python -m minilrp.check epsilon_dense my_epsilon.py
# ```
#
# `epsilon_dense`, `alphabeta_dense`, `conv_relevance` (the transposed convolution), `zbox` and
# `maxpool_wta`. When a check fails, the checker says where the numbers first diverge and
# recognises the usual mistakes (the stabiliser's sign, alpha + beta = 1, a flipped kernel, ...).
#
# **Next:** tutorial 4 measures which of these heatmaps is *right*, by region perturbation.
