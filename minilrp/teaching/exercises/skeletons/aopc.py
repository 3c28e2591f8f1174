"""Exercise aopc: region scores and the area over the perturbation curve (AOPC).

Implement ``region_scores`` and ``aopc`` below, then check them:

    python -m minilrp.check aopc this_file.py

The checker runs your file in a separate process, on small inputs worked by hand and on
fresh random ones (the seed is printed; --seed reproduces them), with a time limit per
call. minilrp itself cannot be imported there: write it with NumPy.

Background (Samek et al. 2017, "Evaluating the visualization of what a deep neural network
has learned"). A heatmap is evaluated by distorting image regions in the order it ranks them
and watching the class score f. The image is cut into a grid of s x s regions; a region's
score is the sum of the heatmap over it; MoRF ("most relevant first") distorts the regions in
decreasing score order, giving the curve f(x_0), f(x_1), ..., f(x_L) where x_k has the first
k regions distorted. A good heatmap makes the score fall fast; AOPC measures how fast:

    AOPC = 1/(L+1) * sum_{k=0..L} ( f(x_0) - f(x_k) )

Conventions (minilrp.perturbation's):

- region_scores: a heatmap (N, C, H, W) is first summed over its channels (signed values),
  (N, H, W) is used as it is. Regions are s x s blocks numbered row by row: region
  r = row * n_cols + col, with n_rows = ceil(H / s), n_cols = ceil(W / s); when s does not
  divide H (or W), the last row (column) of regions is smaller, and still counts.
- aopc: one value per image (N,), the k = 0 term (which is 0) included in the mean; positive
  when the score falls.
"""


def region_scores(heatmap, size):
    """Sum of a heatmap over each s x s grid region.

    heatmap: (N, C, H, W) or (N, H, W) float64
    size:    int s >= 1
    returns  scores: (N, R) float64, R = ceil(H/s) * ceil(W/s), row-major region order
    """
    raise NotImplementedError("write region_scores")


def aopc(curves):
    """Area over the perturbation curve, per image.

    curves: (N, L+1) float64, curves[n, k] = f(x_k) for image n
    returns (N,) float64
    """
    raise NotImplementedError("write aopc")
