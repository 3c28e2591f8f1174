"""Convert a PyTorch or ONNX model into a minilrp weight file (.npz).

    python -m minilrp.convert vgg16.pth --arch vgg16 -o vgg16.npz
    python -m minilrp.convert model.onnx -o model.npz
    python -m minilrp.convert model.pt --trust-pickle --input-shape 3,32,32 -o model.npz
    python -m minilrp.convert --list-archs

A PyTorch file is read with ``torch.load(weights_only=True)``: a state dict (optionally
wrapped as {"state_dict": ...} or {"model": ...}) is loaded into the named architecture
(``--arch``: torchvision's VGG layouts and the bundled Fashion-MNIST models), strictly: a
missing or unexpected key or a shape mismatch is refused. A file holding a whole pickled
nn.Module is refused unless ``--trust-pickle`` is given, because unpickling it runs code from
the file (its class must also be importable). An ``.onnx`` file needs only the onnx package.

Errors are reported on one line and the exit status is 2; nothing is written then.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np

from .errors import MinilrpError

PROG = "python -m minilrp.convert"


def _floats(text, what):
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise MinilrpError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _ints(text, what):
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise MinilrpError(f"{what} must be comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in vals):
        raise MinilrpError(f"{what} must be positive, got {text!r}")
    return vals


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _classes(path):
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise MinilrpError(f"--classes {path}: {e.strerror}") from None
    return names


def _read_torch(path, args):
    """(module, state_dict or None) from a torch file."""
    try:
        import torch
    except ImportError:
        raise MinilrpError("reading a PyTorch file needs torch (pip install torch==2.13.0, the "
                           "CPU build), or export the model to ONNX") from None
    import pickle
    import zipfile
    if not zipfile.is_zipfile(path):
        raise MinilrpError(f"{path}: not a readable PyTorch file (torch.save writes a zip "
                           "archive; for ONNX name the file .onnx)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise MinilrpError(f"{path}: not a readable PyTorch file ({str(e).splitlines()[0]})") from None
        if not args.trust_pickle:
            raise MinilrpError(f"{path} holds pickled Python objects (a whole model?), which run "
                               "code when loaded; save a state dict instead "
                               "(torch.save(model.state_dict(), ...)) and pass --arch, or pass "
                               "--trust-pickle if you trust the file") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - unpickling fails in many ways
            raise MinilrpError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); the model's "
                               "class must be importable") from None
    except Exception as e:  # noqa: BLE001
        raise MinilrpError(f"{path}: not a readable PyTorch file ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(obj, torch.nn.Module):
        return obj, None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
            if key in obj and isinstance(obj[key], torch.nn.Module):
                return obj[key], None
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            # DataParallel checkpoints prefix every key with "module."
            if all(k.startswith("module.") for k in obj):
                obj = {k[len("module."):]: v for k, v in obj.items()}
            return None, obj
    raise MinilrpError(f"{path} holds a {type(obj).__name__}, neither a state dict nor an "
                       "nn.Module")


def convert(args) -> str:
    """Run one conversion; returns the summary line. Raises MinilrpError."""
    from .models.importers import ARCHITECTURES, from_onnx, from_torch
    from .models.io import save

    src = args.source
    if not os.path.isfile(src):
        raise MinilrpError(f"{src}: no such file")
    out = args.output
    if not out.endswith(".npz"):
        raise MinilrpError(f"the output {out!r} must end in .npz")
    spec = {}
    if args.arch is not None:
        if args.arch not in ARCHITECTURES:
            raise MinilrpError(f"unknown architecture {args.arch!r}; known: {', '.join(ARCHITECTURES)}")
        spec = ARCHITECTURES[args.arch]
    input_shape = _ints(args.input_shape, "--input-shape") if args.input_shape else spec.get("input_shape")
    mean = _floats(args.mean, "--mean") if args.mean else spec.get("mean")
    std = _floats(args.std, "--std") if args.std else spec.get("std")
    input_range = None
    if args.low is not None or args.high is not None:
        if args.low is None or args.high is None:
            raise MinilrpError("give both --low and --high")
        input_range = (_floats(args.low, "--low"), _floats(args.high, "--high"))
    classes = _classes(args.classes) or spec.get("classes")
    provenance = {"source_file": os.path.basename(src), "source_sha256": _sha256(src),
                  "conversion_command": " ".join([PROG] + list(getattr(args, "argv", sys.argv[1:])))}
    name = args.name or args.arch or os.path.splitext(os.path.basename(src))[0]
    common = dict(classes=classes, name=name, mean=mean, std=std, input_range=input_range,
                  provenance=provenance)

    if src.endswith(".onnx"):
        if args.arch:
            raise MinilrpError("--arch is for PyTorch state dicts; an ONNX file carries its graph")
        net = from_onnx(src, input_shape=input_shape, dtype=np.dtype(args.dtype).type, **common)
    else:
        module, state = _read_torch(src, args)
        if state is not None:
            if args.arch is None:
                raise MinilrpError(f"{src} holds a state dict (weights only): name its "
                                   f"architecture with --arch (one of {', '.join(ARCHITECTURES)})")
            num_classes = _num_classes(args.arch, state)
            module = _build_loaded(args.arch, num_classes, state, src)
            if num_classes is not None and classes is not None and len(classes) != num_classes:
                common["classes"] = None
        elif args.arch is not None:
            raise MinilrpError(f"{src} holds a whole model; --arch is only for state dicts")
        if input_shape is None:
            raise MinilrpError("give --input-shape C,H,W for this model")
        module.eval()
        net = from_torch(module, input_shape, check=not args.no_check, **common)
        if args.dtype == "float64":
            net.astype(np.float64)
    try:
        save(out, net)
    except OSError as e:
        raise MinilrpError(f"cannot write {out}: {e.strerror}") from None
    n_params = sum(p.size for layer in net.layers for p in layer.params().values())
    return (f"wrote {out}: {net.name}, {len(net.layers)} layers, {n_params:,} parameters, "
            f"input {net.input_shape}, {net.n_classes} classes, {net.dtype}")


def _build_loaded(arch, num_classes, state, src):
    """The architecture with the state dict's tensors as its parameters. Built on the meta
    device when the state dict covers every entry (no random init, no copy of the weights)."""
    import torch

    from .models.importers import build_architecture, load_state_dict_strict
    # floats other than float32/64 (half precision checkpoints) compute in float32
    state = {k: v.float() if v.is_floating_point() and v.dtype not in (torch.float32, torch.float64)
             else v for k, v in state.items()}
    with torch.device("meta"):
        module = build_architecture(arch, num_classes)
    complete = set(module.state_dict()) <= set(state)
    if not complete:  # e.g. no num_batches_tracked: let those keep their initial values
        module = build_architecture(arch, num_classes)
    return load_state_dict_strict(module, state, f"the state dict in {src}", assign=complete)


def _num_classes(arch, state):
    """Output count of the state dict's last Linear, so a fine-tuned head loads."""
    if arch.startswith("vgg") and "classifier.6.weight" in state:
        return int(state["classifier.6.weight"].shape[0])
    return None


def parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("source", nargs="?", help="a PyTorch state dict / model file, or an .onnx file")
    p.add_argument("-o", "--output", help="the minilrp weight file to write (.npz)")
    p.add_argument("--arch", help="architecture of a state dict (see --list-archs)")
    p.add_argument("--list-archs", action="store_true", help="list the known architectures")
    p.add_argument("--input-shape", help="C,H,W of one input (default: the architecture's, or "
                                         "the ONNX graph's)")
    p.add_argument("--mean", help="per-channel mean of the normalisation, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", help="per-channel std of the normalisation")
    p.add_argument("--low", help="per-channel lowest valid input (z^B box; default from mean/std)")
    p.add_argument("--high", help="per-channel highest valid input")
    p.add_argument("--classes", help="a text file with one class name per line")
    p.add_argument("--name", help="the network's name (default: the architecture or file name)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a pickled whole model (runs code from the file)")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the converted network with the PyTorch module")
    return p


def main(argv=None) -> int:
    p = parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = p.parse_args(argv)
    args.argv = argv
    if args.list_archs:
        from .models.importers import ARCHITECTURES
        for name, spec in ARCHITECTURES.items():
            print(f"{name:12s} input {spec['input_shape']}")
        return 0
    if not args.source or not args.output:
        p.print_usage(sys.stderr)
        print(f"{PROG}: error: give a source file and -o OUTPUT.npz", file=sys.stderr)
        return 2
    try:
        print(convert(args))
    except MinilrpError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
