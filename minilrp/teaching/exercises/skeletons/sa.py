"""Exercise sa: sensitivity analysis (SA) from the gradient.

Implement ``sa`` below, then check it:

    python -m minilrp.check sa this_file.py

The checker runs your file in a separate process, on small inputs worked by hand and on
fresh random networks and images (the seed is printed; --seed reproduces them), with a time
limit per call. There, only minilrp's engine is available (net.forward, net.backward, the
layers): net.gradient, type(net).gradient, net.relevance and minilrp.sensitivity are blocked.

Background (Simonyan et al. 2014; Samek et al. 2017). Sensitivity analysis asks which pixels
would change the class score most if they changed: it maps the squared gradient of the target
class's logit f_t with respect to the input, summed over the colour channels:

    SA[n, y, x] = sum_c ( d f_t(x_n) / d x_n[c, y, x] )^2

Compute the gradient with the network's own forward and backward passes:

    logits = net.forward(x)          # (N, K); every layer caches its input
    g = net.backward(weights)        # (N, C, H, W): the gradient of sum(weights * logits)

where ``weights`` (N, K) is what you differentiate: for the target logit of each image, a
one-hot row at its target class.

Conventions:

- target=None: each image's predicted class (the argmax of its logits); an int: that class
  for every image; an int array of shape (N,): one class per image.
- The score is the logit (before the softmax), not the probability.
- Return (N, H, W), float64.
"""


def sa(net, x, target=None):
    """Sensitivity analysis maps.

    net:    a minilrp.Network (use net.forward and net.backward)
    x:      (N, C, H, W) float64, images in the network's input space
    target: None, an int, or an int array (N,)
    returns SA: (N, H, W) float64
    """
    raise NotImplementedError("write sa")
