"""The weight format: exact round trips, and a named error for every broken file."""
import json

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
    with pytest.raises(WeightFileError, match="finite floats"):
        load(path)
    arrays["layers.0.bias"] = np.array([0, np.nan, 0, 0], np.float32)
    rewrite(path, arrays)
    with pytest.raises(WeightFileError, match="finite floats"):
        load(path)


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
