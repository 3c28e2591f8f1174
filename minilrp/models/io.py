"""The minilrp weight format: one ``.npz`` holding parameter arrays plus a JSON record.

Arrays: ``layers.<i>.weight`` / ``layers.<i>.bias`` for layer i, and ``architecture``: the
UTF-8 bytes (uint8) of a JSON record::

    {"format": "minilrp", "format_version": 1, "name": ..., "input_shape": [C, H, W],
     "classes": [...], "dtype": "float32",
     "normalization": {"mean": [...], "std": [...]},       # raw [0,1] pixels -> input space
     "input_range": {"low": [...], "high": [...]},         # valid input, per channel (z^B)
     "layers": [{"type": "Conv2d", "in_channels": 1, ...}, {"type": "ReLU"}, ...],
     "provenance": {"dataset": ..., "training_command": ..., "test_accuracy": ...}}

Loading uses ``allow_pickle=False`` and checks everything against the record (missing,
extra or misshapen arrays, unknown layer types or versions), so nothing in a weight file can
execute code and nothing loads half-right.
"""
from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from ..errors import MinilrpError, WeightFileError
from ..engine.layers import LAYER_TYPES
from ..engine.network import Network

FORMAT = "minilrp"
FORMAT_VERSION = 1


def architecture(net: Network) -> dict:
    """The JSON-able record describing ``net`` (everything but the arrays)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": net.name,
        "input_shape": list(net.input_shape),
        "classes": list(net.classes),
        "dtype": net.dtype.name,
        "normalization": {"mean": net.mean.tolist(), "std": net.std.tolist()},
        "input_range": {"low": net.input_low.tolist(), "high": net.input_high.tolist()},
        "layers": [{"type": layer.kind, **layer.config()} for layer in net.layers],
        "provenance": net.provenance,
    }


def save(path, net: Network) -> None:
    """Write ``net`` to ``path`` (.npz, compressed). Load it back with :func:`load`.
    The bytes depend on the network only (fixed zip timestamps): saving the same network
    twice gives the same file."""
    arrays = {f"layers.{i}.{k}": v for i, layer in enumerate(net.layers)
              for k, v in layer.params().items()}
    record = json.dumps(architecture(net), indent=1).encode("utf-8")
    arrays["architecture"] = np.frombuffer(record, dtype=np.uint8)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def load(path, dtype=None) -> Network:
    """Read a minilrp ``.npz`` into a Network (in the file's dtype, or ``dtype``).

    Raises WeightFileError naming the problem for a missing, truncated, non-npz or pickled
    file, and for any mismatch between the arrays and the architecture record.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise WeightFileError(f"{name}: no such weight file")
    if not zipfile.is_zipfile(name):
        raise WeightFileError(f"{name}: not a minilrp weight file (not an .npz archive)")
    try:
        with np.load(name, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" in str(e) or "Object arrays" in str(e):
            raise WeightFileError(f"{name}: contains a pickled object array; refused "
                                  "(weight files hold plain numeric arrays only)") from None
        raise WeightFileError(f"{name}: unreadable array ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise WeightFileError(f"{name}: truncated or corrupt .npz ({type(e).__name__}: {e})") from None
    try:
        return from_arrays(arrays, dtype=dtype)
    except WeightFileError as e:
        raise WeightFileError(f"{name}: {e}") from None
    except MinilrpError as e:
        raise WeightFileError(f"{name}: {e}") from None


def _record(arrays: dict) -> dict:
    raw = arrays.pop("architecture", None)
    if raw is None:
        raise WeightFileError("no 'architecture' record: not a minilrp weight file")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise WeightFileError("the 'architecture' record must be UTF-8 bytes (uint8)")
    try:
        record = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightFileError(f"the architecture record is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise WeightFileError("the architecture record does not say format 'minilrp'")
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightFileError(f"format version {version!r} is not supported (this minilrp "
                              f"reads version {FORMAT_VERSION})")
    for key in ("input_shape", "layers"):
        if key not in record:
            raise WeightFileError(f"the architecture record lacks '{key}'")
    return record


def from_arrays(arrays: dict, dtype=None) -> Network:
    """Build a Network from the arrays of a weight file (``architecture`` included)."""
    arrays = dict(arrays)
    record = _record(arrays)
    layers = []
    expected = set()
    for i, spec in enumerate(record["layers"]):
        if not isinstance(spec, dict) or "type" not in spec:
            raise WeightFileError(f"layer {i}: entry without a 'type'")
        kind = spec["type"]
        cls = LAYER_TYPES.get(kind)
        if cls is None:
            raise WeightFileError(f"layer {i}: unknown layer type {kind!r} (known: "
                                  f"{', '.join(sorted(LAYER_TYPES))})")
        config = {k: v for k, v in spec.items() if k != "type"}
        params = {}
        has_bias = config.pop("bias", True) if "bias" in cls.param_names else None
        for pname in cls.param_names:
            if pname == "bias" and not has_bias:
                continue
            key = f"layers.{i}.{pname}"
            expected.add(key)
            if key not in arrays:
                raise WeightFileError(f"missing array '{key}' for layer {i} ({kind})")
            a = arrays[key]
            if a.dtype.kind != "f" or not np.all(np.isfinite(a)):
                raise WeightFileError(f"array '{key}' must hold finite floats, got dtype {a.dtype}")
            params[pname] = a
        if "bias" in cls.param_names:
            config["use_bias"] = bool(has_bias)
        try:
            layers.append(cls(**config, **params))
        except TypeError as e:
            raise WeightFileError(f"layer {i} ({kind}): bad hyperparameters {config} ({e})") from None
        except MinilrpError as e:
            raise WeightFileError(f"layer {i} ({kind}): {e}") from None
    extra = sorted(set(arrays) - expected)
    if extra:
        raise WeightFileError(f"unexpected arrays not described by the architecture: {', '.join(extra)}")
    norm = record.get("normalization") or {}
    rng = record.get("input_range")
    try:
        net = Network(layers, record["input_shape"], classes=record.get("classes"),
                      name=record.get("name", "network"), mean=norm.get("mean"), std=norm.get("std"),
                      input_range=None if rng is None else (rng["low"], rng["high"]),
                      provenance=record.get("provenance"))
    except MinilrpError as e:
        raise WeightFileError(f"architecture does not fit together: {e}") from None
    except (KeyError, TypeError) as e:
        raise WeightFileError(f"malformed architecture record ({type(e).__name__}: {e})") from None
    file_dtype = np.dtype(record.get("dtype", net.dtype.name))
    return net.astype(file_dtype if dtype is None else dtype)
