"""Exercise zbox: the z^B (box) rule for the pixel layer.

Implement ``zbox_dense`` below, then check it:

    python -m minilrp.check zbox this_file.py

The checker runs your file in a separate process, on small inputs worked by hand and on
fresh random ones (the seed is printed; --seed reproduces them), with a time limit per
call. minilrp itself cannot be imported there: write it with NumPy.

Background (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep
Taylor decomposition"). The first layer sees pixels, which can be negative (after
normalisation) and are bounded: low <= x <= high. The z^B rule takes the bounds into account,
so that relevance is not just proportional to the pixel value. With w+ = max(w, 0),
w- = min(w, 0), and l, h the bounds of each input:

    z_kj = x_j w_kj - l_j w+_kj - h_j w-_kj            (each >= 0 when l <= x <= h)
    z_k  = sum_j z_kj
    R_j  = sum_k z_kj / (z_k + epsilon * sign0(z_k)) * R_k

In matrix form, with s = R / (z + epsilon * sign0(z)):

    R_in = x * (s @ W) - l * (s @ W+) - h * (s @ W-)

Conventions:

- weight is (out_features, in_features) as in PyTorch. The rule has no bias term (the biases
  cancel in z^B), so there is no bias argument.
- low and high are in the network's input space (after any normalisation) and can be given as
  floats (the same bound for every input), arrays of shape (in_features,), or arrays shaped
  like x: broadcast them.
- sign0(z) = +1 where z >= 0, -1 where z < 0; where a denominator is exactly 0, that output's
  relevance is dropped (never NaN).
- For a convolution (the usual first layer of a CNN) the same formula holds with the
  convolution and its transposed convolution in place of @ W.T and @ W.
- Work in float64 and do not modify the inputs in place.
"""


def zbox_dense(x, weight, low, high, R, epsilon):
    """z^B relevance of the pixels feeding a Dense layer.

    x:       (N, in_features) float64, the network input (the layer's input)
    weight:  (out_features, in_features)
    low, high: floats, or arrays broadcastable to x: the valid input range
    R:       (N, out_features), the relevance of the layer's outputs
    epsilon: float >= 0
    returns  R_in: (N, in_features) float64
    """
    raise NotImplementedError("write zbox_dense")
