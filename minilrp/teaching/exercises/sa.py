"""Exercise sa: sensitivity analysis from the network's own forward and backward passes."""
from __future__ import annotations

import numpy as np

from ...engine.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU
from ...engine.network import Network
from ...explain import sensitivity
from .shared import bundled, sample_inputs

TITLE = "Sensitivity analysis from the gradient"
FUNCTIONS = ["sa"]
SUMMARY = "SA_p = sum over channels c of (d f_t / d x_{c,p})^2, f_t the target logit"
# the student's process loads minilrp's engine (the network is an argument) and nothing else:
# net.gradient / net.relevance are guarded on the class, the rest of minilrp cannot be imported
POLICY = {"allowed": "net.forward, net.backward, net.targets and net.predict, the layers' own "
                     "forward/backward, NumPy and Python's standard library",
          "hint": "compute the gradient yourself with net.forward and net.backward",
          "engine": True, "guard_methods": ["gradient", "relevance"]}
HINTS = {"abs_sum": "you summed |gradient| over channels; SA sums the *squared* gradients",
         "norm": "you took the Euclidean norm sqrt(sum_c g^2); SA is the squared norm, "
                 "sum_c g^2 (no square root)",
         "square_of_sum": "you squared the channel *sum* (sum_c g)^2; SA sums the squares, "
                          "sum_c g^2",
         "not_squared": "the gradient was summed over channels without squaring",
         "softmax_probability": "this is the gradient of the softmax *probability*; SA "
                                "differentiates the target *logit* f_t (weight one-hot at "
                                "the target in net.backward)",
         "log_softmax": "this is the gradient of the log-softmax; SA differentiates the "
                        "target *logit* (weight one-hot at the target in net.backward)",
         "max_over_channels": "you took the maximum over channels; SA sums the squared "
                              "gradients over channels",
         "target_ignored": "the target argument was ignored (you explained the predicted "
                           "class): use the class given in target",
         "target_zero": "with target=None, explain each image's *predicted* class "
                        "(argmax of the logits), not class 0"}
USUAL_CAUSES = ["the output weighting: one-hot at the target class of each image",
                "target=None means the predicted class, an int means that class for "
                "every image, an array one class per image",
                "square, then sum over the channel axis (axis 1)"]


def mistakes(net, x, target):
    logits = net.forward(x)
    t = net.targets(target, logits)
    rows = np.arange(len(x))
    onehot = np.zeros_like(logits)
    onehot[rows, t] = 1
    g = net.backward(onehot)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g_prob = net.backward(p[rows, t][:, None] * (onehot - p))
    g_logp = net.backward(onehot - p)
    v = {"abs_sum": np.abs(g).sum(1), "norm": np.sqrt((g * g).sum(1)),
         "square_of_sum": g.sum(1) ** 2, "not_squared": g.sum(1),
         "softmax_probability": (g_prob ** 2).sum(1), "log_softmax": (g_logp ** 2).sum(1),
         "max_over_channels": (g * g).max(1)}
    other = np.zeros_like(logits)
    if target is not None:
        other[rows, logits.argmax(1)] = 1
        v["target_ignored"] = (net.backward(other) ** 2).sum(1)
    else:
        other[:, 0] = 1
        v["target_zero"] = (net.backward(other) ** 2).sum(1)
    return v


def add(book, cid, title, net, x, target):
    exp = sensitivity.sa(net, x, target)
    tv = target if target is None or isinstance(target, int) else np.asarray(target, dtype=np.int64)
    book.case(cid, title, "sa", [("net", net), ("x", x), ("target", tv)], exp,
              mistakes(net, x, target),
              output="SA", shape_doc="(N, H, W): summed over the channel axis",
              shape_hint=[{"shape": list(x.shape), "hint": "not summed over channels: SA is (N, H, W), "
                                                           "the sum over axis 1"}],
              nan_hint="NaN in the map: the gradient itself should be finite; check the output "
                       "weighting you pass to net.backward")


def committed(book):
    # a linear model: the gradient of logit k is the weight row k, SA its square
    net = Network([Flatten(), Dense(2, 2, weight=np.array([[1.0, 2.0], [3.0, -1.0]]), bias=np.array([0.0, 0.5]))],
                  (1, 1, 2), name="linear").astype(np.float64)
    x = np.array([[[[1.0, 2.0]]]])
    add(book, "hand_linear", "a linear model worked by hand: logits (5, 1.5), the gradient of the "
        "predicted logit is the weight row (1, 2), SA = (1, 4)", net, x, None)
    add(book, "hand_target", "the same model, target=1: the gradient is (3, -1), SA = (9, 1)", net, x, 1)


def tiny_cnn(g, channels, size, pool):
    hidden = 3 * ((size - size % 2) // 2) ** 2
    return Network([Conv2d(channels, 3, 3, padding=1, weight=g.standard_normal((3, channels, 3, 3)),
                           bias=g.standard_normal(3) * 0.1),
                    ReLU(), pool(2), Flatten(),
                    Dense(hidden, 4, weight=g.standard_normal((4, hidden)) * 0.3, bias=g.standard_normal(4) * 0.1)],
                   (channels, size, size), name=f"tiny-{channels}ch").astype(np.float64)


def fresh(book, rng):
    g = rng("one_channel")
    net1 = tiny_cnn(g, 1, 6, MaxPool2d)
    x1 = g.uniform(0, 1, (3, 1, 6, 6))
    add(book, "one_channel", "a random one-channel CNN, 3 images, target = the predicted class", net1, x1, None)
    g = rng("two_channels")
    net2 = tiny_cnn(g, 2, 5, AvgPool2d)
    x2 = g.uniform(-1, 1, (2, 2, 5, 5))
    add(book, "two_channels", "a two-channel input (squares summed over channels), predicted class", net2, x2, None)
    # targets other than the predicted classes, so that ignoring the target shows
    k = int(net2.forward(x2).argmax(1)[0] + 1) % 4
    add(book, "target_int", f"target={k} for every image (an int)", net2, x2, k)
    pred = net1.forward(x1).argmax(1)
    add(book, "target_array", "one target per image (an int array), none of them the predicted class",
        net1, x1, ((pred + rng("target_array").integers(1, 4, len(pred))) % 4).tolist())
    net = bundled("fmnist-cnn")
    if net is not None:
        x, idx = sample_inputs(net, rng("bundled"), 2)
        add(book, "bundled", f"the bundled fmnist-cnn on test images {idx.tolist()}", net, x, None)
