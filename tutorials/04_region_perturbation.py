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
# # Tutorial 4: evaluating heatmaps by region perturbation
#
# Tutorials 2 and 3 produced many different heatmaps for the same prediction. Which one is
# right? Region perturbation (Samek et al. 2017) asks the network itself: distort the image,
# region by region, in the order a heatmap ranks the regions, and watch the class score.
#
# - **MoRF** (most relevant first): if the heatmap found what the score depends on, the score
#   falls fast. **AOPC**, the area over the perturbation curve, measures how fast:
#   $\mathrm{AOPC} = \frac{1}{L+1}\sum_{k=0}^{L} \big(f(x_0) - f(x_k)\big)$.
# - **LeRF** (least relevant first): the score should stay up, or rise where the heatmap marks
#   counter-evidence.
# - **Random** order: the baseline every heatmap must beat.
#
# minilrp descends from a study that found (i) distorting the regions LRP marks as essential
# lowers the score faster than SA's (and SA's faster than random), and (ii) distorting the
# regions that SA and LRP *together* mark as inessential keeps the score up, even raises it.
# At the end of this tutorial you test both on the bundled CNN.

# %%
import numpy as np
import matplotlib.pyplot as plt

import minilrp
from minilrp import perturbation as P
from minilrp import plots, sensitivity
from minilrp.pictures.heatmaps import robust_scale
from tqdm.auto import tqdm

plt.rcParams["figure.dpi"] = 100
np.set_printoptions(precision=3, suppress=True)

net = minilrp.load_model("fmnist-cnn")
images, labels, classes = minilrp.load_samples()
N = 16                                   # images evaluated here; the experiment runner does 500+
x = net.preprocess(images[:N])
logits = net.forward(x)
target = logits.argmax(axis=1)           # explain and score the predicted class throughout

# %% [markdown]
# ## 1. Regions, scores, orderings
#
# A 28 x 28 image is cut into 7 x 7 = 49 regions of 4 x 4 pixels. A region's score is the sum
# of the heatmap over it (after summing channels).

# %%
regions = P.grid(x.shape[1:], size=4)
heat = {"SA": sensitivity.sa(net, x, target=target),
        "LRP": net.relevance(x, "EpsilonGammaBox", target=target)}
scores = {name: P.region_scores(h, regions) for name, h in heat.items()}
print(regions.n_regions, "regions;", "LRP region scores of image 0:\n", scores["LRP"][0].reshape(7, 7))

morf = P.order_regions(scores["LRP"], "morf")
lerf = P.order_regions(scores["LRP"], "lerf")
print("LRP MoRF order of image 0 starts with regions", morf[0, :8])

# %% [markdown]
# The distortion: by default each pixel of a distorted region is drawn uniformly from the
# valid input range (as in the paper). Here is image 0 after 0, 3, 8 and 15 steps of LRP's
# MoRF and LeRF orders, with its class score:

# %%
steps = [0, 3, 8, 15]
fig, axes = plt.subplots(2, len(steps) + 1, figsize=(10, 4.4), layout="constrained")
lrp0 = heat["LRP"][0].sum(axis=0)
im = axes[0, 0].imshow(np.clip(lrp0 / robust_scale(lrp0[None])[0], -1, 1), cmap="bwr", vmin=-1, vmax=1)
axes[0, 0].set_title("LRP (EpsilonGammaBox)", fontsize=9)
fig.colorbar(im, ax=axes[0, 0], shrink=0.8, ticks=[-1, 0, 1], label="R / 99.5th pct of |R|")
axes[1, 0].axis("off")
for row, (name, order) in enumerate([("MoRF", morf), ("LeRF", lerf)]):
    for j, k in enumerate(steps):
        xk = P.perturb(net, x[:1], regions, order[:1], k, "uniform")
        f = net.forward(xk)[0, target[0]]
        axes[row, j + 1].imshow(xk[0, 0], cmap="gray_r", vmin=0, vmax=1)
        axes[row, j + 1].set_title(f"{name} k={k}: f={f:.1f}", fontsize=9)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()

# %% [markdown]
# ## 2. Curves and AOPC
#
# `perturbation_curves` builds all 49 perturbed versions of every image up front and scores them
# in batches: one row per image, $f(x_0), \dots, f(x_{49})$. Every ordering is scored on the same
# noise draws of an image, so differences between methods are not drowned in noise.

# %%
def curves_for(perturbation):
    out = {}
    bar = tqdm(total=4, unit="ordering", desc=perturbation)
    for name, ordering in [("LRP", "morf"), ("LRP", "lerf"), ("SA", "morf")]:
        order = P.order_regions(scores[name], ordering)
        out[f"{name} {ordering.upper()}"] = P.perturbation_curves(net, x, regions, order, perturbation,
                                                                   target=target)
        bar.update(1)
    out["random"] = P.perturbation_curves(net, x, regions, P.random_order(N, regions.n_regions), perturbation,
                                          target=target)
    bar.update(1)
    bar.close()
    return out


uniform = curves_for("uniform")
for name, c in uniform.items():
    s = P.summarize(P.aopc(c))
    print(f"AOPC {name:9s} {s['mean']:6.2f} +- {s['se']:.2f} (standard error over {s['n']} images)")

fig = plt.figure(figsize=(6.4, 3.8), layout="constrained")
plots.plot_curves(uniform, title="uniform noise", ax=fig.add_subplot())
plt.show()

# %% [markdown]
# The fill matters. Uniform noise draws new strokes even on the empty background, so
# distorting "irrelevant" background can still move the score. A constant equal to the data's
# background (0 here) changes nothing there: distorting an empty region is a no-op.

# %%
background = curves_for("constant:background")
fig = plt.figure(figsize=(6.4, 3.8), layout="constrained")
plots.plot_curves(background, title="constant fill = background", ax=fig.add_subplot())
plt.show()

# %% [markdown]
# ## 3. SA and LRP together
#
# SA and LRP disagree about many regions. The *disagreement map* (SA rank minus LRP rank,
# both rank-normalised per image) shows where: red where SA finds a region more important than
# LRP (the model is sensitive there, but it is not evidence), blue where LRP does.

# %%
dmap = P.disagreement(scores["SA"], scores["LRP"], regions)      # (N, 28, 28) in [-1, 1]
fig = plt.figure()
plots.plot_disagreement(x[:6], dmap[:6], titles=[classes[k] for k in target[:6]], fig=fig)
plt.show()

# %% [markdown]
# minilrp implements four orderings that combine the two maps to find *inessential* regions
# (each documented with its rationale in `minilrp.perturbation.combined_order`):
#
# - (a) `sa_not_lrp`: sensitive by SA but not relevant by LRP, most sensitive first;
# - (b) `lrp_negative`: most negative LRP first (the counter-evidence);
# - (c) `counter_evidence`: negative LRP, ordered by (-LRP) x SA;
# - (d) `consensus_irrelevant`: regions both maps rank low.
#
# Distorting inessential regions should keep the score above the random ordering's. We compare
# each to random *image by image* (the same noise draws), relative to the random curve:

# %%
def combined_for(perturbation, bar):
    out = {}
    for ordering in P.COMBINED:
        order = P.combined_order(scores["SA"], scores["LRP"], ordering)
        out[ordering] = P.perturbation_curves(net, x, regions, order, perturbation, target=target)
        bar.set_postfix_str(f"{perturbation}: {ordering}")
        bar.update(1)
    return out


# 8 sets of curves (a few seconds each on two cores): a progress bar says where we are
bar = tqdm(total=2 * len(P.COMBINED), unit="set", desc="combined orderings")
combined = {p: combined_for(p, bar) for p in ("uniform", "constant:background")}
bar.close()
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for ax, (pname, base) in zip(axes, [("uniform", uniform), ("constant:background", background)]):
    series = {"random": base["random"], **combined[pname]}
    plots.plot_curves(series, relative="random", title=pname, ax=ax)
plt.show()

# %% [markdown]
# ## 4. The seed findings, tested
#
# A finding *holds* here when the 95% interval of the paired per-image difference lies above
# zero, *fails* when it lies below, and is *inconclusive* otherwise. The verdicts below are
# computed, not written in advance: with other images, models or fills they may differ.

# %%
def paired(a, b):
    """Mean and 95% interval of the per-image difference a - b."""
    s = P.summarize(a - b)
    return s["mean"], s["low"], s["high"]


def verdict(low, high):
    return "holds" if low > 0 else "fails" if high < 0 else "inconclusive"


for pname, base in [("uniform", uniform), ("constant:background", background)]:
    A = {name: P.aopc(c) for name, c in base.items()}
    print(f"--- {pname} ({N} images)")
    for a, b in [("LRP MORF", "SA MORF"), ("SA MORF", "random")]:
        m, lo, hi = paired(A[a], A[b])
        print(f"(i)  AOPC {a} > {b}: difference {m:+.2f} [{lo:+.2f}, {hi:+.2f}] -> {verdict(lo, hi)}")
    for ordering, c in combined[pname].items():
        m, lo, hi = paired(c[:, 1:].mean(axis=1), base["random"][:, 1:].mean(axis=1))
        rise = np.mean(c[:, 1:].mean(axis=1) > c[:, 0])
        print(f"(ii) {ordering:22s} stays above random: {m:+.2f} [{lo:+.2f}, {hi:+.2f}] -> {verdict(lo, hi)};"
              f" score rose above f(x_0) on average for {rise:.0%} of the images")

# %% [markdown]
# Read the verdicts with the curves above: a finding that holds under one fill and not under
# the other says as much about the fill as about the heatmaps. For the full experiment (500+
# images, several composites, gradient x input, the oracle ordering that shows the best any
# heatmap could do, tables and figures) run:
#
# ```
# python -m minilrp.experiments perturbation --model fmnist-cnn --out experiments-out
# ```
#
# ## 5. Your turn
#
# The exercise `aopc` asks you to write the region scores and AOPC yourself:
#
# ```
# python -m minilrp.check --skeleton aopc -o my_aopc.py
# python -m minilrp.check aopc my_aopc.py
# ```
