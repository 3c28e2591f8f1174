"""Exercise epsilon_dense: LRP-epsilon through a Dense (fully connected) layer.

Implement ``epsilon_dense`` below, then check it:

    python -m minilrp.check epsilon_dense this_file.py

The checker runs your file in a separate process, on small inputs worked by hand and on
fresh random ones (the seed is printed; --seed reproduces them), with a time limit per
call. minilrp itself cannot be imported there: write it with NumPy.

Background (Bach et al. 2015; Montavon et al. 2019, "Layer-wise relevance propagation: an
overview"). A Dense layer computes z_k = sum_j a_j w_kj + b_k. LRP-epsilon hands the relevance
R_k of each output back to the inputs in proportion to their contributions a_j w_kj:

    R_j = sum_k  a_j w_kj / (z_k + eps * sign0(z_k))  *  R_k

computed in four steps (the same four steps serve every linear layer):

    1. z = a @ weight.T + bias                         (N, out)   the forward pre-activations
    2. s = R / (z + epsilon * sign0(z))                (N, out)
    3. c = s @ weight                                  (N, in)    (the backward pass of the layer)
    4. R_in = a * c                                    (N, in)

Conventions (minilrp's, the same as Zennit's; the checker compares with them):

- weight has PyTorch's layout (out_features, in_features): weight[k, j] connects input j to
  output k.
- The bias is in the denominator (it absorbs its share of the relevance). bias may be None:
  then there is no bias.
- sign0(z) = +1 where z >= 0 and -1 where z < 0 (so sign0(0) = +1, unlike np.sign): the
  stabiliser always moves the denominator *away* from zero.
- epsilon = 0 is LRP-0. Where a denominator is exactly 0 (possible only then), that output's
  relevance is dropped: it contributes 0 to every R_j, never NaN or inf.
- Work in float64 (the inputs are float64) and do not modify the inputs in place.
"""


def epsilon_dense(a, weight, bias, R, epsilon):
    """LRP-epsilon relevance of the inputs of a Dense layer.

    a:       (N, in_features)  float64, the layer's input (its forward cache)
    weight:  (out_features, in_features)
    bias:    (out_features,) or None
    R:       (N, out_features), the relevance of the layer's outputs
    epsilon: float >= 0
    returns  R_in: (N, in_features) float64
    """
    raise NotImplementedError("write epsilon_dense")
