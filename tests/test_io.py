"""The weight format: exact round trips, and a named error for every broken file."""
import copy
import json
import re
import struct
import zipfile

import numpy as np
import pytest

from minilrp import WeightFileError, load, save
from minilrp.models.io import architecture
from test_network import small_net


@pytest.fixture
def saved(tmp_path, rng):
    net = small_net(rng, np.float32)
    net.provenance = {"dataset": "random", "test_accuracy": 0.5}
    path = tmp_path / "net.npz"
    save(path, net)
    return net, path


def arrays_of(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def rewrite(path, arrays, record=None):
    if record is not None:
        arrays["architecture"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
    np.savez(path, **arrays)


def test_round_trip_is_exact(saved, rng):
    net, path = saved
    back = load(path)
    assert architecture(back) == architecture(net)
    for a, b in zip(net.layers, back.layers):
        for k, v in a.params().items():
            np.testing.assert_array_equal(v, b.params()[k])
            assert v.dtype == b.params()[k].dtype
    x = rng.standard_normal((3, 2, 9, 10)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), back.forward(x))
    assert load(path, dtype=np.float64).dtype == np.float64


def test_saving_is_deterministic(saved, tmp_path):
    net, path = saved
    save(tmp_path / "again.npz", net)
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()


def test_float64_round_trip(tmp_path, rng):
    net = small_net(rng, np.float64)
    save(tmp_path / "d.npz", net)
    back = load(tmp_path / "d.npz")
    assert back.dtype == np.float64
    x = rng.standard_normal((2, 2, 9, 10))
    np.testing.assert_array_equal(net.forward(x), back.forward(x))


def test_missing_file(tmp_path):
    with pytest.raises(WeightFileError, match="no such weight file"):
        load(tmp_path / "nope.npz")


def test_not_an_npz(tmp_path):
    p = tmp_path / "x.npz"
    p.write_text("hello")
    with pytest.raises(WeightFileError, match="not an .npz"):
        load(p)
    np.save(tmp_path / "y.npy", np.zeros(3))
    with pytest.raises(WeightFileError, match="not an .npz"):
        load(tmp_path / "y.npy")


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated(saved, fraction):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(WeightFileError, match="truncated|not an .npz|corrupt"):
        load(path)


def test_pickled_object_refused(saved, tmp_path):
    _, path = saved
    arrays = arrays_of(path)
    arrays["layers.0.weight"] = np.array([{"evil": 1}], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(WeightFileError, match="pickled"):
        load(path)


def test_missing_array(saved):
    _, path = saved
    arrays = arrays_of(path)
    del arrays["layers.3.bias"]
    rewrite(path, arrays)
    with pytest.raises(WeightFileError, match="missing array 'layers.3.bias'"):
        load(path)


def test_extra_array(saved):
    _, path = saved
    arrays = arrays_of(path)
    arrays["layers.1.weight"] = np.zeros(3, np.float32)
    rewrite(path, arrays)
    with pytest.raises(WeightFileError, match="unexpected arrays.*layers.1.weight"):
        load(path)


def test_wrongly_shaped_array(saved):
    _, path = saved
    arrays = arrays_of(path)
    arrays["layers.0.weight"] = np.zeros((4, 2, 5, 5), np.float32)
    rewrite(path, arrays)
    with pytest.raises(WeightFileError, match=r"layer 0 \(Conv2d\).*shape"):
        load(path)


def test_non_float_or_nonfinite_array(saved):
    _, path = saved
    arrays = arrays_of(path)
    arrays["layers.0.bias"] = np.zeros(4, np.int32)
    rewrite(path, arrays)
    with pytest.raises(WeightFileError, match=r"net\.npz: array 'layers\.0\.bias' must hold "
                                              r"floating-point numbers, got dtype int32"):
        load(path)
    arrays["layers.0.bias"] = np.array([0, np.nan, np.inf, np.nan], np.float32)
    rewrite(path, arrays)
    with pytest.raises(WeightFileError, match=r"array 'layers\.0\.bias' holds 2 NaN and 1 "
                                              r"infinite values \(of 4\); parameters must be finite"):
        load(path)
    arrays["layers.0.bias"] = np.array([0, -np.inf, 0, 0], np.float64)
    rewrite(path, arrays)
    with pytest.raises(WeightFileError, match=r"holds 0 NaN and 1 infinite values"):
        load(path)


def test_values_beyond_float32_refused_unless_float64(saved):
    """A float64 array whose values overflow float32 would turn into inf on loading."""
    net, path = saved
    arrays = arrays_of(path)
    arrays["layers.7.weight"] = arrays["layers.7.weight"].astype(np.float64) * 1e300
    rewrite(path, arrays)
    with pytest.raises(WeightFileError, match=r"array 'layers\.7\.weight' holds values up to "
                                              r"\d.*e\+300, beyond float32's range; load it with dtype=float64"):
        load(path)
    back = load(path, dtype=np.float64)
    np.testing.assert_array_equal(back.layers[7].weight, arrays["layers.7.weight"])


def test_unknown_layer_type(saved):
    net, path = saved
    record = architecture(net)
    record["layers"][1]["type"] = "Softplus"
    rewrite(path, arrays_of(path), record)
    with pytest.raises(WeightFileError, match="unknown layer type 'Softplus'"):
        load(path)


def test_unknown_format_version(saved):
    net, path = saved
    record = architecture(net)
    record["format_version"] = 99
    rewrite(path, arrays_of(path), record)
    with pytest.raises(WeightFileError, match="format version 99 is not supported"):
        load(path)


def test_record_missing_or_garbage(saved):
    _, path = saved
    arrays = arrays_of(path)
    arrays["architecture"] = np.frombuffer(b"{not json", np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(WeightFileError, match="not valid JSON"):
        load(path)
    del arrays["architecture"]
    np.savez(path, **arrays)
    with pytest.raises(WeightFileError, match="no 'architecture' record"):
        load(path)


def test_architecture_that_does_not_chain(saved):
    net, path = saved
    record = architecture(net)
    record["input_shape"] = [2, 20, 20]
    rewrite(path, arrays_of(path), record)
    with pytest.raises(WeightFileError, match="does not fit together"):
        load(path)


def test_bad_hyperparameter_names(saved):
    net, path = saved
    record = architecture(net)
    record["layers"][0]["dilation"] = 2
    rewrite(path, arrays_of(path), record)
    with pytest.raises(WeightFileError, match=r"layer 0 \(Conv2d\): bad hyperparameters"):
        load(path)


def test_record_keys_are_what_architecture_writes(saved):
    from minilrp.models.io import RECORD_KEYS
    net, _ = saved
    assert tuple(architecture(net)) == RECORD_KEYS


# ------------------------------------------------------------------------------------------
# Malformed architecture records: every one a WeightFileError naming the problem
# ------------------------------------------------------------------------------------------
def _set(path, value):
    """A mutation of the record: set record[path[0]][path[1]]... = value (DELETE removes)."""
    def mutate(record):
        *parents, last = path
        node = record
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
        return record
    return mutate


DELETE = object()
BIG = 10**40
# (id, mutation of the small network's record, what the error must say). Layers of the
# small network: 0 Conv2d(2->4, k3, p1), 1 ReLU, 2 MaxPool2d(3, 2), 3 Conv2d(4->3, k3, s2,
# p1), 4 ReLU, 5 AvgPool2d(2, 1), 6 Flatten, 7 Dense(3->5); input (2, 9, 10); 5 classes.
MALFORMED = [
    ("record a list", lambda r: [r], "does not say format 'minilrp'"),
    ("record a string", lambda r: "minilrp", "does not say format 'minilrp'"),
    ("record a number", lambda r: 1, "does not say format 'minilrp'"),
    ("format other", _set(["format"], "pytorch"), "does not say format 'minilrp'"),
    ("version a string", _set(["format_version"], "1"), "format version '1' is not supported"),
    ("version a bool", _set(["format_version"], True), "format version True is not supported"),
    ("version a float", _set(["format_version"], 1.5), "format version 1.5 is not supported"),
    ("version 2", _set(["format_version"], 2), "format version 2 is not supported"),
    ("no input_shape", _set(["input_shape"], DELETE), "lacks 'input_shape'"),
    ("no layers", _set(["layers"], DELETE), "lacks 'layers'"),
    ("unknown key", _set(["weights_url"], "http://x"), r"keys include unknown 'weights_url'"),
    ("name a number", _set(["name"], 42), r"'name' must be a string, got 42"),
    ("input_shape a string", _set(["input_shape"], "2,9,10"), r"'input_shape' must be \[C, H, W\]"),
    ("input_shape of two", _set(["input_shape"], [2, 9]), r"'input_shape' must be \[C, H, W\]"),
    ("input_shape negative", _set(["input_shape"], [2, -9, 10]), r"'input_shape' .*got \[2, -9, 10\]"),
    ("input_shape float", _set(["input_shape"], [2, 9.5, 10]), r"'input_shape' .*got \[2, 9\.5, 10\]"),
    ("input_shape bool", _set(["input_shape"], [2, True, 10]), r"'input_shape' .*got \[2, True, 10\]"),
    ("input_shape huge", _set(["input_shape"], [2, BIG, 10]), r"'input_shape' must be"),
    ("input_shape zero", _set(["input_shape"], [0, 9, 10]), r"'input_shape' must be"),
    ("classes a string", _set(["classes"], "abcde"), r"'classes' must be a list of names"),
    ("classes numbers", _set(["classes"], [1, 2, 3, 4, 5]), r"'classes' must be a list of names"),
    ("classes too few", _set(["classes"], ["a", "b"]), r"2 class names for 5 outputs"),
    ("classes too many", _set(["classes"], list("abcdefg")), r"7 class names for 5 outputs"),
    ("dtype float16", _set(["dtype"], "float16"), r"'dtype' must be 'float32' or 'float64', got 'float16'"),
    ("dtype a number", _set(["dtype"], 32), r"'dtype' must be 'float32' or 'float64', got 32"),
    ("normalization a list", _set(["normalization"], [0.5]), r"'normalization' must be an object with keys mean and std"),
    ("normalization unknown key", _set(["normalization", "scale"], [1.0]), r"'normalization' must be an object"),
    ("mean a string", _set(["normalization", "mean"], "0.5"), r"'normalization\.mean' must be a number or a list of numbers"),
    ("mean nested", _set(["normalization", "mean"], [[0.5]]), r"'normalization\.mean' must be a number or a list"),
    ("mean empty", _set(["normalization", "mean"], []), r"'normalization\.mean' must be a number or a list"),
    ("mean NaN", _set(["normalization", "mean"], [float("nan")]), r"'normalization\.mean' must be finite"),
    ("std infinite", _set(["normalization", "std"], [float("inf")]), r"'normalization\.std' must be finite"),
    ("std zero", _set(["normalization", "std"], [0.0]), r"'normalization\.std' must be positive"),
    ("std negative", _set(["normalization", "std"], -1), r"'normalization\.std' must be positive"),
    ("mean wrong count", _set(["normalization", "mean"], [0.0, 0.0, 0.0]), r"mean needs 2 finite per-channel values"),
    ("input_range a string", _set(["input_range"], "0..1"), r"'input_range' must be an object with keys low and high"),
    ("input_range no high", _set(["input_range", "high"], DELETE), r"'input_range' needs both 'low' and 'high'"),
    ("input_range low inf", _set(["input_range", "low"], [-float("inf")]), r"'input_range\.low' must be finite"),
    ("input_range low > high", _set(["input_range"], {"low": [1.0], "high": [0.0]}), r"input_range low exceeds high"),
    ("input_range bool", _set(["input_range", "high"], True), r"'input_range\.high' must be a number"),
    ("provenance a string", _set(["provenance"], "trained by me"), r"'provenance' must be an object"),
    ("layers an object", _set(["layers"], {}), r"'layers' must be a non-empty list"),
    ("layers empty", _set(["layers"], []), r"'layers' must be a non-empty list"),
    ("layers a string", _set(["layers"], "Conv2d"), r"'layers' must be a non-empty list"),
    ("layer a string", _set(["layers", 1], "ReLU"), r"layer 1: entry without a 'type' \(got 'ReLU'\)"),
    ("layer null", _set(["layers", 1], None), r"layer 1: entry without a 'type' \(got None\)"),
    ("layer without type", _set(["layers", 1], {"kind": "ReLU"}), r"layer 1: entry without a 'type'"),
    ("layer type unknown", _set(["layers", 1, "type"], "Softplus"), r"layer 1: unknown layer type 'Softplus' \(known: AvgPool2d"),
    ("layer type a number", _set(["layers", 1, "type"], 7), r"layer 1: unknown layer type 7"),
    ("layer type a list", _set(["layers", 1, "type"], ["ReLU"]), r"layer 1: unknown layer type \['ReLU'\]"),
    ("conv lacks kernel", _set(["layers", 0, "kernel_size"], DELETE), r"layer 0 \(Conv2d\): lacks 'kernel_size'"),
    ("conv kernel a string", _set(["layers", 0, "kernel_size"], "3"), r"layer 0 \(Conv2d\): 'kernel_size' must be an integer in 0\.\.2147483647, got '3'"),
    ("conv kernel a float", _set(["layers", 0, "kernel_size"], 3.0), r"'kernel_size' must be an integer .*got 3\.0"),
    ("conv kernel a bool", _set(["layers", 0, "kernel_size"], True), r"'kernel_size' must be an integer .*got True"),
    ("conv padding negative", _set(["layers", 0, "padding"], -1), r"layer 0 \(Conv2d\): 'padding' must be an integer .*got -1"),
    ("conv stride zero", _set(["layers", 0, "stride"], 0), r"layer 0 \(Conv2d\): Conv2d stride must be a positive integer, got 0"),
    ("conv in_channels null", _set(["layers", 0, "in_channels"], None), r"'in_channels' must be an integer .*got None"),
    ("conv out_channels huge", _set(["layers", 0, "out_channels"], BIG), r"'out_channels' must be an integer in 0\.\.2147483647"),
    ("conv bias a string", _set(["layers", 0, "bias"], "yes"), r"layer 0 \(Conv2d\): 'bias' must be true or false, got 'yes'"),
    ("conv dilation", _set(["layers", 0, "dilation"], 2), r"layer 0 \(Conv2d\): bad hyperparameters .*unknown 'dilation'"),
    ("relu inplace", _set(["layers", 1, "inplace"], True), r"layer 1 \(ReLU\): bad hyperparameters .*unknown 'inplace' \(allowed: none\)"),
    ("maxpool padding", _set(["layers", 2, "padding"], 1), r"layer 2 \(MaxPool2d\): MaxPool2d supports padding=0 only"),
    ("maxpool kernel a dict", _set(["layers", 2, "kernel_size"], {"h": 3}), r"layer 2 \(MaxPool2d\): 'kernel_size' must be an integer"),
    ("avgpool padding over half", _set(["layers", 5, "padding"], 2), r"layer 5 \(AvgPool2d\): AvgPool2d padding 2 exceeds half the kernel"),
    ("dense in_features a list", _set(["layers", 7, "in_features"], [3]), r"layer 7 \(Dense\): 'in_features' must be an integer"),
    ("dense out_features differs from its array", _set(["layers", 7, "out_features"], 6), r"layer 7 \(Dense\): Dense weight must have shape \(6, 3\), got \(5, 3\)"),
    ("shapes do not chain", _set(["input_shape"], [2, 20, 20]), r"architecture does not fit together: .*Dense"),
    ("channels do not chain", _set(["input_shape"], [3, 9, 10]), r"architecture does not fit together: .*C=2"),
    ("bias false but array present", _set(["layers", 3, "bias"], False), r"unexpected arrays not described by the architecture: layers\.3\.bias"),
    ("layer moved", lambda r: {**r, "layers": r["layers"][1:] + r["layers"][:1]}, r"missing array 'layers\.2\.weight' for layer 2 \(Conv2d\)"),
]


@pytest.mark.parametrize("case,mutate,message", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_record_gives_weight_file_error(saved, case, mutate, message):
    net, path = saved
    record = mutate(copy.deepcopy(architecture(net)))
    arrays = arrays_of(path)
    arrays["architecture"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(WeightFileError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: "), str(e.value)
    assert "\n" not in str(e.value)
    assert re.search(message, str(e.value)), str(e.value)


def test_malformed_table_is_large():
    assert len(MALFORMED) >= 33


@pytest.mark.parametrize("raw,message", [
    (b"[" * 100000, "nested too deeply"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"NaN", "does not say format 'minilrp'"),
])
def test_record_bytes_that_are_not_a_record(saved, raw, message):
    _, path = saved
    arrays = arrays_of(path)
    arrays["architecture"] = np.frombuffer(raw, np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(WeightFileError, match=message):
        load(path)


def test_record_of_the_wrong_dtype(saved):
    _, path = saved
    arrays = arrays_of(path)
    arrays["architecture"] = arrays["architecture"].astype(np.float32)
    np.savez(path, **arrays)
    with pytest.raises(WeightFileError, match="must be UTF-8 bytes"):
        load(path)


def test_bad_dtype_argument_is_the_callers_error(saved):
    from minilrp import MinilrpError
    _, path = saved
    with pytest.raises(MinilrpError, match="dtype must be float32 or float64, got 'int8'") as e:
        load(path, dtype="int8")
    assert not isinstance(e.value, WeightFileError)


# ------------------------------------------------------------------------------------------
# Damaged files: random bytes anywhere give the package's own error naming file and member
# ------------------------------------------------------------------------------------------
def test_corrupt_deflate_stream_names_file_and_member(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("layers.0.weight.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start:start + 16] = np.random.default_rng(3).integers(0, 256, 16, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match=r"net\.npz: member 'layers\.0\.weight\.npy' is corrupt \((error|BadZipFile)"):
        load(path)


def test_member_that_is_not_npy_or_lies_about_its_shape(saved, tmp_path):
    _, path = saved
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(WeightFileError, match=r"member 'readme\.txt' is not a \.npy array"):
        load(path)
    # a valid CRC over a header that claims 10**12 float64 values: refused, nothing allocated
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    npy = b"\x93NUMPY\x01\x00" + len(header.ljust(117) + "\n").to_bytes(2, "little") + \
        (header.ljust(117) + "\n").encode() + b"\x00" * 64
    other = tmp_path / "liar.npz"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("layers.0.weight.npy", npy)
    with pytest.raises(WeightFileError, match=r"liar\.npz: member 'layers\.0\.weight\.npy' is corrupt"):
        load(other)


def _loads_identically(back, net):
    assert architecture(back) == architecture(net)
    for a, b in zip(net.layers, back.layers):
        for k, v in a.params().items():
            np.testing.assert_array_equal(v, b.params()[k])


@pytest.mark.slow
def test_random_byte_flips_in_a_bundled_weight_file(tmp_path):
    """400 seeded trials on the bundled MLP: 1-8 random bytes overwritten, half anywhere
    (mostly compressed data), half in the zip structure (local headers, central directory,
    end record). Each load gives a WeightFileError naming the file, or (bytes that did not
    matter: timestamps, attributes, a CRC-checked stretch unchanged) exactly the network."""
    from minilrp.models.data import model_path
    source = model_path("fmnist-mlp")
    data = open(source, "rb").read()
    net = load(source)
    with zipfile.ZipFile(source) as zf:
        infos = zf.infolist()
        structure = [range(i.header_offset, i.header_offset + 30 + len(i.filename) + len(i.extra))
                     for i in infos]
    directory_start = max(i.header_offset + 30 + len(i.filename) + len(i.extra) + i.compress_size
                          for i in infos)
    structure.append(range(directory_start, len(data)))
    spots = np.concatenate([np.arange(r.start, r.stop) for r in structure])
    rng = np.random.default_rng(2024)
    path = tmp_path / "flipped.npz"
    outcomes = {"refused": 0, "identical": 0}
    for trial in range(400):
        b = bytearray(data)
        n = int(rng.integers(1, 9))
        where = rng.integers(0, len(b), n) if trial % 2 else rng.choice(spots, n)
        for w in where:
            b[int(w)] = int(rng.integers(0, 256))
        path.write_bytes(bytes(b))
        try:
            back = load(path)
        except WeightFileError as e:
            assert str(e).startswith(f"{path}: ") and "\n" not in str(e), str(e)
            outcomes["refused"] += 1
        else:
            _loads_identically(back, net)
            outcomes["identical"] += 1
    assert outcomes["refused"] > 250 and sum(outcomes.values()) == 400


def test_random_bytes_in_member_contents_with_valid_crcs(saved, tmp_path):
    """Past the CRC: members whose *content* (the .npy header and data, the JSON record) has
    random bytes, re-zipped with correct checksums, so the .npy parser and the record checks
    meet them. Only WeightFileError may come out; whatever loads has passed every check
    (finite parameters of the recorded shapes; random float bytes may still be huge, which
    the network's own overflow checks are for)."""
    net, path = saved
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    rng = np.random.default_rng(7)
    names = sorted(members)
    bad = tmp_path / "content.npz"
    loaded = 0
    for trial in range(300):
        name = names[trial % len(names)]
        content = bytearray(members[name])
        # the .npy header lies in the first 128 bytes: aim half the flips there
        limit = 128 if trial % 2 else len(content)
        for w in rng.integers(0, min(limit, len(content)), int(rng.integers(1, 4))):
            content[int(w)] = int(rng.integers(0, 256))
        with zipfile.ZipFile(bad, "w") as zf:
            for k, v in members.items():
                zf.writestr(k, bytes(content) if k == name else v)
        try:
            back = load(bad)
        except WeightFileError:
            continue
        loaded += 1
        assert back.shapes == net.shapes
        assert all(np.isfinite(p).all() for layer in back.layers for p in layer.params().values())
    assert 0 < loaded < 300


def test_member_that_unpacks_beyond_the_limit_is_refused_unread(tmp_path):
    """A zip bomb (gigabytes of zeros compress to a few MB): the declared size is refused
    before anything is decompressed."""
    from minilrp.models.io import MAX_MEMBER_BYTES
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("layers.0.weight.npy", b"\x00" * 1000)
    data = bytearray(path.read_bytes())
    # rewrite the uncompressed size in the central directory entry (offset 24 of its header)
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 24:cd + 28] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    assert MAX_MEMBER_BYTES < 0xFFFFFFF0
    with pytest.raises(WeightFileError, match=r"bomb\.npz: member 'layers\.0\.weight\.npy' unpacks "
                                              r"to 4,294,967,280 bytes, more than the limit of "
                                              r"2,147,483,648 for one array"):
        load(path)
