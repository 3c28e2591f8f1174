"""Convert a PyTorch, ONNX or state-dict model into a minilrp weight file (.npz).

    python -m minilrp.convert model.onnx -o model.npz
    python -m minilrp.convert weights.safetensors --layers "conv:1:32:5:p2,relu,maxpool:2,flatten,linear:6272:10" --input-shape 1,28,28 -o mine.npz
    python -m minilrp.convert weights.npz --layers arch.json -o mine.npz
    python -m minilrp.convert weights.pt --module mynet.py:Net --trust-code --input-shape 3,32,32 -o mine.npz
    python -m minilrp.convert vgg16.pth --arch vgg16 -o vgg16.npz
    python -m minilrp.convert whole_model.pt --trust-code --input-shape 3,32,32 -o mine.npz
    python -m minilrp.convert --list-archs

Sources: an .onnx file (needs only the onnx package); a state dict (weights only) as .npz,
.safetensors (pip install 'minilrp[safetensors]') or a PyTorch file (torch.save of
model.state_dict(), read with weights_only=True); a PyTorch file holding a whole pickled
model; or a .py file whose build() returns the model with its weights.

A state dict needs its architecture, one of:
  --layers DESC       a layer description (no PyTorch needed): the layers in the order the model
                      runs them, as its nn.Sequential holds them; layer i's parameters are the
                      keys i.weight, i.bias (or NAME.weight for a layer written NAME=...):
                        conv:IN:OUT:K[:sS][:pP][:nobias]  linear:IN:OUT[:nobias]
                        maxpool:K[:sS]  avgpool:K[:sS][:pP]  bn:C[:eps=E] (folded)
                        relu  flatten  dropout  identity
                      e.g. "conv:1:32:5:p2,relu,maxpool:2,flatten,linear:6272:10"; or JSON (a
                      list of those strings or of weight-file layer objects, or an object with
                      "layers" and optionally "input_shape", "classes", "mean", "std", "name");
                      or a file holding either (JSON, or text: commas/new lines, # comments).
  --arch NAME         a named architecture (torchvision's VGGs, the bundled models; needs torch)
  --module FILE.py[:NAME]
                      a Python file whose NAME() (default: build()) returns the nn.Module; the
                      state dict is loaded into it strictly (needs torch and --trust-code)

Running code from a file, an unpickled whole model or a .py file, needs --trust-code (alias
--trust-pickle). Every option, the input files and the output folder are checked before
anything is read or computed; errors are one line, the exit status is 2 and nothing is written.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import tempfile

import numpy as np

from .errors import MinilrpError

PROG = "python -m minilrp.convert"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


# ------------------------------------------------------------------------------------------
# Checking the options (before anything is read or computed)
# ------------------------------------------------------------------------------------------
def _floats(text, what):
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise MinilrpError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not all(np.isfinite(vals)):
        raise MinilrpError(f"{what} must be finite numbers, got {text!r}")
    return vals


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


def _readable_file(path, what):
    if not os.path.exists(path):
        raise MinilrpError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise MinilrpError(f"{path}: {what} is not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise MinilrpError(f"{path}: cannot read it ({e.strerror})") from None


def _classes(path):
    if path is None:
        return None
    _readable_file(path, "--classes")
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError:
        raise MinilrpError(f"--classes {path}: not UTF-8 text") from None
    if not names:
        raise MinilrpError(f"--classes {path}: holds no class names (one per line)")
    return names


def _output(out, src):
    if not out.endswith(".npz"):
        raise MinilrpError(f"the output {out!r} must end in .npz")
    if os.path.isdir(out):
        raise MinilrpError(f"the output {out} is a folder; name the .npz file to write")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise MinilrpError(f"the output folder {folder} does not exist")
    if os.path.exists(out) and os.path.samefile(out, src):
        raise MinilrpError(f"the output {out} is the source file")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise MinilrpError(f"cannot write in the output folder {folder} ({e.strerror})") from None


def _source_kind(src):
    if src.endswith(".onnx"):
        return "onnx"
    if src.endswith((".npz", ".safetensors")):
        return "state"
    if src.endswith(".py"):
        return "python"
    return "torch"


def _module_spec(text):
    """FILE.py[:NAME] -> (file, name)."""
    path, _, name = text.partition(":") if not os.path.isfile(text) else (text, "", "")
    if not path.endswith(".py"):
        raise MinilrpError(f"--module {text!r}: give a Python file, FILE.py[:NAME]")
    if name and not name.isidentifier():
        raise MinilrpError(f"--module {text!r}: {name!r} is not a Python name")
    _readable_file(path, "--module")
    return path, name or "build"


def check(args) -> dict:
    """Every option, input file and the output folder checked; -> the plan of the conversion.
    Raises MinilrpError."""
    from .models.importers import ARCHITECTURES
    src = args.source
    _readable_file(src, "the source")
    kind = _source_kind(src)
    _output(args.output, src)
    routes = [r for r in ("arch", "layers", "module") if getattr(args, r) is not None]
    if len(routes) > 1:
        raise MinilrpError(f"give one architecture: --{routes[0]} and --{routes[1]} both given")
    route = routes[0] if routes else None
    if kind in ("onnx", "python") and route:
        what = "an ONNX file carries its graph" if kind == "onnx" else "the .py file builds the model"
        raise MinilrpError(f"--{route} is for state dicts; {what}")
    if kind == "state" and route is None:
        raise MinilrpError(f"{src} is a state dict (weights only): describe its architecture with "
                           "--layers (e.g. conv:1:32:5:p2,relu,maxpool:2,flatten,linear:6272:10), "
                           "--arch NAME or --module FILE.py (see --help)")
    if kind == "python" or route == "module":
        if not args.trust_code:
            what = src if kind == "python" else args.module
            raise MinilrpError(f"{what} is Python code, which runs when the model is built; pass "
                               "--trust-code if you trust it")
    plan = {"kind": kind, "route": route, "src": src, "out": args.output}
    if route == "arch":
        if args.arch not in ARCHITECTURES:
            raise MinilrpError(f"unknown architecture {args.arch!r}; known: {', '.join(ARCHITECTURES)}")
        spec = ARCHITECTURES[args.arch]
        plan.update(input_shape=spec["input_shape"], mean=spec["mean"], std=spec["std"],
                    classes=spec["classes"])
    elif route == "layers":
        from .models.statedict import read_description
        desc = read_description(args.layers)
        plan["layers"] = desc["layers"]
        for key in ("input_shape", "classes", "mean", "std", "name"):
            if key in desc:
                plan[key] = desc[key]
    elif route == "module" or kind == "python":
        plan["module"] = _module_spec(args.module if route else src)
    given = {"input_shape": _ints(args.input_shape, "--input-shape") if args.input_shape else None,
             "mean": _floats(args.mean, "--mean") if args.mean else None,
             "std": _floats(args.std, "--std") if args.std else None,
             "classes": _classes(args.classes), "name": args.name}
    for key, value in given.items():
        old = plan.get(key)
        if value is not None and route == "layers" and old is not None and list(old) != list(value) \
                and key != "name":
            raise MinilrpError(f"--{key.replace('_', '-')} {value} disagrees with the layer "
                               f"description's {key} {old}")
        if value is not None:
            plan[key] = value
    shape = plan.get("input_shape")
    if shape is not None and (len(shape) not in (1, 3) or
                              not all(isinstance(s, int) and s >= 1 for s in shape)):
        raise MinilrpError(f"the input shape must be C,H,W or features of positive integers, got {shape}")
    if shape is None and (route in ("layers", "module") or kind == "python"):
        raise MinilrpError("give --input-shape C,H,W (the size of one input)")
    if plan.get("std") is not None and min(plan["std"]) <= 0:
        raise MinilrpError(f"--std must be positive, got {plan['std']}")
    if (args.low is None) != (args.high is None):
        raise MinilrpError("give both --low and --high")
    if args.low is not None:
        plan["input_range"] = (_floats(args.low, "--low"), _floats(args.high, "--high"))
        if len(plan["input_range"][0]) != len(plan["input_range"][1]) or \
                any(lo > hi for lo, hi in zip(*plan["input_range"])):
            raise MinilrpError(f"--low {args.low} and --high {args.high} must be equally long "
                               "with low <= high")
    channels = shape[0] if shape is not None and len(shape) == 3 else 1
    for key in ("mean", "std"):
        if plan.get(key) is not None and len(plan[key]) not in (1, channels) and shape is not None:
            raise MinilrpError(f"--{key} needs {'1' if channels == 1 else f'1 or {channels}'} "
                               f"value(s) for {channels} channel(s), got {len(plan[key])}")
    if args.name is not None and not args.name.strip():
        raise MinilrpError("--name must not be empty")
    if src.endswith(".safetensors"):
        from .models.statedict import safetensors_numpy
        safetensors_numpy()
    if kind in ("torch", "python") or route in ("arch", "module"):
        _require_torch(kind, route)
    return plan


def _require_torch(kind, route):
    if importlib.util.find_spec("torch") is None:
        why = {"arch": "--arch", "module": "--module"}.get(route) or \
            ("a .py model" if kind == "python" else "reading a PyTorch file")
        hint = " (or describe the layers with --layers: no PyTorch needed)" if kind != "python" else ""
        raise MinilrpError(f"{why} needs torch: pip install torch==2.13.0 (the CPU build){hint}")


# ------------------------------------------------------------------------------------------
# Reading and building
# ------------------------------------------------------------------------------------------
def _read_torch(path, args):
    """(module, state dict of numpy arrays or None) from a torch file."""
    import pickle
    import zipfile

    import torch
    if not zipfile.is_zipfile(path):
        raise MinilrpError(f"{path}: not a readable PyTorch file (torch.save writes a zip "
                           "archive; for ONNX name the file .onnx)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise MinilrpError(f"{path}: not a readable PyTorch file ({str(e).splitlines()[0]})") from None
        if not args.trust_code:
            raise MinilrpError(f"{path} holds pickled Python objects (a whole model?), which run "
                               "code when loaded; save a state dict instead "
                               "(torch.save(model.state_dict(), ...)) and describe it with "
                               "--layers or --arch, or pass --trust-code (alias --trust-pickle) "
                               "if you trust the file") from None
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
            # NumPy has no bfloat16: reduced-precision floats compute in float32
            return None, {k: (v.float() if v.is_floating_point() and v.dtype not in
                              (torch.float32, torch.float64) else v).numpy() for k, v in obj.items()}
    raise MinilrpError(f"{path} holds a {type(obj).__name__}, neither a state dict nor an "
                       "nn.Module")


def _read_state(plan, args):
    """(module or None, state dict of numpy arrays or None)."""
    if plan["kind"] == "state":
        from .models.statedict import read_state_dict
        state = read_state_dict(plan["src"])
    else:
        module, state = _read_torch(plan["src"], args)
        if module is not None:
            if plan["route"] is not None:
                raise MinilrpError(f"{plan['src']} holds a whole model; --{plan['route']} is "
                                   "only for state dicts")
            return module, None
        if plan["route"] is None:
            raise MinilrpError(f"{plan['src']} holds a state dict (weights only): describe its "
                               "architecture with --layers, --arch NAME or --module FILE.py")
    # DataParallel checkpoints prefix every key with "module."
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    # half precision computes in float32; arrays PyTorch may write into must be writable
    return None, {k: v.astype(np.float32) if v.dtype.kind == "f" and v.dtype.itemsize < 4 else
                  v if v.flags.writeable else v.copy() for k, v in state.items()}


def _run_python(path, name):
    """The nn.Module returned by NAME() of the Python file ``path`` (it runs the file)."""
    import torch
    folder = os.path.dirname(os.path.abspath(path))
    spec = importlib.util.spec_from_file_location("_minilrp_user_model", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        spec.loader.exec_module(mod)
        fn = getattr(mod, name, None)
        if not callable(fn):
            raise MinilrpError(f"{path} defines no {name}() (give FILE.py:NAME for a function or "
                               "class that returns the nn.Module)")
        module = fn()
    except MinilrpError:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code fails as it may
        raise MinilrpError(f"{path}: running it failed ({type(e).__name__}: {e})") from None
    finally:
        sys.path.remove(folder)
    if not isinstance(module, torch.nn.Module):
        raise MinilrpError(f"{path}: {name}() returned a {type(module).__name__}, not an nn.Module")
    return module


def convert(args) -> str:
    """Run one conversion; returns the summary line. Raises MinilrpError."""
    from .models.importers import from_onnx, from_torch, load_state_dict_strict
    from .models.io import save
    plan = check(args)
    src, out = plan["src"], plan["out"]
    provenance = {"source_file": os.path.basename(src), "source_sha256": _sha256(src),
                  "conversion_command": " ".join([PROG] + list(getattr(args, "argv", sys.argv[1:])))}
    name = plan.get("name") or args.arch or os.path.splitext(os.path.basename(src))[0]
    dtype = np.dtype(args.dtype)
    common = dict(classes=plan.get("classes"), name=name, mean=plan.get("mean"),
                  std=plan.get("std"), input_range=plan.get("input_range"), provenance=provenance)
    input_shape = plan.get("input_shape")

    if plan["kind"] == "onnx":
        net = from_onnx(src, input_shape=input_shape, dtype=dtype.type, **common)
    else:
        if plan["kind"] == "python":
            module, state = _run_python(*plan["module"]), None
        else:
            module, state = _read_state(plan, args)
        if plan["route"] == "layers":
            from .models.statedict import from_state_dict
            net = from_state_dict(state, plan["layers"], input_shape, dtype=dtype, **common)
        else:
            if plan["route"] == "arch":
                module = _build_loaded(args.arch, _num_classes(args.arch, state), state, src)
            elif plan["route"] == "module":
                path, fn = plan["module"]
                provenance.update(module_file=os.path.basename(path), module_sha256=_sha256(path))
                module = load_state_dict_strict(_run_python(path, fn), state,
                                                f"the state dict in {src}")
            if input_shape is None:
                raise MinilrpError("give --input-shape C,H,W for this model")
            module.eval()
            net = from_torch(module, input_shape, check=not args.no_check, **common)
            _astype_in_range(net, dtype)
    try:
        save(out, net)
    except OSError as e:
        raise MinilrpError(f"cannot write {out}: {e.strerror}") from None
    n_params = sum(p.size for layer in net.layers for p in layer.params().values())
    prefix = net.provenance.get("state_dict_prefix")
    return (f"wrote {out}: {net.name}, {len(net.layers)} layers, {n_params:,} parameters, "
            f"input {net.input_shape}, {net.n_classes} classes, {net.dtype}"
            + (f" (state dict keys read without their prefix '{prefix}')" if prefix else ""))


def _astype_in_range(net, dtype):
    """The network in ``dtype``, refusing parameters that would overflow it (to inf)."""
    for i, layer in enumerate(net.layers):
        for pname, p in layer.params().items():
            if p.size and np.abs(p).max() > np.finfo(dtype).max:
                raise MinilrpError(f"layer {i} ({layer.kind}): its {pname} holds values up to "
                                   f"{np.abs(p).max():.3g}, beyond {dtype.name}'s range; convert "
                                   "with --dtype float64")
    net.astype(dtype)


def _build_loaded(arch, num_classes, state, src):
    """The architecture with the state dict's arrays as its parameters. Built on the meta
    device when the state dict covers every entry (no random init, no copy of the weights)."""
    import torch

    from .models.importers import build_architecture, load_state_dict_strict
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (exit status 2)."""

    def error(self, message):
        print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parser():
    p = _Parser(prog=PROG, description=__doc__.split("\n\n", 1)[1],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", help="the model: .onnx, a PyTorch file, a state dict "
                                             "(.npz, .safetensors, .pt) or a .py file")
    p.add_argument("-o", "--output", help="the minilrp weight file to write (.npz)")
    p.add_argument("--layers", metavar="DESC", help="a state dict's architecture as a layer "
                                                    "description (above), or a file holding one")
    p.add_argument("--arch", help="a state dict's architecture by name (see --list-archs)")
    p.add_argument("--module", metavar="FILE.py[:NAME]",
                   help="a state dict's architecture as Python code: NAME() (default build()) "
                        "returns the nn.Module (needs --trust-code)")
    p.add_argument("--list-archs", action="store_true", help="list the known architectures")
    p.add_argument("--input-shape", help="C,H,W of one input (default: the architecture's, the "
                                         "description's, or the ONNX graph's)")
    p.add_argument("--mean", help="per-channel mean of the normalisation, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", help="per-channel std of the normalisation")
    p.add_argument("--low", help="per-channel lowest valid input (z^B box; default from mean/std)")
    p.add_argument("--high", help="per-channel highest valid input")
    p.add_argument("--classes", help="a text file with one class name per line")
    p.add_argument("--name", help="the network's name (default: the architecture or file name)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--trust-code", "--trust-pickle", dest="trust_code", action="store_true",
                   help="allow running code from the input: a pickled whole model, or a Python "
                        "file (--module, a .py source)")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the converted network with the PyTorch module")
    return p


def main(argv=None) -> int:
    p = parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already said in one line)
        return e.code
    args.argv = argv
    if args.list_archs:
        from .models.importers import ARCHITECTURES
        for name, spec in ARCHITECTURES.items():
            print(f"{name:12s} input {spec['input_shape']}")
        return 0
    if not args.source or not args.output:
        print(f"{PROG}: error: give a source file and -o OUTPUT.npz (see --help)", file=sys.stderr)
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
