"""``python -m minilrp.demo``: classify the bundled Fashion-MNIST samples and explain them."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import sensitivity
from .data import available_models, load_model, load_samples
from .errors import MinilrpError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minilrp.demo", description=__doc__)
    p.add_argument("--model", default="fmnist-cnn", help="bundled model name or a .npz path")
    p.add_argument("--n-images", type=int, default=1000, help="how many sample images to classify")
    args = p.parse_args(argv)
    try:
        t0 = time.perf_counter()
        print("minilrp demo (the first run compiles numba kernels; later runs reuse the cache)")
        net = load_model(args.model)
        images, labels, classes = load_samples()
        n = min(max(args.n_images, 1), len(images))
        x = net.preprocess(images[:n])
        probs, pred = net.predict(x)
        print(f"{net.name}: accuracy on the first {n} Fashion-MNIST test images: {np.mean(pred == labels[:n]):.4f}")
        for i in range(5):
            print(f"  image {i}: predicted {classes[pred[i]]!r} (p={probs[i, pred[i]]:.3f}), true {classes[labels[i]]!r}")
        R = net.relevance(x[:5], "EpsilonGammaBox")
        S = sensitivity.sa(net, x[:5])
        print(f"EpsilonGammaBox relevance sums: {np.round(R.sum(axis=(1, 2, 3)), 3).tolist()}")
        print(f"SA maxima: {np.round(S.max(axis=(1, 2)), 4).tolist()}")
        print(f"\nRelevance ledger for image 0 (EpsilonGammaBox):\n{net.ledger.table(0)}")
        print(f"\ndone in {time.perf_counter() - t0:.1f} s; bundled models: {', '.join(available_models())}")
    except MinilrpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
