"""A state dict plus a few words of architecture -> a minilrp Network, without PyTorch.

    from minilrp.models.statedict import from_state_dict, read_state_dict
    state = read_state_dict("cnn.safetensors")           # or .npz: name -> numpy array
    net = from_state_dict(state, "conv:1:32:5:p2,relu,maxpool:2,conv:32:64:5:p2,relu,"
                                 "maxpool:2,flatten,linear:3136:128,relu,linear:128:10",
                          input_shape=(1, 28, 28))

The description lists the layers in the order the model runs them, exactly as an
``nn.Sequential`` holds them: layer i's parameters are the state dict's ``i.weight`` and
``i.bias`` (the keys ``nn.Sequential`` gives them), so a Dropout in the Sequential needs its
``dropout`` entry to keep the numbering. A layer written ``NAME=...`` takes ``NAME.weight``
instead (``conv1=conv:1:32:5``, ``features.0=conv:3:64:3:p1``). Keys that all start with one
more prefix (``module.`` from DataParallel, ``net.`` for a Sequential kept as ``self.net``)
are matched without it, and the network's provenance says so.

Compact form: layers separated by commas or new lines, ``#`` starts a comment:

    conv:IN:OUT:K[:sS][:pP][:nobias]   nn.Conv2d(IN, OUT, K, stride=S, padding=P)
    linear:IN:OUT[:nobias]             nn.Linear(IN, OUT)                 (alias dense)
    maxpool:K[:sS]                     nn.MaxPool2d(K, stride=S)          (S defaults to K)
    avgpool:K[:sS][:pP]                nn.AvgPool2d(K, stride=S, padding=P)
    bn:C[:eps=E]                       nn.BatchNorm2d/1d(C, eps=E) in eval mode, folded into
                                       the conv or linear layer before it (alias batchnorm)
    relu, flatten, dropout, identity   (options may also be written s=S, p=P, eps=E)

JSON form: a list whose entries are such strings or objects in the weight file's own layer
schema (``{"type": "Conv2d", "in_channels": 1, "out_channels": 32, "kernel_size": 5,
"padding": 2}``, as in a minilrp file's architecture record) plus ``"name"`` and the types
``BatchNorm`` (``num_features``, ``eps``), ``Dropout`` (``p``, ignored) and ``Identity``; or an object with
``"layers"`` and optionally ``"input_shape"``, ``"classes"``, ``"mean"``, ``"std"``,
``"name"``.

Every mismatch is a MinilrpError on one line: unknown layer kinds and options, missing and
unexpected keys, wrong shapes and dtypes, NaN or infinite values, values beyond the chosen
float dtype, layers whose shapes do not chain.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import MinilrpError
from ..engine.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU
from .importers import _Builder
from .io import check_layer_spec, read_npz

# compact name -> layer kind; positional arguments and options per kind
KINDS = {"conv": "Conv2d", "conv2d": "Conv2d", "linear": "Dense", "dense": "Dense",
         "maxpool": "MaxPool2d", "avgpool": "AvgPool2d", "relu": "ReLU", "flatten": "Flatten",
         "bn": "BatchNorm", "batchnorm": "BatchNorm", "dropout": "Dropout", "identity": "Identity"}
POSITIONAL = {"Conv2d": ("in_channels", "out_channels", "kernel_size"),
              "Dense": ("in_features", "out_features"), "MaxPool2d": ("kernel_size",),
              "AvgPool2d": ("kernel_size",), "BatchNorm": ("num_features",)}
OPTIONS = {"Conv2d": ("stride", "padding", "nobias"), "Dense": ("nobias",),
           "MaxPool2d": ("stride",), "AvgPool2d": ("stride", "padding"), "BatchNorm": ("eps",)}
SHORT = {"s": "stride", "p": "padding"}
FORMS = {"Conv2d": "conv:IN:OUT:K[:sS][:pP][:nobias]", "Dense": "linear:IN:OUT[:nobias]",
         "MaxPool2d": "maxpool:K[:sS]", "AvgPool2d": "avgpool:K[:sS][:pP]",
         "BatchNorm": "bn:C[:eps=E]", "ReLU": "relu", "Flatten": "flatten",
         "Dropout": "dropout", "Identity": "identity"}
LAYER_CLASSES = {"Conv2d": Conv2d, "Dense": Dense, "MaxPool2d": MaxPool2d,
                 "AvgPool2d": AvgPool2d, "ReLU": ReLU, "Flatten": Flatten}
SUPPORTED = ", ".join(FORMS.values())
BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class LayerSpec:
    """One described layer: its kind, constructor arguments, state-dict name, and the text
    it was written as (for messages)."""
    kind: str
    config: dict = field(default_factory=dict)
    name: str | None = None
    text: str = ""

    def param_shapes(self) -> dict:
        """Parameter name -> the shape the state dict must hold."""
        c = self.config
        if self.kind == "Conv2d":
            k, o = c["kernel_size"], c["out_channels"]
            shapes = {"weight": (o, c["in_channels"], k, k), "bias": (o,)}
        elif self.kind == "Dense":
            shapes = {"weight": (c["out_features"], c["in_features"]), "bias": (c["out_features"],)}
        elif self.kind == "BatchNorm":
            return {key: (c["num_features"],) for key in BN_KEYS}
        else:
            return {}
        if not c.get("bias", True):
            del shapes["bias"]
        return shapes


# ------------------------------------------------------------------------------------------
# The description
# ------------------------------------------------------------------------------------------
def read_description(arg) -> dict:
    """``arg``: a compact or JSON description, or the path of a file holding one (JSON, or
    text in the compact form). -> {"layers": [LayerSpec, ...], and whatever else a JSON object
    gave: "input_shape", "classes", "mean", "std", "name"}."""
    text, source = str(arg), "the layer description"
    if not text.lstrip().startswith(("[", "{")):
        if os.path.isfile(text):
            source = text
            try:
                with open(text, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise MinilrpError(f"{source}: cannot read the layer description ({e})") from None
        elif text.endswith((".json", ".txt")) or os.sep in text:
            raise MinilrpError(f"{text}: no such layer description file")
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise MinilrpError(f"{source}: not valid JSON ({e})") from None
        except RecursionError:
            raise MinilrpError(f"{source}: not valid JSON (nested too deeply)") from None
    else:
        data = [t.strip() for line in text.splitlines() for t in line.split("#")[0].split(",")]
        data = [t for t in data if t]
    if isinstance(data, dict):
        known = {"layers", "input_shape", "classes", "mean", "std", "name"}
        if set(data) - known or "layers" not in data:
            raise MinilrpError(f"{source}: a JSON description object takes the keys "
                               f"{', '.join(sorted(known))} ('layers' required), got {', '.join(sorted(data))}")
        out = dict(data)
        _check_extras(out, source)
    else:
        out = {"layers": data}
    out["layers"] = parse_layers(out["layers"], source)
    return out


def _check_extras(desc, source):
    """The optional keys of a JSON description object, each of the type it must have."""
    def numbers(v):
        return isinstance(v, list) and v and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v)
    checks = {"input_shape": (lambda v: isinstance(v, list) and len(v) in (1, 3) and all(
                  isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v),
                  "[C, H, W] of positive integers"),
              "classes": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                          "a list of names"),
              "mean": (numbers, "a list of finite numbers"),
              "std": (lambda v: numbers(v) and all(x > 0 for x in v), "a list of positive numbers"),
              "name": (lambda v: isinstance(v, str) and v.strip(), "a non-empty string")}
    for key, (ok, what) in checks.items():
        if key in desc and not ok(desc[key]):
            raise MinilrpError(f"{source}: '{key}' must be {what}, got {desc[key]!r}")


def parse_layers(entries, source="the layer description") -> list:
    """A list of compact strings / JSON objects (or one compact string) -> [LayerSpec, ...]."""
    if isinstance(entries, str):
        return read_description(entries)["layers"]
    if not isinstance(entries, list) or not entries:
        raise MinilrpError(f"{source}: 'layers' must be a non-empty list, got {entries!r}")
    layers = [_parse_entry(e, f"{source}, layer {i}") for i, e in enumerate(entries)]
    seen = {}
    for i, layer in enumerate(layers):
        if layer.name is None:
            layer.name = str(i)
        if layer.param_shapes() and layer.name in seen:
            raise MinilrpError(f"{source}: layers {seen[layer.name]} and {i} are both named "
                               f"'{layer.name}' (their parameters would share keys)")
        seen.setdefault(layer.name, i)
    return layers


def _parse_entry(entry, where) -> LayerSpec:
    if isinstance(entry, str):
        return _parse_compact(entry, where)
    if not isinstance(entry, dict):
        raise MinilrpError(f"{where}: expected a compact string like 'conv:1:32:5' or a JSON "
                           f"object with a 'type', got {entry!r}")
    spec = dict(entry)
    name = spec.pop("name", None)
    if name is not None and (not isinstance(name, str) or not name):
        raise MinilrpError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    kind = spec.pop("type", None)
    kind = {"Linear": "Dense"}.get(kind, kind) if isinstance(kind, str) else kind
    known = [*LAYER_CLASSES, "BatchNorm", "Dropout", "Identity"]
    if kind not in known:
        raise MinilrpError(f"{where}: unknown layer type {kind!r} (known: {', '.join(known)}, "
                           "or Linear for Dense)")
    if kind in ("BatchNorm", "Dropout", "Identity"):
        allowed = {"BatchNorm": {"num_features", "eps"}, "Dropout": {"p"}}.get(kind, set())
        if set(spec) - allowed or (kind == "BatchNorm" and "num_features" not in spec):
            raise MinilrpError(f"{where} ({kind}): takes {', '.join(sorted(allowed)) or 'no keys'}"
                               f"{' (num_features required)' if kind == 'BatchNorm' else ''}, got "
                               f"{', '.join(sorted(spec)) or 'none'}")
    layer = _checked(LayerSpec(kind, spec, name), where)
    layer.text = f"{name}=" * bool(name) + _compact_one(layer)
    return layer


def _parse_compact(token, where) -> LayerSpec:
    text = token.strip()
    name, _, body = text.partition("=") if re.match(r"^[^:=]+=", text) else ("", "", text)
    parts = [p.strip() for p in body.split(":")]
    kind = KINDS.get(parts[0].lower())
    where = f"{where} '{text}'"
    if kind is None:
        raise MinilrpError(f"{where}: unknown layer '{parts[0]}' (known: {', '.join(KINDS)}; "
                           f"the forms are {SUPPORTED})")
    positional = POSITIONAL.get(kind, ())
    if len(parts) - 1 < len(positional):
        raise MinilrpError(f"{where}: {parts[0]} needs {len(positional)} numbers "
                           f"({', '.join(positional)}), got {len(parts) - 1}")
    config = {}
    for pname, value in zip(positional, parts[1:]):
        config[pname] = _integer(value, where, pname)
    for option in parts[1 + len(positional):]:
        m = re.fullmatch(r"([a-z]+)(\d*)", option.lower())  # p2, s2, nobias
        key, value = m.groups() if m else option.lower().partition("=")[::2]
        key = SHORT.get(key, key)
        if key not in OPTIONS.get(kind, ()) or (key == "nobias") != (value == ""):
            raise MinilrpError(f"{where}: unknown option '{option}' for {parts[0]} (the form is "
                               f"{FORMS[kind]})")
        if key == "nobias":
            config["bias"] = False
        elif key == "eps":
            config["eps"] = _number(value, where, "eps")
        else:
            config[key] = _integer(value, where, key)
    if name and not re.fullmatch(r"[\w.\-]+", name):
        raise MinilrpError(f"{where}: a layer name may hold letters, digits, '_', '.', '-', got '{name}'")
    return _checked(LayerSpec(kind, config, name or None, text), where)


def _checked(layer, where) -> LayerSpec:
    """The hyperparameters checked as a weight file's are (sizes, required names)."""
    if layer.kind in LAYER_CLASSES:
        try:
            check_layer_spec({"type": layer.kind, **layer.config}, where)
        except MinilrpError as e:  # a WeightFileError: said of the description instead
            raise MinilrpError(str(e)) from None
        try:
            LAYER_CLASSES[layer.kind](**{("use_bias" if k == "bias" else k): v
                                         for k, v in layer.config.items()})
        except MinilrpError as e:
            raise MinilrpError(f"{where}: {e}") from None
    elif layer.kind == "BatchNorm":
        c = layer.config
        n = c["num_features"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MinilrpError(f"{where}: num_features must be a positive integer, got {c['num_features']!r}")
        eps = c.setdefault("eps", 1e-5)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < np.inf:
            raise MinilrpError(f"{where}: eps must be a positive finite number, got {eps!r}")
    return layer


def _integer(text, where, what):
    if not re.fullmatch(r"\d+", text):
        raise MinilrpError(f"{where}: {what} must be a non-negative integer, got '{text}'")
    return int(text)


def _number(text, where, what):
    try:
        return float(text)
    except ValueError:
        raise MinilrpError(f"{where}: {what} must be a number, got '{text}'") from None


def _compact_one(layer) -> str:
    c = layer.config
    pos = [str(c[p]) for p in POSITIONAL.get(layer.kind, ())]
    opts = [f"{k[0]}{c[k]}" for k in ("stride", "padding") if c.get(k) is not None]
    opts += ["nobias"] if c.get("bias") is False else []
    opts += [f"eps={c['eps']:g}"] if layer.kind == "BatchNorm" else []
    return ":".join([FORMS[layer.kind].split(":")[0].split("[")[0]] + pos + opts)


def compact(layers) -> str:
    """The description in the compact form (recorded in the network's provenance)."""
    return ",".join(f"{layer.name}=" * (layer.name != str(i)) + _compact_one(layer)
                    for i, layer in enumerate(layers))


# ------------------------------------------------------------------------------------------
# Reading state dicts
# ------------------------------------------------------------------------------------------
def read_state_dict(path) -> dict:
    """A state dict (name -> numpy array) from an ``.npz`` (read with allow_pickle=False) or a
    ``.safetensors`` file (needs the ``safetensors`` package: ``pip install
    'minilrp[safetensors]'``). Raises MinilrpError naming the file and the problem."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise MinilrpError(f"{name}: no such file")
    if name.endswith(".safetensors"):
        state = _read_safetensors(name)
    elif name.endswith(".npz"):
        state = read_npz(name)
        if "architecture" in state:
            raise MinilrpError(f"{name} is already a minilrp weight file (it has an architecture "
                               "record): load it with minilrp.load, no conversion needed")
    else:
        raise MinilrpError(f"{name}: a state dict file must end in .npz or .safetensors")
    if not state:
        raise MinilrpError(f"{name}: holds no arrays")
    return state


def safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise MinilrpError("reading .safetensors needs the safetensors package: pip install "
                           "'minilrp[safetensors]' (or pip install safetensors)") from None
    return safetensors.numpy


def _read_safetensors(name):
    st = safetensors_numpy()
    try:
        return dict(st.load_file(name))
    except TypeError as e:  # a dtype NumPy lacks, e.g. bfloat16
        raise MinilrpError(f"{name}: holds tensors NumPy cannot read ({e}); save them as "
                           "float32 (tensor.float()) before converting") from None
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: a damaged file
        raise MinilrpError(f"{name}: not a readable safetensors file ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None


# ------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------
def from_state_dict(state, layers, input_shape, classes=None, name="network", mean=None,
                    std=None, input_range=None, provenance=None, dtype=np.float32):
    """A Network from ``state`` (name -> array) and ``layers`` (a description: a string, a
    list of entries, or parsed Layers; see the module docstring). Parameters are converted
    to ``dtype``; batch norms are folded. Raises MinilrpError naming every mismatch."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise MinilrpError("the state dict must map parameter names (strings) to arrays")
    if not (isinstance(layers, list) and all(isinstance(x, LayerSpec) for x in layers)):
        layers = parse_layers(layers)
    if input_shape is None:
        raise MinilrpError("give the input shape (C, H, W) of one example")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise MinilrpError(f"dtype must be float32 or float64, got {dtype}")
    expected = {f"{layer.name}.{p}": (layer, p, shape)
                for layer in layers for p, shape in layer.param_shapes().items()}
    state, prefix = _without_prefix(state, expected)
    params = _checked_params(state, expected, layers, dtype)
    b = _Builder(input_shape, "described", SUPPORTED)
    for i, layer in enumerate(layers):
        where = f"layer {i} '{layer.text}'"
        p = {k: params.get(f"{layer.name}.{k}") for k in ("weight", "bias")}
        if layer.kind == "BatchNorm":
            gamma, beta, mu, var = (params[f"{layer.name}.{k}"] for k in BN_KEYS)
            b.fold_batchnorm(where, "BatchNorm", gamma, beta, mu, var, layer.config["eps"])
        elif layer.kind in ("Conv2d", "Dense"):
            config = {k: v for k, v in layer.config.items() if k != "bias"}
            b.add(LAYER_CLASSES[layer.kind](**config, **p, use_bias=p["bias"] is not None), where)
        elif layer.kind in LAYER_CLASSES:
            b.add(LAYER_CLASSES[layer.kind](**layer.config), where)
    provenance = dict(provenance or {})
    provenance.setdefault("architecture_description", compact(layers))
    if prefix:
        provenance["state_dict_prefix"] = prefix
    net = b.network(classes, name, mean, std, input_range, provenance, input_shape)
    return net.astype(dtype)


def _without_prefix(state, expected):
    """The state dict with one common key prefix removed when only that makes its keys the
    expected ones (``module.``, ``net.``); -> (state, the prefix or '')."""
    keys = set(state)
    wanted = set(expected)
    if wanted <= keys or not keys:
        return state, ""
    first = min(keys)
    for cut in sorted({m.end() for m in re.finditer(r"\.", first)}, reverse=True):
        prefix = first[:cut]
        if all(k.startswith(prefix) for k in keys) and wanted <= {k[cut:] for k in keys}:
            return {k[cut:]: v for k, v in state.items()}, prefix
    return state, ""


def _checked_params(state, expected, layers, dtype) -> dict:
    """Every expected array present, floating point, of its shape, finite and within
    ``dtype``'s range; no other keys (BatchNorm's num_batches_tracked excepted). All the
    problems are named in one line."""
    problems, params = [], {}
    names = {layer.name: layer for layer in layers}
    for key, (layer, pname, shape) in expected.items():
        if key not in state:
            problems.append(f"missing '{key}' {shape} for {layer.text}")
            continue
        a = np.asarray(state[key])
        if a.dtype.kind != "f":
            problems.append(f"'{key}' has dtype {a.dtype}, not floating point")
        elif a.shape != shape:
            problems.append(f"'{key}' has shape {a.shape}, {layer.text} needs {shape}")
        elif not np.isfinite(a).all():
            n_nan = int(np.isnan(a).sum())
            problems.append(f"'{key}' holds {n_nan} NaN and {int((~np.isfinite(a)).sum()) - n_nan} "
                            "infinite values")
        elif layer.kind != "BatchNorm" and a.size and np.abs(a).max() > np.finfo(dtype).max:
            problems.append(f"'{key}' holds values up to {np.abs(a).max():.3g}, beyond {dtype.name}'s "
                            "range (convert with float64)")
        else:
            params[key] = a.astype(np.float64 if layer.kind == "BatchNorm" else dtype)
    for key in state:
        if key in expected:
            continue
        owner, _, pname = key.rpartition(".")
        layer = names.get(owner)
        if layer is not None and layer.kind == "BatchNorm" and pname == "num_batches_tracked":
            continue
        if not owner:
            problems.append(f"unexpected '{key}' (not a LAYER.PARAMETER key)")
        elif layer is None:
            problems.append(f"unexpected '{key}' (no layer named '{owner}' in the description)")
        else:
            problems.append(f"unexpected '{key}' ({layer.text} has no parameter '{pname}')")
    if problems:
        more = f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""
        raise MinilrpError(f"the state dict does not fit the description: {'; '.join(problems[:6])}{more}")
    return params
