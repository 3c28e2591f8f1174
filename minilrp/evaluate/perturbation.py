"""Region perturbation: evaluate a heatmap by distorting image regions in the order it ranks them.

After Samek et al. (2017), "Evaluating the visualization of what a deep neural network has
learned". A good heatmap puts the regions the classifier relies on first: distorting them first
(MoRF, most relevant first) should make the class score fall fast; distorting the least relevant
(LeRF) should keep it, or raise it when the heatmap marks counter-evidence. The pipeline:

    heatmap (N, C, H, W) or (N, H, W)
      -- region_scores(heatmap, regions) -->     (N, R)  sum over channels, then over each region
      -- order_regions / combined_order -->      (N, R)  region indices, first distorted first
    images x (N, C, H, W) + order + a Perturbation
      -- perturbation_curves -->                 (N, L + 1)  f(x_0), f(x_1), ..., f(x_L)
      -- aopc / abpc / relative_to / summarize -> numbers;  pictures.plots.plot_curves -> a matplotlib Figure

x_k is x with the first k regions of the order replaced *cumulatively*: the masks of all L steps
are computed up front, every distorted image is built from one fill per image (and draw), and all
of them are scored in memory-bounded batches, never one forward call per step (a step that changes
no pixel, e.g. a background-coloured fill on a blank region, reuses the previous score).
:func:`oracle_scores` measures each region's effect alone: ordered, the best curve a heatmap could
reach under the same fill, to first order. Everything random is seeded per image (a stream keyed
by ``(seed, purpose, image index, draw)``, the index being the image's place in its data set:
pass ``index=`` when processing a data set in parts), so results do not depend on how the images
are split into calls, and every
method is scored on the *same* noise draws of an image (common random numbers: differences between
methods are not drowned in noise differences).

Conventions: the score f is the target logit by default (``score="probability"`` for the softmax
probability); the target is resolved once on the clean images (None = the predicted class) and kept
for every step. Heatmaps and images are in the network's input space.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MinilrpError
from ..fast import inference

DEFAULT_BATCH = 512  # images (and draws) scored together, step after step: the memory bound of the scoring loop

# stream tags of the seeded random number generators (one stream per purpose, image and draw)
_FILL, _ORDER, _TIES, _ORACLE = 1, 2, 3, 4


def _rng(seed, stream, *index):
    return np.random.default_rng([seed, stream, *index])


def _check_seed(seed):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MinilrpError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _int(value, what, low=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise MinilrpError(f"{what} must be an int, got {value!r}")
    if value < low:
        raise MinilrpError(f"{what} must be >= {low}, got {value}")
    return int(value)


# ============================================================================== regions

def default_region_size(shape) -> int:
    """4 for small images (side < 100 px, e.g. 28 x 28 -> 7 x 7 = 49 regions), 9 for large ones
    (224 x 224 -> 625 regions, as Samek et al. 2017)."""
    H, W = shape[-2:]
    return 4 if min(H, W) < 100 else 9


@dataclass(frozen=True, eq=False)
class Regions:
    """A partition of (some of) the pixels into regions.

    labels: int64 (H, W), the same regions for every image, or (N, H, W), one set per image
            (sliding-window mode); the region index of every pixel, -1 = in no region (never
            distorted). n_regions: R, indices run 0..R-1. size: the side s of a region.
    """

    labels: np.ndarray
    n_regions: int
    size: int
    mode: str = "grid"

    @property
    def image_shape(self):
        return self.labels.shape[-2:]

    def per_image(self, N) -> np.ndarray:
        """labels as (N, H, W) (a broadcast view for a shared grid)."""
        if self.labels.ndim == 3:
            if self.labels.shape[0] != N:
                raise MinilrpError(f"these regions were made for {self.labels.shape[0]} images, "
                                   f"got {N}")
            return self.labels
        return np.broadcast_to(self.labels, (N,) + self.labels.shape)

    def paint(self, values) -> np.ndarray:
        """Region values (N, R) -> a pixel map (N, H, W); pixels in no region get 0."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.n_regions:
            raise MinilrpError(f"region values must have shape (N, {self.n_regions}), got {values.shape}")
        labels = self.per_image(values.shape[0])
        padded = np.concatenate([values, np.zeros((values.shape[0], 1))], axis=1)
        idx = np.where(labels < 0, self.n_regions, labels).reshape(values.shape[0], -1)
        return np.take_along_axis(padded, idx, axis=1).reshape(labels.shape)


def _image_hw(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape[-2:]) < 1:
        raise MinilrpError(f"regions need an image shape (H, W) or (C, H, W), got {shape}")
    return shape[-2:]


def _region_size(size, H, W):
    if size is None:
        return default_region_size((H, W))
    size = _int(size, "region size")
    if size > min(H, W):
        raise MinilrpError(f"region size {size} is larger than the image ({H} x {W})")
    return size


def grid(shape, size=None, remainder="partial") -> Regions:
    """Non-overlapping s x s regions tiling an image of shape (H, W) (or (C, H, W)), numbered
    row by row. When s does not divide H (or W), ``remainder`` says what happens to the last
    H mod s rows (W mod s columns):

    "partial": they form a last row (column) of smaller regions, so every pixel is in a region
               and the final step of a full curve distorts the whole image (default);
    "drop":    they belong to no region and are never distorted (all regions are s x s).

    28 x 28 with s = 4 tiles exactly (49 regions); 224 x 224 with s = 9 leaves 224 mod 9 = 8.
    """
    H, W = _image_hw(shape)
    s = _region_size(size, H, W)
    if remainder not in ("partial", "drop"):
        raise MinilrpError(f"remainder must be 'partial' or 'drop', got {remainder!r}")
    rows, cols = np.arange(H) // s, np.arange(W) // s
    nr, nc = (-(-H // s), -(-W // s)) if remainder == "partial" else (H // s, W // s)
    labels = rows[:, None] * nc + cols[None, :]
    labels[(rows[:, None] >= nr) | (cols[None, :] >= nc)] = -1
    return Regions(labels.astype(np.int64), nr * nc, s, "grid")


def _channel_sum(heatmap, what="heatmap"):
    h = np.asarray(heatmap)
    if h.dtype.kind not in "fiu" or h.ndim not in (3, 4):
        raise MinilrpError(f"a {what} must be a numeric (N, H, W) or (N, C, H, W) array, got "
                           f"{h.dtype} {h.shape}")
    h = h.astype(np.float64)
    if not np.all(np.isfinite(h)):
        raise MinilrpError(f"the {what} contains NaN or inf")
    return h.sum(axis=1) if h.ndim == 4 else h


def sliding_windows(heatmap, size=None, ordering="morf", max_regions=None) -> Regions:
    """Per-image regions chosen greedily from all s x s windows (stride 1): take the window with
    the largest (``"morf"``) or smallest (``"lerf"``) heatmap sum, drop every window that
    overlaps it, repeat. The result is ordered: region k of an image is its k-th pick, so use
    ``order = np.tile(np.arange(R), (N, 1))``. R is the smallest number of picks over the images
    (at most ``max_regions``); pixels under no pick are never distorted.

    This follows the heatmap's hot spots more closely than a fixed grid, and so gives different
    (usually steeper MoRF) curves; the windows cover the image only partly, so its curves do not
    end at a fully distorted image, and they are not comparable with grid curves."""
    m = _channel_sum(heatmap)
    N, H, W = m.shape
    s = _region_size(size, H, W)
    if ordering not in ("morf", "lerf"):
        raise MinilrpError(f"sliding windows take ordering 'morf' or 'lerf', got {ordering!r}")
    c = np.pad(m, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)  # summed-area table
    S = c[:, s:, s:] - c[:, :-s, s:] - c[:, s:, :-s] + c[:, :-s, :-s]  # (N, H-s+1, W-s+1)
    S = S if ordering == "morf" else -S
    Hs, Ws = S.shape[1:]
    ii, jj = np.arange(Hs)[:, None], np.arange(Ws)[None, :]
    limit = (H // s) * (W // s) if max_regions is None else _int(max_regions, "max_regions")
    labels = np.full((N, H, W), -1, np.int64)
    free = np.ones_like(S, dtype=bool)
    R = 0
    while R < limit and free.any(axis=(1, 2)).all():
        flat = np.where(free, S, -np.inf).reshape(N, -1).argmax(axis=1)
        i0, j0 = flat // Ws, flat % Ws
        for n in range(N):  # paint the pick: N small slices, no (N, H, W) temporaries
            labels[n, i0[n]:i0[n] + s, j0[n]:j0[n] + s] = R
        free &= ~((np.abs(ii - i0[:, None, None]) < s) & (np.abs(jj - j0[:, None, None]) < s))
        R += 1
    return Regions(labels, R, s, "sliding")


def region_scores(heatmap, regions: Regions) -> np.ndarray:
    """Sum of the heatmap over each region, after summing channels. heatmap (N, H, W) or
    (N, C, H, W) -> (N, R), float64."""
    m = _channel_sum(heatmap)
    if m.shape[1:] != tuple(regions.image_shape):
        raise MinilrpError(f"heatmap of shape {np.shape(heatmap)} does not match the regions' "
                           f"image size {tuple(regions.image_shape)}")
    N, R = m.shape[0], regions.n_regions
    labels = regions.per_image(N)
    inside = labels >= 0
    index = (labels + R * np.arange(N)[:, None, None])[inside]
    return np.bincount(index, weights=m[inside], minlength=N * R).reshape(N, R)


def rank_normalise(scores) -> np.ndarray:
    """Per image, each region's rank among the image's regions scaled to [0, 1]: 0 = lowest
    score, 1 = highest; equal scores share their average rank. Makes maps on different scales
    (SA is squared gradients, LRP is signed relevance in logit units) comparable. (N, R) -> (N, R)."""
    s = _scores(scores)
    N, R = s.shape
    if R == 1:
        return np.full(s.shape, 0.5)
    # scipy.stats.rankdata(method="average") in NumPy (importing scipy.stats costs ~1 s): sort,
    # then give each run of equal values the mean of its first and last 0-based position
    order = np.argsort(s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, axis=1)
    pos = np.broadcast_to(np.arange(R), (N, R))
    differs = ss[:, 1:] != ss[:, :-1]
    starts = np.concatenate([np.ones((N, 1), bool), differs], axis=1)
    ends = np.concatenate([differs, np.ones((N, 1), bool)], axis=1)
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, R - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((N, R))
    np.put_along_axis(ranks, order, (first + last) / 2, axis=1)
    return ranks / (R - 1)


def _scores(scores, what="region scores"):
    s = np.asarray(scores)
    if s.dtype.kind not in "fiu" or s.ndim != 2 or s.shape[1] < 1:
        raise MinilrpError(f"{what} must be a numeric (N, R) array, got {s.dtype} {s.shape}")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise MinilrpError(f"{what} contain NaN or inf")
    return s


# ============================================================================== orderings

ORDERINGS = ("morf", "lerf", "random")
COMBINED = {
    "sa_not_lrp": "(a) sensitive by SA but not relevant by LRP",
    "lrp_negative": "(b) most negative LRP first",
    "counter_evidence": "(c) negative LRP ordered by (-LRP) x SA",
    "consensus_irrelevant": "(d) both SA and LRP rank the region low",
    "sa_minus_lrp": "(a') the seed study's SA-sensitive but not LRP-relevant first: r_SA - r_LRP",
}
MINILRP_COMBINED = ("sa_not_lrp", "lrp_negative", "counter_evidence", "consensus_irrelevant")
# The seed study's own definitions, as minilrp reads its words: its "(b) most negative LRP
# first" is minilrp's (b); its "SA-sensitive but not LRP-relevant first" is (a'), the
# disagreement map SA rank minus LRP rank, largest first (no cut at LRP's top half).
STUDY_COMBINED = ("sa_minus_lrp", "lrp_negative")


def _index(index, N):
    """The images' indices in their data set, (N,) int64: what every random draw of an image is
    keyed by (None = 0..N-1, the position in this call). Pass the global indices when a data set
    is processed in parts (shards, blocks): then each image gets the same draws whatever part
    it is in."""
    if index is None:
        return np.arange(N, dtype=np.int64)
    i = np.asarray(index)
    if i.dtype.kind not in "iu" or i.shape != (N,):
        raise MinilrpError(f"index must be an int array of shape ({N},), got {i.dtype} {i.shape}")
    if N and i.min() < 0:
        raise MinilrpError("index entries must be >= 0")
    return i.astype(np.int64)


def _ties(index, R, seed, ties=None):
    """The tie-breaking key (N, R) of every region: ascending key first among equal scores.

    ties=None: a seeded random permutation per image (stream (seed, image index)): breaks
    exact ties (many LRP regions on a blank background are exactly 0) without the spatial bias
    of the region index; the same for every method, so it never favours one.
    ties="index": the region index (the first region in row-major order first), what a stable
    argsort does (e.g. to reproduce a tool that sorts that way).
    ties=array (N, R): a key supplied by the user (e.g. the one another tool's run used)."""
    N = len(index)
    if ties is None:
        return np.stack([_rng(seed, _TIES, n).permutation(R) for n in index]) if N else np.zeros((0, R), np.int64)
    if isinstance(ties, str):
        if ties != "index":
            raise MinilrpError(f"ties must be None (seeded random), 'index' or an (N, R) key array, got {ties!r}")
        return np.broadcast_to(np.arange(R), (N, R))
    key = np.asarray(ties)
    if key.dtype.kind not in "fiu" or key.shape != (N, R):
        raise MinilrpError(f"a tie-breaking key must be a numeric array of shape ({N}, {R}), got "
                           f"{key.dtype} {key.shape}")
    if key.dtype.kind == "f" and not np.all(np.isfinite(key)):
        raise MinilrpError("the tie-breaking key contains NaN or inf")
    return key


def _lexorder(*keys, seed, index=None, ties=None):
    """Region indices sorted by ``keys`` (primary first, each ascending), ties broken by
    :func:`_ties`; then by the region index. keys: (N, R) arrays."""
    N, R = keys[0].shape
    tie = _ties(_index(index, N), R, seed, ties)
    return np.lexsort((tie,) + tuple(reversed(keys)), axis=-1).astype(np.int64)


def order_regions(scores, ordering="morf", seed=0, *, index=None, ties=None) -> np.ndarray:
    """Order the regions of every image. scores (N, R) -> order (N, R): region indices, the
    first to be distorted first.

    "morf":   most relevant first (highest score first);
    "lerf":   least relevant first (lowest, i.e. most negative, score first);
    "random": a seeded random permutation per image (scores give only the shape): the baseline
              any heatmap should beat.
    Exact ties are broken by a seeded random permutation, or by the key ``ties`` ("index" or
    an (N, R) array, see ``_ties``). index: the images' indices in their data set (random
    draws are keyed by them; default 0..N-1)."""
    s = _scores(scores)
    seed = _check_seed(seed)
    if ordering == "morf":
        return _lexorder(-s, seed=seed, index=index, ties=ties)
    if ordering == "lerf":
        return _lexorder(s, seed=seed, index=index, ties=ties)
    if ordering == "random":
        return random_order(s.shape[0], s.shape[1], seed, index=index)
    if ordering in COMBINED:
        raise MinilrpError(f"ordering {ordering!r} combines SA and LRP: use combined_order(sa, lrp, "
                           f"{ordering!r})")
    raise MinilrpError(f"unknown ordering {ordering!r}; orderings: "
                       f"{', '.join(ORDERINGS + tuple(COMBINED))}")


def random_order(N, n_regions, seed=0, *, index=None) -> np.ndarray:
    """(N, R) seeded random permutations, one per image (image n uses the stream
    (seed, index[n]), index = 0..N-1 by default, so an image gets the same order whatever N is
    and whatever part of a data set it is processed in)."""
    seed = _check_seed(seed)
    index = _index(index, N)
    if N == 0:
        return np.zeros((0, n_regions), np.int64)
    return np.stack([_rng(seed, _ORDER, n).permutation(n_regions) for n in index]).astype(np.int64)


def combined_order(sa_scores, lrp_scores, ordering, seed=0, top=0.5, *, index=None,
                   ties=None) -> np.ndarray:
    """Orderings that use SA and LRP together to find *inessential* regions: distorting them
    first should keep the class score up, or raise it. Both maps are rank-normalised per image
    (:func:`rank_normalise`: r = 0 lowest .. 1 highest), so squared gradients and signed relevance
    compare. sa_scores, lrp_scores: (N, R) region scores -> order (N, R).

    (a) "sa_not_lrp": regions outside LRP's top ``top`` fraction (r_LRP <= 1 - top) first,
        ordered by SA, most sensitive first; then LRP's top regions, least relevant first.
        Rationale: the model reacts to changes there (SA) but they carry no positive evidence
        (LRP), so a change is as likely to help the class as to hurt it.
    (b) "lrp_negative": most negative LRP first (then the rest, ascending). On a signed map this
        is LRP's LeRF; it is listed because the seed study named it: the counter-evidence
        itself, whose removal should raise the score.
    (c) "counter_evidence": regions with negative LRP first, ordered by r(-LRP) x r_SA (most
        negative and most sensitive first); then the rest by ascending LRP. Rationale: of the
        counter-evidence, distort first what the model is also sensitive to, where removal
        moves the score most.
    (d) "consensus_irrelevant": ascending max(r_SA, r_LRP) (ties: ascending r_SA + r_LRP), so a
        region comes early only when *both* maps rank it low. Rationale: the most conservative
        choice of unimportant regions; its curve should stay flat, above random.
    (a') "sa_minus_lrp": the seed study's "SA-sensitive but not LRP-relevant first" read
        literally: descending r_SA - r_LRP over all regions (the :func:`disagreement` map, red
        first), with no cut at LRP's top fraction (``top`` is unused).

    index, ties: as in :func:`order_regions`.
    """
    sa, lrp = _scores(sa_scores, "SA region scores"), _scores(lrp_scores, "LRP region scores")
    if sa.shape != lrp.shape:
        raise MinilrpError(f"SA and LRP region scores differ in shape: {sa.shape} vs {lrp.shape}")
    seed = _check_seed(seed)
    if not 0 < top < 1:
        raise MinilrpError(f"top must be a fraction in (0, 1), got {top}")
    r_sa, r_lrp = rank_normalise(sa), rank_normalise(lrp)
    kw = dict(seed=seed, index=index, ties=ties)
    if ordering == "sa_not_lrp":
        in_top = r_lrp > 1 - top
        return _lexorder(in_top.astype(float), np.where(in_top, r_lrp, -r_sa), **kw)
    if ordering == "lrp_negative":
        return _lexorder(lrp, **kw)
    if ordering == "counter_evidence":
        negative = lrp < 0
        return _lexorder((~negative).astype(float),
                         np.where(negative, -rank_normalise(-lrp) * r_sa, r_lrp), **kw)
    if ordering == "consensus_irrelevant":
        return _lexorder(np.maximum(r_sa, r_lrp), r_sa + r_lrp, **kw)
    if ordering == "sa_minus_lrp":
        return _lexorder(r_lrp - r_sa, **kw)
    raise MinilrpError(f"unknown combined ordering {ordering!r}; combined orderings: "
                       f"{', '.join(COMBINED)}")


def disagreement(sa_scores, lrp_scores, regions: Regions) -> np.ndarray:
    """SA rank minus LRP rank (both rank-normalised) painted onto the pixels: (N, H, W) in
    [-1, 1]. Positive where SA finds a region more important than LRP does (sensitive but not
    evidence), negative where LRP does (evidence the gradient does not see). Render it with a
    diverging colormap centred on 0 (minilrp.pictures.plots.plot_disagreement)."""
    sa, lrp = _scores(sa_scores, "SA region scores"), _scores(lrp_scores, "LRP region scores")
    if sa.shape != lrp.shape:
        raise MinilrpError(f"SA and LRP region scores differ in shape: {sa.shape} vs {lrp.shape}")
    return regions.paint(rank_normalise(sa) - rank_normalise(lrp))


# ============================================================================== perturbations

def _per_channel(v, C):
    return np.asarray(v, dtype=np.float64).reshape(-1, 1, 1) * np.ones((C, 1, 1))


class Perturbation:
    """How a distorted region is filled. A perturbation is *resolved* against a network and the
    evaluation images (valid input range, dataset statistics) before use; then, per image and
    draw, :meth:`draw` gives a fill image (C, H, W) from a seeded generator, and :meth:`apply`
    puts it into the masked pixels of a batch. Pixels outside the mask are never touched;
    pixels inside stay in the network's valid input range [low, high]."""

    name = "perturbation"
    stochastic = False  # True when different draws give different fills
    mask_independent = True  # apply() is np.where(mask, fill, x): the fill ignores the mask

    resolved = False

    def resolve(self, net, x):
        """A copy bound to ``net``'s valid input range and the images x (N, C, H, W). An already
        resolved perturbation is returned as it is (after checking it was resolved for the same
        input range): resolve it once on a fixed set of images, and a data set processed in
        parts gets the same fill values (the background, the mean) in every part."""
        C = x.shape[1]
        low, high = _per_channel(net.input_low, C), _per_channel(net.input_high, C)
        if self.resolved:
            if self.low.shape != low.shape or np.any(self.low != low) or np.any(self.high != high):
                raise MinilrpError(f"perturbation {self.name} was resolved for another network's "
                                   "input range or channels")
            return self
        import copy
        bound = copy.copy(self)
        bound.low, bound.high = low, high
        bound._bind(x)
        bound.resolved = True
        return bound

    def _bind(self, x):
        pass

    def draw(self, image, rng) -> np.ndarray:
        """The fill (C, H, W) for one image (C, H, W)."""
        raise NotImplementedError

    def fill(self, image, rng, index, draw) -> np.ndarray:
        """The fill (C, H, W) of draw ``draw`` for the image (C, H, W) with data-set index
        ``index``; rng is the stream seeded by (seed, purpose, index, draw). By default
        :meth:`draw` from that stream; fills given per image (:class:`NoiseField`) use index."""
        return self.draw(image, rng)

    def apply(self, x, fill, mask) -> np.ndarray:
        """x, fill: (B, C, H, W); mask: bool (B, H, W), True = distorted -> (B, C, H, W)."""
        return np.where(mask[:, None], fill, x)

    def __repr__(self):
        return self.name


class UniformNoise(Perturbation):
    """Each distorted pixel and channel drawn uniformly from the valid input range [low, high]
    of its channel (Samek et al. 2017). The default. Stochastic: several draws can be averaged."""

    name = "uniform"
    stochastic = True

    def draw(self, image, rng):
        u = rng.random(image.shape)
        return (self.low + (self.high - self.low) * u).astype(image.dtype)


class Constant(Perturbation):
    """A constant fill, per channel. value:

    a number (or one per channel) in the network's input space, within [low, high];
    "zero":       0 in the input space (black for inputs in [0, 1]; the dataset mean when the
                  model normalises by it);
    "min":        each image's own per-channel minimum;
    "mean":       the per-channel mean of the evaluation images;
    "background": the data's background value: per channel, the median of the one-pixel image
                  border over the evaluation images (0 for Fashion-MNIST). A fill equal to the
                  background changes nothing on the background: distorting empty regions is a
                  no-op, unlike uniform noise, which draws new strokes there.
    """

    stochastic = False

    def __init__(self, value="zero"):
        if isinstance(value, str):
            if value not in ("zero", "min", "mean", "background"):
                raise MinilrpError(f"constant value must be a number, 'zero', 'min', 'mean' or "
                                   f"'background', got {value!r}")
        else:
            v = np.asarray(value, dtype=np.float64)
            if v.ndim > 1 or not np.all(np.isfinite(v)):
                raise MinilrpError(f"constant value must be finite, one per channel, got {value!r}")
        self.value = value
        self.name = f"constant:{value}" if isinstance(value, str) else f"constant:{value!r}"

    def _bind(self, x):
        C = x.shape[1]
        if self.value == "mean":
            self.fill_value = _per_channel(x.mean(axis=(0, 2, 3), dtype=np.float64), C)
        elif self.value == "background":
            border = np.concatenate([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], axis=2)
            self.fill_value = _per_channel(np.median(border, axis=(0, 2)), C)
        elif self.value == "zero":
            self.fill_value = np.zeros((C, 1, 1))
        elif self.value != "min":
            v = np.asarray(self.value, dtype=np.float64).reshape(-1)
            if v.size not in (1, C):
                raise MinilrpError(f"constant value needs 1 or {C} per-channel values, got {v.size}")
            self.fill_value = _per_channel(v, C)
        if self.value != "min":
            fv = self.fill_value
            if np.any(fv < self.low - 1e-6) or np.any(fv > self.high + 1e-6):
                raise MinilrpError(f"constant fill {fv.ravel()} lies outside the valid input "
                                   f"range [{self.low.ravel()}, {self.high.ravel()}]")
            self.fill_value = np.clip(fv, self.low, self.high)

    def draw(self, image, rng):
        if self.value == "min":
            return np.broadcast_to(image.min(axis=(1, 2), keepdims=True), image.shape).astype(image.dtype)
        return np.broadcast_to(self.fill_value, image.shape).astype(image.dtype)


class GaussianBlur(Perturbation):
    """Distorted pixels take the values of the Gaussian-blurred *original* image
    (scipy.ndimage.gaussian_filter per channel, std ``sigma`` pixels, border mode "nearest").
    The blur is of x_0, not of the partly distorted x_k: every region gets the same fill
    whenever it is distorted, so curves are cumulative like the others."""

    stochastic = False

    def __init__(self, sigma=2.0):
        if not np.isfinite(sigma) or sigma <= 0:
            raise MinilrpError(f"blur sigma must be a positive number of pixels, got {sigma!r}")
        self.sigma = float(sigma)
        self.name = f"blur:{self.sigma:g}"

    def draw(self, image, rng):
        from scipy.ndimage import gaussian_filter
        b = gaussian_filter(image.astype(np.float64), sigma=(0, self.sigma, self.sigma), mode="nearest")
        return np.clip(b, self.low, self.high).astype(image.dtype)


# ROAD's neighbour weights (Rong et al. 2022): 1/6 for the 4 direct neighbours, 1/12 diagonal.
_ROAD_NEIGHBOURS = [((0, 1), 1 / 6), ((0, -1), 1 / 6), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
                    ((1, 1), 1 / 12), ((1, -1), 1 / 12), ((-1, 1), 1 / 12), ((-1, -1), 1 / 12)]


class NoisyLinearImputation(Perturbation):
    """ROAD's noisy linear imputation (Rong et al. 2022, "A consistent and efficient evaluation
    strategy for attribution methods"): each distorted pixel becomes the weighted mean of its 8
    neighbours (weights 1/6 direct, 1/12 diagonal, renormalised at the image border), distorted
    neighbours being unknowns too: one sparse linear system per image and step, solved with
    scipy.sparse (all items of a batch in one block-diagonal system). Then Gaussian noise of std
    ``noise`` x (high - low) is added inside the region and the result clipped to [low, high].
    The fill depends on the whole mask, so each step is imputed afresh (slower than the other
    fills). A fully distorted image has no known pixel: it is filled with the per-channel mean
    of the evaluation images (plus the noise)."""

    stochastic = True
    mask_independent = False

    def __init__(self, noise=0.01):
        if not np.isfinite(noise) or noise < 0:
            raise MinilrpError(f"ROAD noise must be >= 0, got {noise!r}")
        self.noise = float(noise)
        self.name = f"road:{self.noise:g}"

    def _bind(self, x):
        self.mean = x.mean(axis=(0, 2, 3), dtype=np.float64)

    def draw(self, image, rng):
        return (rng.standard_normal(image.shape) * self.noise * (self.high - self.low)).astype(image.dtype)

    def apply(self, x, fill, mask):
        from scipy.sparse import csc_matrix
        from scipy.sparse.linalg import spsolve
        B, C, H, W = x.shape
        out = x.astype(np.float64)  # a copy
        full = mask.all(axis=(1, 2))
        out[full] = self.mean[:, None, None]
        solve = mask & ~full[:, None, None]
        n_unknown = int(solve.sum())
        if n_unknown:
            uid = np.full(mask.shape, -1, np.int64)
            uid[solve] = np.arange(n_unknown)
            b, i, j = np.nonzero(solve)
            rows, cols, vals = [np.arange(n_unknown)], [np.arange(n_unknown)], []
            diag = np.zeros(n_unknown)
            rhs = np.zeros((n_unknown, C))
            for (di, dj), w in _ROAD_NEIGHBOURS:
                ni, nj = i + di, j + dj
                ok = (ni >= 0) & (ni < H) & (nj >= 0) & (nj < W)
                p, nb, ni, nj = np.nonzero(ok)[0], b[ok], ni[ok], nj[ok]
                diag[p] += w
                known = ~mask[nb, ni, nj]
                rhs[p[known]] += w * out[nb[known], :, ni[known], nj[known]]
                rows.append(p[~known])
                cols.append(uid[nb[~known], ni[~known], nj[~known]])
                vals.append(np.full(int((~known).sum()), -w))
            A = csc_matrix((np.concatenate([diag] + vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(n_unknown, n_unknown))
            sol = spsolve(A, rhs).reshape(n_unknown, C)
            out[b, :, i, j] = sol
        out = np.where(mask[:, None], np.clip(out + fill, self.low, self.high), x)
        return out.astype(x.dtype)


class NoiseField(Perturbation):
    """Fills supplied by the user, one per image of the data set (and per draw): reproduces
    another tool's run exactly, where its noise was recorded. field: an array or the path of an
    ``.npy`` file (memory-mapped, so it need not fit in memory), shaped (M, C, H, W) (one fill
    per image: deterministic) or (M, D, C, H, W) (D draws per image: stochastic, n_draws <= D),
    in the network's input space, indexed by the images' data-set index (``index=`` of the curve
    functions; M >= the largest index + 1). Every distorted pixel takes its field value, which
    must lie in the valid input range. The oracle uses the same field (it has no stream of its
    own)."""

    def __init__(self, field):
        self.path = None
        if isinstance(field, (str, bytes)) or hasattr(field, "__fspath__"):
            import os
            self.path = os.fspath(field)
            try:
                self._field = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise MinilrpError(f"noise field {self.path}: cannot read it as a .npy array ({e})") from None
        else:
            self._field = np.asarray(field)
        f = self._field
        if f.dtype.kind != "f" or f.ndim not in (4, 5) or f.shape[0] == 0:
            raise MinilrpError(f"a noise field must be a float array (images, C, H, W) or (images, "
                               f"draws, C, H, W), got {f.dtype} {f.shape}"
                               + (f" in {self.path}" if self.path else ""))
        self.n_field_draws = f.shape[1] if f.ndim == 5 else 1
        self.stochastic = self.n_field_draws > 1
        self.name = f"field:{self.path}" if self.path else "field"

    def __getstate__(self):  # sent to other processes: the path, not the (mapped) data
        state = dict(self.__dict__)
        if self.path is not None:
            state["_field"] = None
        return state

    def _data(self):
        if self._field is None:
            self._field = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._field

    def _bind(self, x):
        shape = self._data().shape[-3:]
        if shape != x.shape[1:]:
            raise MinilrpError(f"{self.name}: fills of shape {shape} do not fit images of shape {x.shape[1:]}")

    def fill(self, image, rng, index, draw):
        f = self._data()
        if index >= f.shape[0]:
            raise MinilrpError(f"{self.name} has fills for {f.shape[0]} images; image {index} has none")
        if draw >= self.n_field_draws:
            raise MinilrpError(f"{self.name} has {self.n_field_draws} draw(s) per image; draw {draw} was asked for")
        v = np.asarray(f[index, draw] if f.ndim == 5 else f[index], dtype=np.float64)
        if not np.all(np.isfinite(v)) or np.any(v < self.low - 1e-6) or np.any(v > self.high + 1e-6):
            raise MinilrpError(f"{self.name}: the fill of image {index} has values outside the valid "
                               f"input range [{self.low.ravel()}, {self.high.ravel()}] (or NaN)")
        return v.astype(image.dtype)


PERTURBATIONS = {
    "uniform": UniformNoise,
    "constant": Constant,
    "blur": GaussianBlur,
    "road": NoisyLinearImputation,
    "field": NoiseField,
}


def get_perturbation(spec) -> Perturbation:
    """A Perturbation from an object or a name with an optional parameter after a colon:
    "uniform", "constant" (= "constant:zero"), "constant:background", "constant:mean",
    "constant:min", "constant:0.5", "blur" (sigma 2), "blur:1.5", "road" (noise 0.01),
    "road:0.05", "field:noise.npy" (fills supplied per image, :class:`NoiseField`)."""
    if isinstance(spec, Perturbation):
        return spec
    if not isinstance(spec, str):
        raise MinilrpError(f"a perturbation must be a name or a Perturbation, got {spec!r}")
    name, _, arg = spec.partition(":")
    if name not in PERTURBATIONS:
        raise MinilrpError(f"unknown perturbation {spec!r}; perturbations: "
                           "uniform, constant[:zero|min|mean|background|<number>], blur[:sigma], road[:noise], field:<file.npy>")
    if name == "field":
        if not arg:
            raise MinilrpError("perturbation 'field' needs a file: field:<noise.npy>")
        return NoiseField(arg)
    if not arg:
        return PERTURBATIONS[name]()
    if name == "uniform":
        raise MinilrpError("uniform noise takes no parameter: it spans the model's valid input range")
    if name == "constant" and arg in ("zero", "min", "mean", "background"):
        return Constant(arg)
    try:
        value = float(arg)
    except ValueError:
        raise MinilrpError(f"perturbation {spec!r}: parameter {arg!r} is not a number") from None
    return PERTURBATIONS[name](value)


# ============================================================================== curves

def _check_images(net, x):
    if len(net.input_shape) != 3:
        raise MinilrpError(f"region perturbation needs image inputs (C, H, W); the network takes "
                           f"{net.input_shape}")
    return net.check_input(x)


def _check_order(order, N, R):
    o = np.asarray(order)
    if o.dtype.kind not in "iu" or o.ndim != 2 or o.shape[0] != N:
        raise MinilrpError(f"an order must be an int array (N={N}, L), got {o.dtype} {o.shape}")
    if o.shape[1] > R:
        raise MinilrpError(f"the order has {o.shape[1]} steps but there are only {R} regions")
    if o.size and (o.min() < 0 or o.max() >= R):
        raise MinilrpError(f"order entries must be region indices in 0..{R - 1}")
    srt = np.sort(o, axis=1)
    if np.any(srt[:, 1:] == srt[:, :-1]):
        raise MinilrpError("an order lists a region twice: each region is distorted once")
    return o.astype(np.int64)


def _steps(steps, order, R):
    L = order.shape[1]
    if steps is None:
        return L
    steps = _int(steps, "steps")
    if steps > R:
        raise MinilrpError(f"more steps ({steps}) than regions ({R})")
    if steps > L:
        raise MinilrpError(f"more steps ({steps}) than the order has ({L})")
    return steps


def _pixel_ranks(labels, order, R):
    """(N, H, W): the step at which each pixel is distorted minus 1, i.e. its region's position
    in the order; pixels in no region or in a region not in the order get a position >= L."""
    N, L = order.shape
    position = np.full((N, R + 1), np.iinfo(np.int64).max // 2, np.int64)
    np.put_along_axis(position, order, np.arange(L)[None, :], axis=1)
    idx = np.where(labels < 0, R, labels).reshape(N, -1)
    return np.take_along_axis(position, idx, axis=1).reshape(labels.shape)


def _score(logits, t, score):
    rows = np.arange(len(t))
    if score == "logit":
        return logits[rows, t].astype(np.float64)
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z[rows, t]) / np.exp(z).sum(axis=1)


def _check_score(score):
    if score not in ("logit", "probability"):
        raise MinilrpError(f"score must be 'logit' or 'probability', got {score!r}")


def forward_batched(net, x, batch_size=DEFAULT_BATCH) -> np.ndarray:
    """Logits (N, K) in batches of ``batch_size``, by the inference-only forward (no caches)."""
    return inference.logits(net, x, batch_size)


def perturb(net, x, regions: Regions, order, k, perturbation="uniform", seed=0, draw=0, *,
            index=None) -> np.ndarray:
    """x_k: the images x (N, C, H, W) with the first k regions of ``order`` (N, L) distorted
    -> (N, C, H, W). The same fills as :func:`perturbation_curves` with the same seed and
    index (for looking at the distorted images; the curves build them in batches)."""
    x = _check_images(net, x)
    N = len(x)
    _check_regions(regions, x)
    order = _check_order(order, N, regions.n_regions)
    k = _int(k, "k", low=0)
    if k > order.shape[1]:
        raise MinilrpError(f"step {k} is past the order's {order.shape[1]} steps")
    pert = get_perturbation(perturbation).resolve(net, x)
    seed = _check_seed(seed)
    index = _index(index, N)
    fills = np.stack([pert.fill(x[n], _rng(seed, _FILL, i, draw), i, draw) for n, i in enumerate(index)])
    mask = _pixel_ranks(regions.per_image(N), order, regions.n_regions) < k
    return pert.apply(x, fills, mask)


def _check_regions(regions, x):
    if not isinstance(regions, Regions):
        raise MinilrpError(f"regions must be a Regions object (from grid or sliding_windows), got {regions!r}")
    if tuple(regions.image_shape) != x.shape[2:]:
        raise MinilrpError(f"regions for images of size {tuple(regions.image_shape)} do not fit "
                           f"images of size {x.shape[2:]}")


def _changed_regions(pert, x, labels, R, seed, stream, D, index):
    """(N, D, R) bool: does distorting region r of image n (draw d) change any pixel? False where
    the fill equals the image (a constant fill equal to the background, on blank regions): that
    step's image equals the previous one, so it is not scored again. Always True for fills
    that depend on the whole mask (ROAD)."""
    N = len(x)
    if not pert.mask_independent:
        return np.ones((N, D, R), bool)
    changed = np.empty((N, D, R), bool)
    for n in range(N):
        for d in range(D):
            diff = (pert.fill(x[n], _rng(seed, stream, index[n], d), index[n], d) != x[n]).any(axis=0)
            lab = labels[n][diff]
            changed[n, d] = np.bincount(lab[lab >= 0], minlength=R) > 0
    return changed


def _scorer_batch(net, n, batch_size):
    """Images a Scorer takes at a time: batch_size, fewer if net.memory_budget needs it (the
    scorer keeps every layer's input, as a forward of that many images holds them)."""
    return min(batch_size, net.chunks(max(1, n))[0].stop)


def _score_items(net, x, pert, t, score, seed, stream, D, index, img, draw, masks, batch_size, report):
    """Scores of the distorted images of items i: image img[i], fill draw draw[i], mask
    masks(selection) -> (B, H, W); in batches of batch_size, each batch's fills drawn from the
    per-(image, draw) streams, each item scored by recomputing only what its mask changed in its
    clean image (:class:`~minilrp.fast.inference.Scorer`). report(i) after each batch (i = last
    item done)."""
    out = np.empty(len(img))
    batch_size = _scorer_batch(net, len(img), batch_size)
    for s in range(0, len(img), batch_size):
        sel = slice(s, s + batch_size)
        pairs, inverse = np.unique(img[sel] * D + draw[sel], return_inverse=True)
        fills = np.stack([pert.fill(x[p // D], _rng(seed, stream, index[p // D], p % D), index[p // D], p % D)
                          for p in pairs])
        xb = pert.apply(x[img[sel]], fills[inverse.reshape(-1)], masks(sel))
        clean, at = np.unique(img[sel], return_inverse=True)  # each item: its clean image, one region distorted
        out[sel] = _score(inference.Scorer(net, x[clean]).update(at.reshape(-1), xb, keep=False), t[img[sel]], score)
        report(min(s + batch_size, len(img)) - 1)
    return out


def perturbation_curves(net, x, regions: Regions, order, perturbation="uniform", *, target=None,
                        score="logit", steps=None, n_draws=1, seed=0, batch_size=DEFAULT_BATCH,
                        progress=None, index=None) -> np.ndarray:
    """Region-perturbation curves: (N, L + 1) scores f(x_0), ..., f(x_L) per image.

    x: images (N, C, H, W); regions: from :func:`grid` or :func:`sliding_windows`; order (N, L):
    region indices, first distorted first (L <= R; ``steps`` cuts it shorter); perturbation: a
    name or a :class:`Perturbation`; target: None (the predicted class), an int or (N,) ints;
    score: "logit" or "probability" (softmax); n_draws: for stochastic fills, the curve is the
    mean over that many independent fills (deterministic fills use one).

    The distorted images are built from each image's fills (one per draw, from the stream
    (seed, index[n], draw); index: the images' indices in their data set, default 0..N-1, so
    that parts of a data set get the draws of the whole), ``batch_size`` images (and draws) at a
    time (fewer if ``net.memory_budget`` needs it), step after step: memory is bounded by the
    batch size, not by N. Each step is scored by
    :class:`~minilrp.fast.inference.Scorer`, which recomputes only what the newly distorted
    region changes (the same logits as a whole forward, to rounding). A step whose region the fill leaves unchanged (a
    constant equal to the background on a blank region) repeats the previous step's score
    without a forward pass. progress: optional callable(done, total), in distorted images."""
    x = _check_images(net, x)
    N = len(x)
    _check_regions(regions, x)
    R = regions.n_regions
    order = _check_order(order, N, R)
    L = _steps(steps, order, R)
    _check_score(score)
    seed = _check_seed(seed)
    n_draws = _int(n_draws, "n_draws")
    batch_size = _int(batch_size, "batch_size")
    index = _index(index, N)
    pert = get_perturbation(perturbation).resolve(net, x)
    D = n_draws if pert.stochastic else 1

    clean = forward_batched(net, x, batch_size)
    t = net.targets(target, clean)
    out = np.empty((N, L + 1, D))
    out[:, 0, :] = _score(clean, t, score)[:, None]
    if L == 0:
        return out[:, :, 0]
    labels = regions.per_image(N)
    # src[n, k, d]: the step whose image x_k equals (k itself unless step k changed nothing)
    changed = _changed_regions(pert, x, labels, R, seed, _FILL, D, index)   # (N, D, R)
    new = np.take_along_axis(changed, order[:, None, :L], axis=2).transpose(0, 2, 1)  # (N, L, D)
    steps_ = np.arange(1, L + 1)[None, :, None]
    src = np.concatenate([np.zeros((N, 1, D), np.int64),
                          np.maximum.accumulate(np.where(new, steps_, 0), axis=1)], axis=1)
    total, chains = N * L * D, np.arange(N * D)
    group = _scorer_batch(net, N * D, batch_size)
    for s in range(0, N * D, group):  # chains (image, draw), a group at a time, step by step
        n, d = np.divmod(chains[s:s + group], D)
        fills = np.stack([pert.fill(x[i], _rng(seed, _FILL, index[i], j), index[i], j) for i, j in zip(n, d)])
        ranks = _pixel_ranks(labels[n], order[n, :L], R)
        scorer = inference.Scorer(net, x[n])  # each step's images differ from the last in one region
        for k in range(1, L + 1):
            rows = np.flatnonzero(new[n, k - 1, d])
            if len(rows):
                xk = pert.apply(x[n[rows]], fills[rows], ranks[rows] < k)
                out[n[rows], k, d[rows]] = _score(scorer.update(rows, xk), t[n[rows]], score)
            if progress is not None:
                progress(s * L + k * len(n), total)
        del scorer  # before the next batch's: one batch's activations at a time
    out = np.take_along_axis(out, src, axis=1)
    return out.mean(axis=2) if D > 1 else out[:, :, 0]


def oracle_scores(net, x, regions: Regions, perturbation="uniform", *, target=None, score="logit",
                  n_draws=4, seed=0, batch_size=DEFAULT_BATCH, progress=None, index=None) -> np.ndarray:
    """The measured effect of each region alone: f(x) - mean over draws of f(x with only region r
    distorted) -> (N, R), large = distorting it hurts the score most.

    Ordered with "morf" ("lerf") it is the *oracle* ordering: the best MoRF (LeRF) any heatmap
    could achieve under this perturbation *to first order*: it ranks regions by their effect
    alone, and a cumulative curve also depends on how regions interact (a heatmap can beat it
    when, say, two regions matter only together). Its draws are independent of the curves'
    draws (own stream), so it is not fitted to the very noise the curves then use."""
    x = _check_images(net, x)
    N = len(x)
    _check_regions(regions, x)
    _check_score(score)
    seed = _check_seed(seed)
    n_draws = _int(n_draws, "n_draws")
    batch_size = _int(batch_size, "batch_size")
    index = _index(index, N)
    pert = get_perturbation(perturbation).resolve(net, x)
    D = n_draws if pert.stochastic else 1
    R = regions.n_regions
    clean = forward_batched(net, x, batch_size)
    t = net.targets(target, clean)
    f0 = _score(clean, t, score)
    labels = regions.per_image(N)
    out = np.repeat(f0[:, None, None], R, axis=1).repeat(D, axis=2)  # unchanged regions: f(x)
    changed = _changed_regions(pert, x, labels, R, seed, _ORACLE, D, index).transpose(0, 2, 1)  # (N, R, D)
    img, r, d = np.nonzero(changed)
    total = N * R * D

    def report(i):
        if progress is not None:
            progress(total if i == len(img) - 1 else int(img[i] * R * D + r[i] * D + d[i] + 1), total)

    out[img, r, d] = _score_items(net, x, pert, t, score, seed, _ORACLE, D, index, img, d,
                                  lambda sel: labels[img[sel]] == r[sel, None, None], batch_size, report)
    if len(img) == 0 and progress is not None:
        progress(total, total)
    return f0[:, None] - out.mean(axis=2)


def heatmap_curves(net, x, heatmap, ordering="morf", perturbation="uniform", region_size=None, *,
                   target=None, seed=0, index=None, ties=None, **kwargs) -> np.ndarray:
    """One call from a heatmap to curves: grid regions of ``region_size`` (default
    :func:`default_region_size`), region scores, ordering "morf", "lerf" or "random", then
    :func:`perturbation_curves` (``kwargs`` go there). heatmap: (N, H, W) or (N, C, H, W)
    matching x (N, C, H, W). -> (N, L + 1)."""
    x = _check_images(net, x)
    h = np.asarray(heatmap)
    if h.shape not in (x.shape, (x.shape[0],) + x.shape[2:]):
        raise MinilrpError(f"heatmap of shape {h.shape} does not match the images {x.shape}: "
                           f"expected {x.shape} or {(x.shape[0],) + x.shape[2:]}")
    regions = grid(x.shape[1:], region_size)
    order = order_regions(region_scores(h, regions), ordering, seed=seed, index=index, ties=ties)
    return perturbation_curves(net, x, regions, order, perturbation, target=target, seed=seed,
                               index=index, **kwargs)


# ============================================================================== results

def _curves(c, what="curves"):
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 1:
        raise MinilrpError(f"{what} must be an (N, L + 1) array, got shape {c.shape}")
    return c


def aopc(curves) -> np.ndarray:
    """Area over the perturbation curve per image (Samek et al. 2017):
    AOPC = 1/(L+1) sum_{k=0..L} (f(x_0) - f(x_k)).  (N, L + 1) -> (N,). Large under MoRF = the
    heatmap found what the score depends on; negative = the score rose on average."""
    c = _curves(curves)
    return (c[:, :1] - c).mean(axis=1)


def abpc(morf, lerf) -> np.ndarray:
    """Area between the LeRF and MoRF curves per image: 1/(L+1) sum_k (f_LeRF(x_k) - f_MoRF(x_k))
    = AOPC(MoRF) - AOPC(LeRF).  -> (N,)."""
    m, l = _curves(morf, "MoRF curves"), _curves(lerf, "LeRF curves")
    if m.shape != l.shape:
        raise MinilrpError(f"MoRF and LeRF curves differ in shape: {m.shape} vs {l.shape}")
    return (l - m).mean(axis=1)


def relative_to(curves, baseline) -> np.ndarray:
    """Curves minus a baseline's (usually the random ordering's) on the same images, step by
    step: (N, L + 1). Positive = the score stays higher than under the baseline."""
    c, b = _curves(curves), _curves(baseline, "baseline curves")
    if c.shape != b.shape:
        raise MinilrpError(f"curves {c.shape} and baseline {b.shape} differ in shape")
    return c - b


def summarize(values, ci="se", level=0.95, n_boot=2000, seed=0) -> dict:
    """Mean of per-image values with its uncertainty: {"mean", "se", "low", "high", "n"}.
    ci="se": low/high = mean -/+ z * standard error (normal approximation); ci="bootstrap":
    the percentile interval of ``n_boot`` seeded resamples of the images. se is NaN for n < 2."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise MinilrpError("summarize needs a non-empty array of finite values")
    if not 0 < level < 1:
        raise MinilrpError(f"level must be in (0, 1), got {level}")
    n, mean = v.size, float(v.mean())
    se = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    if ci == "se":
        from statistics import NormalDist  # not scipy.stats: its import alone takes ~1 s
        zq = NormalDist().inv_cdf(0.5 + level / 2)
        low, high = mean - zq * se, mean + zq * se
    elif ci == "bootstrap":
        rng = _rng(_check_seed(seed), 5)
        means = v[rng.integers(0, n, size=(_int(n_boot, "n_boot"), n))].mean(axis=1)
        low, high = (float(q) for q in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))
    else:
        raise MinilrpError(f"ci must be 'se' or 'bootstrap', got {ci!r}")
    return {"mean": mean, "se": se, "low": low, "high": high, "n": n}
