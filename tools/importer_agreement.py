#!/usr/bin/env python
"""Print the agreement figures of the importers (the numbers in benchmarks/VGG16.md):
logits of the imported networks against PyTorch and onnxruntime, and the LRP presets on the
imported VGG-like net and VGG-16 against the committed Zennit fixtures.

    .venv/bin/python tools/importer_agreement.py            # needs torch, onnx, onnxruntime

Relative error = max |minilrp - reference| / max |reference|. The networks are those of
tests/test_importers.py (imported from it, so the figures are those the tests check).
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import test_importers as T  # noqa: E402
from minilrp.models.importers import (IMAGENET_MEAN, IMAGENET_STD, from_onnx, from_torch,  # noqa: E402
                               load_state_dict_strict, random_vgg_state_dict, vgg)


def main():
    import onnxruntime as ort
    import torch
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    print("| network | source | dtype | batch | relative error of the logits |")
    print("|---|---|---|---:|---:|")
    for name in T.SMALL:
        for double in (False, True):
            m, shape = T.small(torch, name, torch.float64 if double else None)
            net = from_torch(m, shape)
            x = np.random.default_rng(2).normal(size=(5,) + shape).astype(net.dtype)
            with torch.no_grad():
                ref = m(torch.from_numpy(x)).numpy()
            print(f"| {name} | PyTorch | {net.dtype} | 5 | {T.rel_err(net.forward(x), ref):.1e} |")
        if name != "chain_module":
            m, shape = T.small(torch, name)
            T.export(torch, m, shape, tmp / "m.onnx")
            x = np.random.default_rng(4).normal(size=(4,) + shape).astype(np.float32)
            ref = ort.InferenceSession(str(tmp / "m.onnx")).run(None, {"input": x})[0]
            print(f"| {name} | ONNX (onnxruntime) | float32 | 4 | {T.rel_err(from_onnx(tmp / 'm.onnx').forward(x), ref):.1e} |")
    with torch.device("meta"):
        model = vgg("vgg16")
    load_state_dict_strict(model, random_vgg_state_dict("vgg16", seed=0), assign=True)
    model.eval()
    x = T.imagenet_input(1, (3, 224, 224))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    net = from_torch(model, (3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    print(f"| VGG-16 | PyTorch | float32 | 1 | {T.rel_err(net.forward(x), ref):.1e} |")
    T.export(torch, model, (3, 224, 224), tmp / "vgg16.onnx")
    ref = ort.InferenceSession(str(tmp / "vgg16.onnx")).run(None, {"input": x})[0]
    print(f"| VGG-16 | ONNX (onnxruntime) | float32 | 1 | {T.rel_err(from_onnx(tmp / 'vgg16.onnx').forward(x), ref):.1e} |")
    del net, model

    print()
    print("| network (float64) | preset | relative error vs Zennit 0.5.1 | minilrp time |")
    print("|---|---|---:|---:|")
    f = np.load(T.FIXTURES / "importer_zennit_vgglike.npz")
    net = from_torch(T.vgglike_for_zennit(torch, float(f["bn_eps"])), (3, 32, 32),
                     mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for preset in T.PRESETS:
        R = net.relevance(f["x"], preset, target=f["targets"])
        print(f"| VGG-like with BatchNorm, 3x32x32, batch 2 | {preset} | {T.rel_err(R, f['R.' + preset]):.1e} | |")
    f = np.load(T.FIXTURES / "importer_zennit_vgg16.npz")
    x = T.imagenet_input(1, (3, 224, 224), seed=int(f["seed"]) + 1, dtype=np.float64)
    with torch.device("meta"):
        m = vgg("vgg16")
    load_state_dict_strict(m, random_vgg_state_dict("vgg16", seed=int(f["seed"]), dtype=np.float64), assign=True)
    net = from_torch(m.eval(), (3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, check=False)
    for preset in T.PRESETS:
        t = time.perf_counter()
        R = net.relevance(x, preset, target=f["targets"])
        t = time.perf_counter() - t
        Z = f[f"R.{preset}"]
        if Z.ndim == 3:
            R = R.sum(axis=1)
        print(f"| VGG-16, 224x224, batch 1 | {preset} | {T.rel_err(R, Z):.1e} | {t:.1f} s |")


if __name__ == "__main__":
    main()
