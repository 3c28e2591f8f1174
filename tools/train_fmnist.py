#!/usr/bin/env python
"""Train the bundled Fashion-MNIST models with PyTorch (CPU) and export them to minilrp.

This is a *tool*, not part of minilrp: it needs torch (``pip install torch==2.13.0``, the CPU
build; never an unpinned torch), minilrp itself never imports torch.

Three models, all plain ``nn.Sequential`` stacks of layers minilrp implements (Dropout is used in
training only and is not exported):

* ``fmnist-mlp``  Flatten, Linear(784,256), ReLU, Linear(256,128), ReLU, Linear(128,10)
* ``fmnist-cnn``  LeNet-style: Conv5x5(1->32,p2), ReLU, MaxPool2, Conv5x5(32->64,p2), ReLU, MaxPool2,
                  Flatten, Linear(3136,128), ReLU, Linear(128,10)
* ``fmnist-vgg``  VGG-style: [Conv3x3(p1), ReLU] x2 (32 ch), MaxPool2, [Conv3x3(p1), ReLU] x2 (64 ch),
                  MaxPool2, Flatten, Linear(3136,256), ReLU, Linear(256,10)

Inputs are raw pixels scaled to [0, 1] (``x = uint8 / 255``) with NO mean/std normalisation, so
the valid input range is [0, 1] and background pixels are exactly 0.

Training is deterministic for a given seed, torch version and thread count: ``torch.manual_seed``
(weights, dropout), ``torch.use_deterministic_algorithms(True)``, ``torch.set_num_threads(2)`` and
a separately seeded ``torch.Generator`` for shuffling and augmentation.

Typical use (from the repository root)::

    python tools/train_fmnist.py --model cnn --epochs 15 --seed 0 \
        --data-dir /usr/share/datasets/fashion-mnist --out weights/

Trained state dicts (plus a small JSON of metadata) are kept in a scratch folder outside the
repository (``--scratch``, default /tmp/fmnist-train) so that ``--export-only`` can re-export
the weight files, the 1000-image test subset and the reference logits without retraining.

Outputs:

* ``<out>/fmnist-{mlp,cnn,vgg}.npz``        minilrp weight files (float32, see minilrp/io.py)
* ``<out>/fashion_mnist_test_1000.npz``     first 1000 test images (uint8), labels, class names
* ``<fixtures>/reference_logits.npz``       torch logits on those 1000 images, float64 and float32,
                                            for every model found in the scratch folder
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

DATASET_CREDIT = ("Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747), "
                  "MIT licence, copyright 2017 Zalando SE; Debian package dataset-fashion-mnist")

N_SUBSET = 1000

# Per-model training recipe. ``epochs`` is only the default for --epochs.
RECIPES = {
    "mlp": dict(name="fmnist-mlp", epochs=20, lr=1e-3, batch_size=128, dropout=0.0,
                augment=False),
    "cnn": dict(name="fmnist-cnn", epochs=15, lr=1e-3, batch_size=128, dropout=0.0,
                augment=False),
    "vgg": dict(name="fmnist-vgg", epochs=12, lr=1e-3, batch_size=128, dropout=0.3,
                augment=True),
}


# --------------------------------------------------------------------------------------- data

def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file as a uint8 array, checking the header."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, found {data.size} bytes of data")
    return data.reshape(dims).copy()


def load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    images, labels = None, None
    for suffix in ("", ".gz"):
        ip = data_dir / f"{prefix}-images-idx3-ubyte{suffix}"
        lp = data_dir / f"{prefix}-labels-idx1-ubyte{suffix}"
        if ip.exists() and lp.exists():
            images, labels = read_idx(ip), read_idx(lp)
            break
    if images is None:
        raise FileNotFoundError(f"no Fashion-MNIST {split} files in {data_dir}")
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"unexpected {split} shapes {images.shape} / {labels.shape}")
    return images, labels


def to_tensor(images: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """uint8 (N,28,28) -> (N,1,28,28) in [0,1]: x = uint8 / 255, no normalisation."""
    return torch.from_numpy(images).to(dtype).div_(255.0).unsqueeze(1)


# ------------------------------------------------------------------------------------- models

def build_model(kind: str, dropout: float = 0.0) -> nn.Sequential:
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 10),
        )
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(3136, 128), nn.ReLU(),
            nn.Linear(128, 10),
        )
    if kind == "vgg":
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            *drop, nn.Linear(3136, 256), nn.ReLU(),
            *drop, nn.Linear(256, 10),
        )
    raise ValueError(f"unknown model kind {kind!r}")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random horizontal flip (p=0.5) and a random integer shift of up to ``max_shift`` pixels
    in each direction (zero fill), drawn from ``gen``."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    p = max_shift
    padded = nn.functional.pad(x, (p, p, p, p))
    oy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    ar = torch.arange(28)
    rows = (oy[:, None] + ar)[:, :, None]          # (B,28,1)
    cols = (ox[:, None] + ar)[:, None, :]          # (B,1,28)
    bi = torch.arange(b)[:, None, None]
    return padded[bi, 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    return float((logits.argmax(1).numpy() == labels).mean())


# ----------------------------------------------------------------------------------- training

def setup_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def train_one(kind: str, epochs: int, seed: int, train, test, scratch: Path, command: str,
              threads: int) -> dict:
    recipe = RECIPES[kind]
    name = recipe["name"]
    setup_determinism(seed, threads)
    model = build_model(kind, recipe["dropout"])
    gen = torch.Generator().manual_seed(seed)

    xtr, ytr = to_tensor(train[0]), torch.from_numpy(train[1].astype(np.int64))
    xte = to_tensor(test[0])
    n = len(xtr)
    bs = recipe["batch_size"]
    steps_per_epoch = (n + bs - 1) // bs
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe["lr"], epochs=epochs, steps_per_epoch=steps_per_epoch,
        pct_start=0.15, anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
    loss_fn = nn.CrossEntropyLoss()

    print(f"[{name}] {n_params(model)} parameters, {epochs} epochs, batch {bs}, "
          f"Adam + one-cycle (max lr {recipe['lr']}), dropout {recipe['dropout']}, "
          f"augment {recipe['augment']}", flush=True)
    t_start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        tot_loss, tot_correct = 0.0, 0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            xb, yb = xtr[idx], ytr[idx]
            if recipe["augment"]:
                xb = augment(xb, gen)
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            tot_correct += int((out.argmax(1) == yb).sum())
        print(f"[{name}] epoch {epoch:2d}/{epochs}  train loss {tot_loss / n:.4f}  "
              f"train acc {tot_correct / n:.4f}  lr {sched.get_last_lr()[0]:.2e}  "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    train_seconds = time.perf_counter() - t_start

    test_acc = accuracy(logits_of(model, xte), test[1])
    print(f"[{name}] test accuracy (10k): {test_acc:.4f}   training time {train_seconds:.0f} s",
          flush=True)

    scratch.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), scratch / f"{name}.pt")
    meta = dict(name=name, kind=kind, epochs=epochs, seed=seed, training_command=command,
                test_accuracy=test_acc, train_seconds=round(train_seconds, 1),
                threads=threads, date=_dt.date.today().isoformat(),
                framework=f"torch {torch.__version__.split('+')[0]} (CPU)",
                recipe={k: v for k, v in recipe.items() if k != "epochs"},
                params_sha256=state_digest(model))
    (scratch / f"{name}.json").write_text(json.dumps(meta, indent=2))
    return meta


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------- export

def load_trained(kind: str, scratch: Path) -> tuple[nn.Sequential, dict]:
    name = RECIPES[kind]["name"]
    meta = json.loads((scratch / f"{name}.json").read_text())
    model = build_model(kind, meta["recipe"]["dropout"])
    model.load_state_dict(torch.load(scratch / f"{name}.pt", weights_only=True))
    model.eval()
    return model, meta


def to_minilrp(model: nn.Sequential, name: str, provenance: dict):
    """Translate a trained nn.Sequential to a minilrp Network (Dropout dropped)."""
    from minilrp import Conv2d, Dense, ReLU, MaxPool2d, Flatten
    from minilrp import Network

    layers = []
    for m in model:
        if isinstance(m, nn.Conv2d):
            if (m.stride != (1, 1) or m.dilation != (1, 1) or m.groups != 1
                    or m.kernel_size[0] != m.kernel_size[1] or m.padding[0] != m.padding[1]):
                raise ValueError(f"unsupported conv configuration {m}")
            layers.append(Conv2d(m.in_channels, m.out_channels, m.kernel_size[0], stride=1,
                                 padding=m.padding[0],
                                 weight=m.weight.detach().numpy().astype(np.float32),
                                 bias=m.bias.detach().numpy().astype(np.float32)))
        elif isinstance(m, nn.Linear):
            layers.append(Dense(m.in_features, m.out_features,
                                weight=m.weight.detach().numpy().astype(np.float32),
                                bias=m.bias.detach().numpy().astype(np.float32)))
        elif isinstance(m, nn.ReLU):
            layers.append(ReLU())
        elif isinstance(m, nn.MaxPool2d):
            if m.padding != 0 or m.dilation != 1 or m.ceil_mode:
                raise ValueError(f"unsupported pooling configuration {m}")
            layers.append(MaxPool2d(kernel_size=m.kernel_size, stride=m.stride))
        elif isinstance(m, nn.Flatten):
            layers.append(Flatten())
        elif isinstance(m, nn.Dropout):
            continue  # identity at inference time
        else:
            raise ValueError(f"cannot export layer {m}")
    return Network(layers, input_shape=(1, 28, 28), classes=list(CLASSES), name=name,
                   mean=[0.0], std=[1.0], input_range=([0.0], [1.0]),
                   provenance=provenance)


def same_npz(a: Path, b: Path) -> bool:
    """True if two .npz files hold the same array names, dtypes, shapes and bytes."""
    if not (a.exists() and b.exists()):
        return False
    with np.load(a, allow_pickle=False) as fa, np.load(b, allow_pickle=False) as fb:
        if sorted(fa.files) != sorted(fb.files):
            return False
        for k in fa.files:
            x, y = fa[k], fb[k]
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return False
    return True


def write_npz(path: Path, writer) -> None:
    """Write via ``writer(tmp_path)``, then replace ``path`` only if the content changed.

    .npz archives carry zip timestamps, so rewriting identical arrays would still change the
    file's bytes (and every SHA-256 other fixtures record of it); this keeps re-exports idempotent.
    """
    tmp = path.with_name(path.stem + ".tmp-export.npz")
    writer(tmp)
    if same_npz(tmp, path):
        tmp.unlink()
        print(f"unchanged {path} ({path.stat().st_size} bytes)")
    else:
        tmp.replace(path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


def export(kinds: list[str], scratch: Path, data_dir: Path, out: Path, fixtures: Path,
           check: bool = True) -> None:
    test_images, test_labels = load_split(data_dir, "test")
    sub_images = np.ascontiguousarray(test_images[:N_SUBSET], dtype=np.uint8)
    sub_labels = np.ascontiguousarray(test_labels[:N_SUBSET], dtype=np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    fixtures.mkdir(parents=True, exist_ok=True)

    # 1. the bundled test subset
    subset_path = out / "fashion_mnist_test_1000.npz"
    write_npz(subset_path, lambda p: np.savez_compressed(
        p, images=sub_images, labels=sub_labels, classes=np.array(CLASSES, dtype=np.str_)))
    images_sha = hashlib.sha256(sub_images.tobytes()).hexdigest()

    x10k = to_tensor(test_images)
    x32 = to_tensor(sub_images, torch.float32)
    x64 = to_tensor(sub_images, torch.float64)

    # 2. weights + reference logits for every trained model found in the scratch folder
    ref: dict[str, np.ndarray] = {
        "labels": sub_labels,
        "images_sha256": np.array(images_sha),
        "input_scaling": np.array("x = images.astype(dtype) / 255, shape (N,1,28,28); "
                                  "no mean/std normalisation"),
    }
    available = [k for k in ("mlp", "cnn", "vgg")
                 if (scratch / f"{RECIPES[k]['name']}.pt").exists()]
    missing = [k for k in kinds if k not in available]
    if missing:
        raise FileNotFoundError(f"no trained state dict for {missing} in {scratch}: train first")
    rows = []
    for kind in available:
        model, meta = load_trained(kind, scratch)
        name = meta["name"]
        # the accuracy recorded in the weight file is recomputed here from the exact weights
        test_acc = accuracy(logits_of(model, x10k), test_labels)
        if abs(test_acc - meta["test_accuracy"]) > 1e-9:
            print(f"WARNING {name}: recomputed test accuracy {test_acc} != "
                  f"training-time {meta['test_accuracy']}")
        l32 = logits_of(model, x32).numpy().astype(np.float32)
        l64 = logits_of(model.double(), x64).numpy().astype(np.float64)
        model.float()
        pred = l64.argmax(1).astype(np.int64)
        n_disagree = int((pred != l32.argmax(1)).sum())
        acc_sub = float((pred == sub_labels).mean())
        ref[f"{name}/float64"] = l64
        ref[f"{name}/float32"] = l32
        ref[f"{name}/predicted"] = pred
        ref[f"{name}/accuracy"] = np.float64(acc_sub)
        ref[f"{name}/test_accuracy_10k"] = np.float64(test_acc)
        print(f"{name}: 10k acc {test_acc:.4f}, 1000-subset acc {acc_sub:.4f}, "
              f"max |float32 - float64| logit {np.abs(l32 - l64).max():.2e}, "
              f"argmax disagreements {n_disagree}")

        if kind in kinds:
            provenance = {
                "dataset": DATASET_CREDIT,
                "training_command": meta["training_command"],
                "test_accuracy": test_acc,
                "test_accuracy_first_1000": acc_sub,
                "framework": meta["framework"],
                "seed": meta["seed"],
                "epochs": meta["epochs"],
                "date": meta["date"],
                "training": (f"Adam, one-cycle cosine LR (max {meta['recipe']['lr']}), "
                             f"batch {meta['recipe']['batch_size']}, cross-entropy, "
                             + (f"dropout {meta['recipe']['dropout']} before the dense layers "
                                "(training only, not exported), "
                                if meta["recipe"]["dropout"] else "no dropout, ")
                             + "augmentation: "
                             + ("random horizontal flip + random shift <= 2 px"
                                if meta["recipe"]["augment"] else "none")),
                "input": "x = uint8 / 255 in [0, 1], no mean/std normalisation",
            }
            wpath = out / f"{name}.npz"
            try:
                from minilrp import save
            except ImportError as e:
                print(f"  minilrp.io not importable ({e}); skipped writing {wpath}")
            else:
                net = to_minilrp(model, name, provenance)
                write_npz(wpath, lambda p: save(str(p), net))
                if check:
                    check_export(wpath, sub_images, l32, l64)
        rows.append((name, n_params(model), test_acc, acc_sub, meta["epochs"],
                     meta["train_seconds"], meta["training_command"]))

    ref_path = fixtures / "reference_logits.npz"
    for k, v in ref.items():
        if isinstance(v, np.ndarray) and v.dtype == object:
            raise TypeError(f"{k} is an object array")
    write_npz(ref_path, lambda p: np.savez_compressed(p, **ref))

    print("\n| model | parameters | test acc (10k) | acc (first 1000) | epochs | train time (s) |")
    print("|---|---|---|---|---|---|")
    for name, p, a10, a1, ep, sec, _ in rows:
        print(f"| {name} | {p:,} | {a10:.4f} | {a1:.4f} | {ep} | {sec:.0f} |")
    print()
    for *_, cmd in rows:
        print(cmd)


def check_export(path: Path, images: np.ndarray, l32: np.ndarray, l64: np.ndarray) -> None:
    """Reload a written weight file with minilrp and compare its logits with torch's."""
    from minilrp import load
    net32 = load(str(path))
    got32 = net32.forward(net32.preprocess(images))          # uint8 -> float32 / 255
    err32 = float(np.abs(got32.astype(np.float64) - l32).max())
    net64 = load(str(path), dtype=np.float64)
    got64 = net64.forward(net64.preprocess(images))          # uint8 -> float64 / 255
    err64 = float(np.abs(got64 - l64).max())
    n_pred = int((got32.argmax(1) != l64.argmax(1)).sum())
    print(f"  minilrp reload: max |logit - torch| float32 {err32:.2e}, float64 {err64:.2e}, "
          f"argmax disagreements {n_pred}")
    if not (err32 < 1e-4 and err64 < 1e-9):
        raise AssertionError(f"{path}: minilrp logits differ from torch "
                             f"(float32 {err32:.3e}, float64 {err64:.3e})")


# ---------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["mlp", "cnn", "vgg", "all"], default="all")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs (default per model, as bundled: mlp 20, cnn 15, vgg 12)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", type=Path, default=REPO / "weights",
                    help="where the minilrp weight files and the test subset go")
    ap.add_argument("--fixtures", type=Path, default=REPO / "tests" / "fixtures",
                    help="where reference_logits.npz goes")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/fmnist-train"),
                    help="torch state dicts + metadata (outside the repository)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export-only", action="store_true",
                    help="skip training; export the state dicts found in --scratch")
    ap.add_argument("--no-export", action="store_true", help="train only")
    args = ap.parse_args(argv)

    kinds = ["mlp", "cnn", "vgg"] if args.model == "all" else [args.model]
    command = "python tools/train_fmnist.py " + " ".join(shlex.quote(a) for a in argv)

    if not args.export_only:
        train = load_split(args.data_dir, "train")
        test = load_split(args.data_dir, "test")
        for kind in kinds:
            epochs = args.epochs if args.epochs is not None else RECIPES[kind]["epochs"]
            train_one(kind, epochs, args.seed, train, test, args.scratch, command, args.threads)
    if not args.no_export:
        export(kinds, args.scratch, args.data_dir, args.out, args.fixtures)


if __name__ == "__main__":
    main()
