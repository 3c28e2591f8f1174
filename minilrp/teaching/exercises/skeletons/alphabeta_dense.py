"""Exercise alphabeta_dense: LRP-alpha-beta through a Dense layer.

Implement ``alphabeta_dense`` below, then check it:

    python -m minilrp.check alphabeta_dense this_file.py

The checker runs your file in a separate process, on small inputs worked by hand and on
fresh random ones (the seed is printed; --seed reproduces them), with a time limit per
call. minilrp itself cannot be imported there: write it with NumPy.

Background (Bach et al. 2015; Montavon et al. 2019). LRP-alpha-beta treats the positive and
the negative contributions to each output separately. With a+ = max(a, 0), a- = min(a, 0),
w+ = max(w, 0), w- = min(w, 0), b+ = max(b, 0), b- = min(b, 0):

    positive contributions to output k:  p_jk = a+_j w+_kj + a-_j w-_kj   (each >= 0)
    negative contributions:              q_jk = a+_j w-_kj + a-_j w+_kj   (each <= 0)
    z+_k = sum_j p_jk + b+_k             z-_k = sum_j q_jk + b-_k

    R_j = sum_k [ alpha * p_jk / stab(z+_k)  -  beta * q_jk / stab(z-_k) ] * R_k

with stab(z) = z + epsilon * sign0(z), sign0(z) = +1 where z >= 0, -1 where z < 0.

Conventions (minilrp's, the same as Zennit's, iNNvestigate's and Montavon et al.'s):

- alpha - beta = 1 (e.g. alpha=2, beta=1; alpha=1, beta=0 is the z+ rule), and the negative
  part is *subtracted* (beta >= 0). Some texts use another parametrisation, with
  alpha + beta = 1 and the negative part added; not this one.
- Inputs may be negative (a layer fed by normalised pixels): keep the a- terms.
- weight is (out_features, in_features) as in PyTorch; bias may be None (no bias).
- Where a stabilised denominator is exactly 0, that part of R_k is dropped (never NaN).
- Work in float64 and do not modify the inputs in place.

Hint: with P = a+ @ w+.T + a- @ w-.T, the positive part of R_j is
a+_j ((alpha R / stab(z+)) @ w+)_j + a-_j ((alpha R / stab(z+)) @ w-)_j; the negative part
is built the same way.
"""


def alphabeta_dense(a, weight, bias, R, alpha, beta, epsilon):
    """LRP-alpha-beta relevance of the inputs of a Dense layer.

    a:       (N, in_features) float64, the layer's input
    weight:  (out_features, in_features)
    bias:    (out_features,) or None
    R:       (N, out_features), the relevance of the outputs
    alpha, beta: floats with alpha - beta = 1, beta >= 0
    epsilon: float >= 0, the stabiliser of both denominators
    returns  R_in: (N, in_features) float64
    """
    raise NotImplementedError("write alphabeta_dense")
