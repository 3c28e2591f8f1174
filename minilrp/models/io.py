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

import inspect
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
# One array's unpacked size at most: 2 GiB, five times VGG-16's largest (411 MB in float32).
MAX_MEMBER_BYTES = 2 << 30


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

    Raises WeightFileError naming the file (and the member or record entry) for a missing,
    truncated, corrupt, non-npz or pickled file, a malformed architecture record, non-finite
    parameters, and any mismatch between the arrays and the record.
    """
    name = os.fspath(path)
    target = _dtype_argument(dtype)
    if not os.path.isfile(name):
        raise WeightFileError(f"{name}: no such weight file")
    if not zipfile.is_zipfile(name):
        raise WeightFileError(f"{name}: not a minilrp weight file (not an .npz archive)")
    arrays = read_npz(name)
    try:
        return from_arrays(arrays, dtype=target)
    except MinilrpError as e:
        raise WeightFileError(f"{name}: {e}") from None


def read_npz(path) -> dict:
    """Every array of an ``.npz`` archive by name, read with ``allow_pickle=False`` one member
    at a time, so that a damaged member is named. Raises WeightFileError."""
    name = os.fspath(path)
    try:
        zf = zipfile.ZipFile(name)
    except Exception as e:  # noqa: BLE001 - see _damaged
        raise WeightFileError(f"{name}: truncated or corrupt .npz ({_damaged(e)})") from None
    arrays = {}
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise WeightFileError(f"{name}: member '{info.filename}' is not a .npy array")
            if info.file_size > MAX_MEMBER_BYTES:  # before decompressing a possible zip bomb
                raise WeightFileError(f"{name}: member '{info.filename}' unpacks to "
                                      f"{info.file_size:,} bytes, more than the limit of "
                                      f"{MAX_MEMBER_BYTES:,} for one array")
            try:
                with zf.open(info) as fp:
                    a = np.lib.format.read_array(fp, allow_pickle=False)
            except ValueError as e:
                if "pickle" in str(e) or "Object arrays" in str(e):
                    raise WeightFileError(f"{name}: member '{info.filename}' is a pickled object "
                                          "array; refused (weight files hold plain numeric "
                                          "arrays only)") from None
                raise WeightFileError(f"{name}: member '{info.filename}' is corrupt "
                                      f"({_damaged(e)})") from None
            except Exception as e:  # noqa: BLE001 - see _damaged
                raise WeightFileError(f"{name}: member '{info.filename}' is corrupt "
                                      f"({_damaged(e)})") from None
            arrays[info.filename[:-len(".npy")]] = a
    return arrays


def _damaged(e) -> str:
    """A damaged archive fails in whatever layer meets the damage first: zipfile (BadZipFile:
    bad CRC or header; NotImplementedError: an unknown compression method; RuntimeError: an
    'encrypted' flag), zlib (zlib.error), the .npy header parser (ValueError), short reads
    (EOFError), a header that claims a huge shape (MemoryError). All of them mean one thing
    to the user, so all are caught and reported with their first line."""
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _dtype_argument(dtype):
    if dtype is None:
        return None
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d not in (np.float32, np.float64):
        raise MinilrpError(f"dtype must be float32 or float64, got {dtype!r}")
    return d


# ------------------------------------------------------------------------------------------
# The architecture record, checked entry by entry before anything is built from it
# ------------------------------------------------------------------------------------------
RECORD_KEYS = ("format", "format_version", "name", "input_shape", "classes", "dtype",
               "normalization", "input_range", "layers", "provenance")
"""The keys :func:`architecture` writes (a test holds them equal); any other is refused."""
MAX_SIZE = 2**31 - 1  # the largest size, kernel, stride or padding a record may state


def _fail(where, what):
    raise WeightFileError(f"the architecture record's {where} {what}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v, where, positive=False):
    """A number or a non-empty list of numbers, all finite (and positive)."""
    vals = v if isinstance(v, list) else [v]
    if not vals or not all(_is_number(x) for x in vals):
        _fail(where, f"must be a number or a list of numbers, got {v!r}")
    if not all(np.isfinite(x) for x in vals):
        _fail(where, f"must be finite, got {v!r}")
    if positive and not all(x > 0 for x in vals):
        _fail(where, f"must be positive, got {v!r}")
    return vals


def _check_record(record):
    """Refuse (WeightFileError naming the entry) any record that is not what
    :func:`architecture` writes: wrong types, missing or unknown keys, non-finite numbers."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise WeightFileError("the architecture record does not say format 'minilrp'")
    version = record.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise WeightFileError(f"format version {version!r} is not supported (this minilrp "
                              f"reads version {FORMAT_VERSION})")
    for key in ("input_shape", "layers"):
        if key not in record:
            raise WeightFileError(f"the architecture record lacks '{key}'")
    unknown = sorted(set(record) - set(RECORD_KEYS))
    if unknown:
        _fail("keys", f"include unknown {', '.join(map(repr, unknown))} (known: {', '.join(RECORD_KEYS)})")
    if not isinstance(record.get("name", ""), str):
        _fail("'name'", f"must be a string, got {record['name']!r}")
    shape = record["input_shape"]
    if not isinstance(shape, list) or len(shape) not in (1, 3) or \
            not all(_is_int(s) and 1 <= s <= MAX_SIZE for s in shape):
        _fail("'input_shape'", f"must be [C, H, W] or [features] of positive integers, got {shape!r}")
    classes = record.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        _fail("'classes'", f"must be a list of names (strings), got {classes!r}")
    if record.get("dtype", "float32") not in ("float32", "float64"):
        _fail("'dtype'", f"must be 'float32' or 'float64', got {record['dtype']!r}")
    for key, parts in (("normalization", ("mean", "std")), ("input_range", ("low", "high"))):
        entry = record.get(key)
        if entry is None:
            continue
        if not isinstance(entry, dict) or set(entry) - set(parts):
            _fail(f"'{key}'", f"must be an object with keys {' and '.join(parts)}, got {entry!r}")
        if key == "input_range" and set(entry) != set(parts):
            _fail(f"'{key}'", f"needs both 'low' and 'high', got {entry!r}")
        for part in parts:
            if part in entry:
                _numbers(entry[part], f"'{key}.{part}'", positive=part == "std")
    if not isinstance(record.get("provenance") or {}, dict):
        _fail("'provenance'", f"must be an object, got {record['provenance']!r}")
    layers = record["layers"]
    if not isinstance(layers, list) or not layers:
        _fail("'layers'", f"must be a non-empty list, got {layers!r}")
    for i, spec in enumerate(layers):
        check_layer_spec(spec, f"layer {i}")


def check_layer_spec(spec, where):
    """One entry of ``layers`` ({"type": ..., hyperparameters}): the type known, every
    required hyperparameter present, none unknown, sizes integers in 0..2**31-1 and ``bias`` a
    boolean. The allowed names are the layer class's constructor arguments, so they cannot
    drift from the layers. Returns (class, config)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise WeightFileError(f"{where}: entry without a 'type' (got {spec!r})")
    kind = spec["type"]
    cls = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WeightFileError(f"{where}: unknown layer type {kind!r} (known: "
                              f"{', '.join(sorted(LAYER_TYPES))})")
    sig = inspect.signature(cls.__init__).parameters
    sizes = {n: p for n, p in sig.items() if n not in ("self", "weight", "bias", "use_bias")}
    allowed = set(sizes) | ({"bias"} if "bias" in cls.param_names else set())
    config = {k: v for k, v in spec.items() if k != "type"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise WeightFileError(f"{where} ({kind}): bad hyperparameters {config}: unknown "
                              f"{', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(allowed)) or 'none'})")
    missing = [n for n, p in sizes.items() if p.default is inspect.Parameter.empty and n not in config]
    if missing:
        raise WeightFileError(f"{where} ({kind}): lacks {', '.join(map(repr, missing))}")
    for k, v in config.items():
        if k == "bias":
            if not isinstance(v, bool):
                raise WeightFileError(f"{where} ({kind}): 'bias' must be true or false, got {v!r}")
        elif not (_is_int(v) and 0 <= v <= MAX_SIZE) and not (v is None and sizes[k].default is None):
            raise WeightFileError(f"{where} ({kind}): '{k}' must be an integer in 0..{MAX_SIZE}, got {v!r}")
    return cls, config


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
    except RecursionError:
        raise WeightFileError("the architecture record is not valid JSON (nested too deeply)") from None
    _check_record(record)
    return record


def _parameter(arrays, key, kind, i, target):
    """The array ``key``: present, floating point, finite, and within the range of the dtype
    it will be computed in."""
    if key not in arrays:
        raise WeightFileError(f"missing array '{key}' for layer {i} ({kind})")
    a = arrays[key]
    if a.dtype.kind != "f":
        raise WeightFileError(f"array '{key}' must hold floating-point numbers, got dtype {a.dtype}")
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.isnan(a).sum())
        raise WeightFileError(f"array '{key}' holds {n_nan} NaN and {int(bad.sum()) - n_nan} "
                              f"infinite values (of {a.size}); parameters must be finite")
    if target is not None and a.size and np.abs(a).max() > np.finfo(target).max:
        raise WeightFileError(f"array '{key}' holds values up to {np.abs(a).max():.3g}, beyond "
                              f"{np.dtype(target).name}'s range; load it with dtype=float64")
    return a


def from_arrays(arrays: dict, dtype=None) -> Network:
    """Build a Network from the arrays of a weight file (``architecture`` included)."""
    arrays = dict(arrays)
    record = _record(arrays)
    target = _dtype_argument(dtype) or np.dtype(record.get("dtype", "float32"))
    layers = []
    expected = set()
    for i, spec in enumerate(record["layers"]):
        cls, config = check_layer_spec(spec, f"layer {i}")
        kind = spec["type"]
        params = {}
        has_bias = config.pop("bias", True) if "bias" in cls.param_names else None
        for pname in cls.param_names:
            if pname == "bias" and not has_bias:
                continue
            key = f"layers.{i}.{pname}"
            expected.add(key)
            params[pname] = _parameter(arrays, key, kind, i, target)
        if "bias" in cls.param_names:
            config["use_bias"] = bool(has_bias)
        try:
            layers.append(cls(**config, **params))
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
    return net.astype(target)
