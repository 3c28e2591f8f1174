"""python -m minilrp.convert with state dicts (.npz, .safetensors, .pt) and an architecture
given as a layer description, a Python file or a name (minilrp/convert.py,
minilrp/models/statedict.py): round trips from real PyTorch modules checked against PyTorch's
logits, and a one-line error (exit 2, nothing written) for every mismatch and bad option."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import rel_err

from minilrp import MinilrpError, load, save
from minilrp.convert import main
from minilrp.models.statedict import compact, from_state_dict, read_description

REPO = Path(__file__).resolve().parent.parent
CNN = "conv:1:32:5:p2,relu,maxpool:2,conv:32:64:5:p2,relu,maxpool:2,flatten,linear:3136:128,relu,linear:128:10"


@pytest.fixture(scope="module")
def safetensors_numpy():
    return pytest.importorskip("safetensors.numpy")


def cli(capsys, *args):
    """The converter's main() in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args):
    """Run, expect exit 2 and exactly one stderr line 'python -m minilrp.convert: error: ...';
    returns the message."""
    code, out, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("python -m minilrp.convert: error: "), err
    return lines[0][len("python -m minilrp.convert: error: "):]


def logits(torch, m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def numpy_state(m):
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


def cnn(torch, dtype=None):
    from minilrp.models.importers import fmnist_model
    m = fmnist_model("fmnist-cnn").eval()
    return m.to(dtype) if dtype is not None else m


def bn_net(torch):
    """Conv without bias + BatchNorm2d, strided conv, Dropout, AvgPool, BatchNorm1d: input (3, 16, 16)."""
    nn = torch.nn
    m = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Dropout(0.3), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(24, 16), nn.BatchNorm1d(16), nn.ReLU(),
                      nn.Linear(16, 5))
    g = torch.Generator().manual_seed(1)
    for bn in (m[1], m[10]):
        n = bn.num_features
        bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        with torch.no_grad():
            bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return m.eval()


BN_LAYERS = ["conv:3:8:3:s2:p1:nobias", "bn:8", "relu", "maxpool:2", "dropout",
             {"type": "Conv2d", "in_channels": 8, "out_channels": 6, "kernel_size": 3, "padding": 1},
             "relu", {"type": "AvgPool2d", "kernel_size": 2}, "flatten",
             {"type": "Linear", "in_features": 24, "out_features": 16}, {"type": "BatchNorm", "num_features": 16},
             "relu", "linear:16:5"]


# ------------------------------------------------------------------------------------------
# Round trips against PyTorch
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["npz", "safetensors", "pt"])
def test_cnn_state_dict_with_compact_layers(torch, safetensors_numpy, tmp_path, capsys, suffix):
    m = cnn(torch)
    src = tmp_path / f"cnn.{suffix}"
    if suffix == "npz":
        np.savez(src, **numpy_state(m))
    elif suffix == "safetensors":
        safetensors_numpy.save_file(numpy_state(m), str(src))
    else:
        torch.save(m.state_dict(), src)
    code, out, err = cli(capsys, src, "--layers", CNN, "--input-shape", "1,28,28", "-o", tmp_path / "out.npz")
    assert code == 0, err
    assert out.strip() == (f"wrote {tmp_path / 'out.npz'}: cnn, 10 layers, 454,922 parameters, "
                           "input (1, 28, 28), 10 classes, float32")
    net = load(tmp_path / "out.npz")
    x = np.random.default_rng(0).uniform(0, 1, (4, 1, 28, 28)).astype(np.float32)
    assert rel_err(net.forward(x), logits(torch, m, x)) < 1e-5
    assert net.provenance["architecture_description"] == CNN
    assert net.provenance["source_file"] == f"cnn.{suffix}"


def test_float64_round_trip_is_exact_to_rounding(torch, tmp_path, capsys):
    m = cnn(torch, torch.float64)
    np.savez(tmp_path / "cnn64.npz", **numpy_state(m))
    code, _, err = cli(capsys, tmp_path / "cnn64.npz", "--layers", CNN, "--input-shape", "1,28,28",
                       "--dtype", "float64", "-o", tmp_path / "out.npz")
    assert code == 0, err
    net = load(tmp_path / "out.npz")
    assert net.dtype == np.float64
    x = np.random.default_rng(1).uniform(0, 1, (3, 1, 28, 28))
    assert rel_err(net.forward(x), logits(torch, m, x)) < 1e-12


def test_batchnorm_dropout_and_json_description_file(torch, safetensors_numpy, tmp_path, capsys):
    m = bn_net(torch)
    safetensors_numpy.save_file(numpy_state(m), str(tmp_path / "bn.safetensors"))
    desc = {"layers": BN_LAYERS, "input_shape": [3, 16, 16], "classes": list("abcde"),
            "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "name": "bn-net"}
    (tmp_path / "arch.json").write_text(json.dumps(desc))
    code, out, err = cli(capsys, tmp_path / "bn.safetensors", "--layers", tmp_path / "arch.json",
                         "-o", tmp_path / "bn.npz")
    assert code == 0, err
    net = load(tmp_path / "bn.npz")
    assert net.name == "bn-net" and net.classes == list("abcde")
    np.testing.assert_allclose(net.mean, [0.5, 0.4, 0.3])
    assert [layer.kind for layer in net.layers] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU",
                                                    "AvgPool2d", "Flatten", "Dense", "ReLU", "Dense"]
    x = np.random.default_rng(2).normal(size=(4, 3, 16, 16)).astype(np.float32)
    assert rel_err(net.forward(x), logits(torch, m, x)) < 1e-5


def test_named_layers_of_a_custom_module_from_a_text_file(torch, tmp_path, capsys):
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.head = nn.Sequential(nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, x):
            return self.head(torch.flatten(torch.relu(self.conv1(x)), 1))

    m = Net().eval()
    np.savez(tmp_path / "net.npz", **numpy_state(m))
    (tmp_path / "arch.txt").write_text("# my network, as its forward runs it\n"
                                       "conv1=conv:1:4:3   # the convolution\nrelu\nflatten\n"
                                       "head.0=linear:144:8, relu\nhead.2=linear:8:3\n")
    code, _, err = cli(capsys, tmp_path / "net.npz", "--layers", tmp_path / "arch.txt",
                       "--input-shape", "1,8,8", "-o", tmp_path / "out.npz")
    assert code == 0, err
    net = load(tmp_path / "out.npz")
    x = np.random.default_rng(3).uniform(0, 1, (2, 1, 8, 8)).astype(np.float32)
    assert rel_err(net.forward(x), logits(torch, m, x)) < 1e-5
    assert net.provenance["architecture_description"] == \
        "conv1=conv:1:4:3,relu,flatten,head.0=linear:144:8,relu,head.2=linear:8:3"


def test_common_key_prefix_is_dropped_and_said(torch, tmp_path, capsys):
    nn = torch.nn

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 2))

        def forward(self, x):
            return self.net(x)

    m = Wrapped().eval()
    np.savez(tmp_path / "w.npz", **numpy_state(m))
    code, out, err = cli(capsys, tmp_path / "w.npz", "--layers", "flatten,linear:16:6,relu,linear:6:2",
                         "--input-shape", "1,4,4", "-o", tmp_path / "w_out.npz")
    assert code == 0, err
    assert "(state dict keys read without their prefix 'net.')" in out
    net = load(tmp_path / "w_out.npz")
    assert net.provenance["state_dict_prefix"] == "net."
    x = np.random.default_rng(4).uniform(0, 1, (2, 1, 4, 4)).astype(np.float32)
    assert rel_err(net.forward(x), logits(torch, m, x)) < 1e-5


def test_from_state_dict_api_and_compact_form(torch):
    m = bn_net(torch)
    net = from_state_dict(numpy_state(m), BN_LAYERS, (3, 16, 16), dtype=np.float64)
    x = np.random.default_rng(5).normal(size=(2, 3, 16, 16))
    assert rel_err(net.forward(x), logits(torch, m.double(), x)) < 1e-12
    layers = read_description(json.dumps(BN_LAYERS))["layers"]
    assert compact(layers) == ("conv:3:8:3:s2:p1:nobias,bn:8:eps=1e-05,relu,maxpool:2,dropout,"
                               "conv:8:6:3:p1,relu,avgpool:2,flatten,linear:24:16,bn:16:eps=1e-05,"
                               "relu,linear:16:5")
    # the compact form describes the same network
    again = from_state_dict(numpy_state(m.float()), compact(layers), (3, 16, 16))
    assert rel_err(again.forward(x.astype(np.float32)), logits(torch, m.float(), x.astype(np.float32))) < 1e-5


MODULE_FILE = '''
import pathlib
import torch.nn as nn

pathlib.Path(__file__).with_name("ran.txt").write_text("the file ran")


class Net(nn.Module):
    def __init__(self, width=6):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(width * 4 * 4, 4)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def build():
    return Net()


def seeded():
    import torch
    torch.manual_seed(11)
    return Net()


def broken():
    return 1 / 0
'''


def test_python_module_with_a_state_dict_needs_trust(torch, safetensors_numpy, tmp_path, capsys):
    (tmp_path / "mynet.py").write_text(MODULE_FILE)
    sys.path.insert(0, str(tmp_path))
    try:
        m = importlib.import_module("mynet").Net().eval()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynet", None)
    (tmp_path / "ran.txt").unlink()
    safetensors_numpy.save_file(numpy_state(m), str(tmp_path / "w.safetensors"))
    args = [tmp_path / "w.safetensors", "--module", tmp_path / "mynet.py", "--input-shape", "3,8,8",
            "-o", tmp_path / "out.npz"]
    msg = one_line_error(capsys, *args)
    assert msg == (f"{tmp_path / 'mynet.py'} is Python code, which runs when the model is built; "
                   "pass --trust-code if you trust it")
    assert not (tmp_path / "ran.txt").exists() and not (tmp_path / "out.npz").exists()
    code, _, err = cli(capsys, *args, "--trust-code")
    assert code == 0, err
    net = load(tmp_path / "out.npz")
    x = np.random.default_rng(6).normal(size=(3, 3, 8, 8)).astype(np.float32)
    assert rel_err(net.forward(x), logits(torch, m, x)) < 1e-5
    assert net.provenance["module_file"] == "mynet.py"
    # FILE.py:NAME, and the user's function failing or missing
    code, _, err = cli(capsys, tmp_path / "w.safetensors", "--module", f"{tmp_path / 'mynet.py'}:Net",
                       "--input-shape", "3,8,8", "--trust-pickle", "-o", tmp_path / "out2.npz")
    assert code == 0, err
    msg = one_line_error(capsys, *args[:2], f"{tmp_path / 'mynet.py'}:broken", *args[3:], "--trust-code")
    assert msg == f"{tmp_path / 'mynet.py'}: running it failed (ZeroDivisionError: division by zero)"
    msg = one_line_error(capsys, *args[:2], f"{tmp_path / 'mynet.py'}:nothing", *args[3:], "--trust-code")
    assert msg.startswith(f"{tmp_path / 'mynet.py'} defines no nothing()")


def test_python_file_as_the_source(torch, tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODULE_FILE.replace("return Net()\n\n\ndef seeded", "return seeded()\n\n\ndef seeded", 1))
    code, _, err = cli(capsys, tmp_path / "model.py", "--input-shape", "3,8,8", "--trust-code",
                       "-o", tmp_path / "out.npz")
    assert code == 0, err
    torch.manual_seed(11)
    sys.path.insert(0, str(tmp_path))
    try:
        m = importlib.import_module("model").Net().eval()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("model", None)
    x = np.random.default_rng(7).normal(size=(2, 3, 8, 8)).astype(np.float32)
    assert rel_err(load(tmp_path / "out.npz").forward(x), logits(torch, m, x)) < 1e-5


def test_npz_state_dict_with_a_named_architecture(torch, tmp_path, capsys):
    """Was a cryptic torch zip error; now the .npz goes through --arch like a .pt file."""
    m = cnn(torch)
    np.savez(tmp_path / "cnn.npz", **numpy_state(m))
    code, out, err = cli(capsys, tmp_path / "cnn.npz", "--arch", "fmnist-cnn", "-o", tmp_path / "o.npz")
    assert code == 0, err
    net = load(tmp_path / "o.npz")
    x = np.random.default_rng(8).uniform(0, 1, (2, 1, 28, 28)).astype(np.float32)
    assert rel_err(net.forward(x), logits(torch, m, x)) < 1e-5
    assert net.classes[0] == "T-shirt/top"


def test_half_precision_state_dict_computes_in_float32(torch, tmp_path, capsys):
    m = cnn(torch)
    half = {k: v.astype(np.float16) for k, v in numpy_state(m).items()}
    np.savez(tmp_path / "half.npz", **half)
    code, _, err = cli(capsys, tmp_path / "half.npz", "--layers", CNN, "--input-shape", "1,28,28",
                       "-o", tmp_path / "o.npz")
    assert code == 0, err
    net = load(tmp_path / "o.npz")
    assert net.dtype == np.float32
    np.testing.assert_array_equal(net.layers[0].weight, half["0.weight"].astype(np.float32))


# ------------------------------------------------------------------------------------------
# Every mismatch: one line, exit 2, nothing written
# ------------------------------------------------------------------------------------------
def cnn_state(**changes):
    """The CNN's state dict as numpy (random weights, no torch needed), with changes
    (None deletes a key)."""
    rng = np.random.default_rng(0)
    shapes = {"0.weight": (32, 1, 5, 5), "0.bias": (32,), "3.weight": (64, 32, 5, 5), "3.bias": (64,),
              "7.weight": (128, 3136), "7.bias": (128,), "9.weight": (10, 128), "9.bias": (10,)}
    state = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}
    for k, v in changes.items():
        if v is None:
            del state[k]
        else:
            state[k] = v
    return state


def _nan_bias():
    b = np.zeros(32, np.float32)
    b[3] = np.nan
    return b


STATE_ERRORS = [
    ("missing key", cnn_state(**{"3.weight": None}), CNN,
     r"the state dict does not fit the description: missing '3\.weight' \(64, 32, 5, 5\) for conv:32:64:5:p2"),
    ("extra key", cnn_state(**{"fc.weight": np.zeros((2, 2), np.float32)}), CNN,
     r"unexpected 'fc\.weight' \(no layer named 'fc' in the description\)"),
    ("key of a layer without parameters", cnn_state(**{"1.weight": np.zeros(2, np.float32)}), CNN,
     r"unexpected '1\.weight' \(relu has no parameter 'weight'\)"),
    ("key without a dot", cnn_state(**{"scale": np.zeros(1, np.float32)}), CNN,
     r"unexpected 'scale' \(not a LAYER\.PARAMETER key\)"),
    ("shape", cnn_state(**{"0.weight": np.zeros((32, 1, 3, 3), np.float32)}), CNN,
     r"'0\.weight' has shape \(32, 1, 3, 3\), conv:1:32:5:p2 needs \(32, 1, 5, 5\)"),
    ("dtype", cnn_state(**{"9.weight": np.zeros((10, 128), np.int32)}), CNN,
     r"'9\.weight' has dtype int32, not floating point"),
    ("NaN", cnn_state(**{"0.bias": _nan_bias()}), CNN,
     r"'0\.bias' holds 1 NaN and 0 infinite values"),
    ("inf", cnn_state(**{"9.bias": np.full(10, -np.inf, np.float32)}), CNN,
     r"'9\.bias' holds 0 NaN and 10 infinite values"),
    ("beyond float32", cnn_state(**{"9.bias": np.full(10, 1e300)}), CNN,
     r"'9\.bias' holds values up to 1e\+300, beyond float32's range \(convert with float64\)"),
    ("several at once", cnn_state(**{"0.bias": None, "3.bias": None, "extra.w": np.zeros(1)}), CNN,
     r"missing '0\.bias' \(32,\) for conv:1:32:5:p2; missing '3\.bias' \(64,\) .*; unexpected 'extra\.w'"),
    ("unknown layer", cnn_state(), CNN.replace("relu,linear:128:10", "relu,linear:128:10,softmax"),
     r"layer 10 'softmax': unknown layer 'softmax' \(known: conv, conv2d, linear"),
    ("unknown option", cnn_state(), CNN.replace("conv:1:32:5:p2", "conv:1:32:5:q2"),
     r"layer 0 'conv:1:32:5:q2': unknown option 'q2' for conv \(the form is conv:IN:OUT:K\[:sS\]\[:pP\]\[:nobias\]\)"),
    ("bad number", cnn_state(), CNN.replace("maxpool:2", "maxpool:two", 1),
     r"layer 2 'maxpool:two': kernel_size must be a non-negative integer, got 'two'"),
    ("too few numbers", cnn_state(), CNN.replace("linear:128:10", "linear:128"),
     r"layer 9 'linear:128': linear needs 2 numbers \(in_features, out_features\), got 1"),
    ("does not chain", cnn_state(**{"7.weight": np.zeros((128, 3000), np.float32)}),
     CNN.replace("linear:3136:128", "linear:3000:128"),
     r"layer 7 'linear:3000:128': does not fit the input it receives: .*expects input of shape \(3000,\).*got \(3136,\)"),
    ("no flatten", cnn_state(), CNN.replace("flatten,", "identity,"),
     r"layer 7 'linear:3136:128': does not fit the input it receives"),
    ("batchnorm first", {"0.weight": np.ones(1, np.float32), "0.bias": np.zeros(1, np.float32),
                         "0.running_mean": np.zeros(1, np.float32), "0.running_var": np.ones(1, np.float32),
                         "2.weight": np.ones((10, 784), np.float32), "2.bias": np.zeros(10, np.float32)},
     "bn:1,flatten,linear:784:10",
     r"layer 0 'bn:1': BatchNorm is the first layer; minilrp folds a batch norm into the Conv2d or Linear"),
    ("duplicate names", cnn_state(), "a=conv:1:32:5:p2,relu,a=conv:32:64:5:p2",
     r"layers 0 and 2 are both named 'a'"),
]


@pytest.mark.parametrize("case,state,layers,message", STATE_ERRORS, ids=[c[0] for c in STATE_ERRORS])
def test_state_dict_mismatch_is_one_line(tmp_path, capsys, case, state, layers, message):
    np.savez(tmp_path / "sd.npz", **state)
    msg = one_line_error(capsys, tmp_path / "sd.npz", "--layers", layers, "--input-shape", "1,28,28",
                         "-o", tmp_path / "o.npz")
    assert re.search(message, msg), msg
    assert not (tmp_path / "o.npz").exists()


def test_state_dict_errors_from_the_api():
    with pytest.raises(MinilrpError, match=r"missing '9\.bias' \(10,\)"):
        from_state_dict(cnn_state(**{"9.bias": None}), CNN, (1, 28, 28))
    with pytest.raises(MinilrpError, match="give the input shape"):
        from_state_dict(cnn_state(), CNN, None)
    with pytest.raises(MinilrpError, match=r"10 class names for 10 outputs|3 class names for 10 outputs"):
        from_state_dict(cnn_state(), CNN, (1, 28, 28), classes=["a", "b", "c"])


def bad_files(tmp_path):
    """name -> path of a deliberately broken input."""
    np.savez(tmp_path / "sd.npz", **cnn_state())
    (tmp_path / "junk.safetensors").write_bytes(b"\x00junk" * 50)
    data = bytearray((tmp_path / "sd.npz").read_bytes())
    data[200:230] = bytes(range(30))
    (tmp_path / "damaged.npz").write_bytes(bytes(data))
    net_file = tmp_path / "minilrp.npz"
    save(net_file, from_state_dict(cnn_state(), CNN, (1, 28, 28)))
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "classes3.txt").write_text("a\nb\nc\n")
    (tmp_path / "shape.json").write_text(json.dumps({"layers": CNN, "input_shape": [1, 32, 32]}))
    (tmp_path / "bad.json").write_text('{"layers": ["relu",]}')
    (tmp_path / "folder.npz").mkdir()
    return tmp_path


OPTION_ERRORS = [
    ("npz without architecture", ["@sd.npz", "-o", "@o.npz"],
     r"sd\.npz is a state dict \(weights only\): describe its architecture with --layers \(e\.g\. conv:1:32:5:p2"),
    ("two architectures", ["@sd.npz", "--layers", CNN, "--arch", "fmnist-cnn", "-o", "@o.npz"],
     r"give one architecture: --arch and --layers both given"),
    ("missing description file", ["@sd.npz", "--layers", "@arch.json", "-o", "@o.npz"],
     r"arch\.json: no such layer description file"),
    ("description not JSON", ["@sd.npz", "--layers", "@bad.json", "-o", "@o.npz"],
     r"bad\.json: not valid JSON \(Expecting value"),
    ("no input shape", ["@sd.npz", "--layers", CNN, "-o", "@o.npz"],
     r"give --input-shape C,H,W \(the size of one input\)"),
    ("input shape disagrees", ["@sd.npz", "--layers", "@shape.json", "--input-shape", "1,28,28", "-o", "@o.npz"],
     r"--input-shape \(1, 28, 28\) disagrees with the layer description's input_shape \[1, 32, 32\]"),
    ("input shape of two", ["@sd.npz", "--layers", CNN, "--input-shape", "28,28", "-o", "@o.npz"],
     r"the input shape must be C,H,W or features of positive integers, got \(28, 28\)"),
    ("input shape not numbers", ["@sd.npz", "--layers", CNN, "--input-shape", "1x28x28", "-o", "@o.npz"],
     r"--input-shape must be comma-separated integers, got '1x28x28'"),
    ("output folder missing", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "-o", "@nope/o.npz"],
     r"the output folder .*nope does not exist"),
    ("output a folder", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "-o", "@folder.npz"],
     r"the output .*folder\.npz is a folder"),
    ("output not npz", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "-o", "@o.pt"],
     r"the output '.*o\.pt' must end in \.npz"),
    ("output is the source", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "-o", "@sd.npz"],
     r"the output .*sd\.npz is the source file"),
    ("source missing", ["@none.npz", "--layers", CNN, "-o", "@o.npz"], r"none\.npz: no such file"),
    ("source a folder", ["@folder.npz", "--layers", CNN, "-o", "@o.npz"], r"folder\.npz: the source is not a file"),
    ("mean not finite", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--mean", "nan", "-o", "@o.npz"],
     r"--mean must be finite numbers, got 'nan'"),
    ("std zero", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--std", "0", "-o", "@o.npz"],
     r"--std must be positive, got \(0\.0,\)"),
    ("mean per channel", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--mean", "0.1,0.2,0.3", "-o", "@o.npz"],
     r"--mean needs 1 value\(s\) for 1 channel\(s\), got 3"),
    ("low without high", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--low", "0", "-o", "@o.npz"],
     r"give both --low and --high"),
    ("low above high", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--low", "1", "--high", "0", "-o", "@o.npz"],
     r"--low 1 and --high 0 must be equally long with low <= high"),
    ("classes missing", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--classes", "@c.txt", "-o", "@o.npz"],
     r"c\.txt: no such file"),
    ("classes empty", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--classes", "@empty.txt", "-o", "@o.npz"],
     r"--classes .*empty\.txt: holds no class names"),
    ("classes of the wrong count", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--classes", "@classes3.txt", "-o", "@o.npz"],
     r"3 class names for 10 outputs"),
    ("name empty", ["@sd.npz", "--layers", CNN, "--input-shape", "1,28,28", "--name", " ", "-o", "@o.npz"],
     r"--name must not be empty"),
    ("unknown arch", ["@sd.npz", "--arch", "resnet50", "-o", "@o.npz"], r"unknown architecture 'resnet50'; known: vgg11"),
    ("layers for onnx", ["@m.onnx", "--layers", CNN, "-o", "@o.npz"], r"--layers is for state dicts; an ONNX file carries its graph"),
    ("module not python", ["@sd.npz", "--module", "@sd.npz", "--trust-code", "--input-shape", "1,28,28", "-o", "@o.npz"],
     r"--module '.*sd\.npz': give a Python file, FILE\.py\[:NAME\]"),
    ("damaged safetensors", ["@junk.safetensors", "--layers", CNN, "--input-shape", "1,28,28", "-o", "@o.npz"],
     r"junk\.safetensors: not a readable safetensors file \(SafetensorError"),
    ("damaged npz member", ["@damaged.npz", "--layers", CNN, "--input-shape", "1,28,28", "-o", "@o.npz"],
     r"damaged\.npz: member '0\.weight\.npy' is corrupt|damaged\.npz: truncated or corrupt"),
    ("a minilrp weight file", ["@minilrp.npz", "--layers", CNN, "--input-shape", "1,28,28", "-o", "@o.npz"],
     r"minilrp\.npz is already a minilrp weight file .*load it with minilrp\.load"),
    ("unknown option", ["@sd.npz", "--frobnicate", CNN, "-o", "@o.npz"], r"unrecognized arguments: --frobnicate"),
    ("bad dtype", ["@sd.npz", "--layers", CNN, "--dtype", "float16", "-o", "@o.npz"],
     r"argument --dtype: invalid choice: 'float16'"),
    ("no output", ["@sd.npz", "--layers", CNN], r"give a source file and -o OUTPUT\.npz"),
]


@pytest.mark.parametrize("case,args,message", OPTION_ERRORS, ids=[c[0] for c in OPTION_ERRORS])
def test_bad_options_and_files_are_one_line(tmp_path, capsys, case, args, message):
    pytest.importorskip("safetensors")
    folder = bad_files(tmp_path)
    (folder / "m.onnx").write_bytes(b"onnx")
    args = [folder / a[1:] if a.startswith("@") else a for a in args]  # "@name": a file here
    msg = one_line_error(capsys, *args)
    assert re.search(message, msg), msg
    assert not (folder / "o.npz").exists()


def test_output_folder_is_checked_before_the_source_is_read(tmp_path, capsys):
    """Validation comes first: a damaged source with an unusable output names the output."""
    bad_files(tmp_path)
    msg = one_line_error(capsys, tmp_path / "damaged.npz", "--layers", CNN, "--input-shape", "1,28,28",
                         "-o", tmp_path / "missing" / "o.npz")
    assert msg.startswith("the output folder") and "does not exist" in msg


def test_bfloat16_safetensors_named(torch, tmp_path, capsys):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file
    save_file({k: v.to(torch.bfloat16) for k, v in cnn(torch).state_dict().items()},
              str(tmp_path / "bf16.safetensors"))
    msg = one_line_error(capsys, tmp_path / "bf16.safetensors", "--layers", CNN, "--input-shape", "1,28,28",
                         "-o", tmp_path / "o.npz")
    assert "bf16.safetensors: holds tensors NumPy cannot read" in msg and "save them as float32" in msg


def test_without_safetensors_installed_says_which_extra(tmp_path, capsys, monkeypatch):
    (tmp_path / "w.safetensors").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors -> ImportError
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    msg = one_line_error(capsys, tmp_path / "w.safetensors", "--layers", CNN, "--input-shape", "1,28,28",
                         "-o", tmp_path / "o.npz")
    assert msg == ("reading .safetensors needs the safetensors package: pip install "
                   "'minilrp[safetensors]' (or pip install safetensors)")


@pytest.mark.slow
def test_as_a_user_runs_it(tmp_path):
    """A subprocess: the --help documents the description; an error is one line, no traceback."""
    run = [sys.executable, "-m", "minilrp.convert"]
    r = subprocess.run(run + ["--help"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0
    assert "conv:IN:OUT:K[:sS][:pP][:nobias]" in r.stdout and "--trust-code" in r.stdout
    np.savez(tmp_path / "sd.npz", **cnn_state(**{"3.weight": None}))
    r = subprocess.run(run + [str(tmp_path / "sd.npz"), "--layers", CNN, "--input-shape", "1,28,28",
                              "-o", str(tmp_path / "o.npz")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "python -m minilrp.convert: error: the state dict does not fit the description: missing "
        "'3.weight' (64, 32, 5, 5) for conv:32:64:5:p2"]
    np.savez(tmp_path / "sd.npz", **cnn_state())
    r = subprocess.run(run + [str(tmp_path / "sd.npz"), "--layers", CNN, "--input-shape", "1,28,28",
                              "-o", str(tmp_path / "o.npz")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(load(tmp_path / "o.npz").layers[0].weight, cnn_state()["0.weight"])


def test_bundled_model_round_trips_through_a_safetensors_state_dict(tmp_path, capsys):
    """No PyTorch at all: the bundled CNN's arrays as a state dict, its architecture as the
    README's description, give back the same network bit for bit."""
    st = pytest.importorskip("safetensors.numpy")
    import minilrp
    net = minilrp.load_model("fmnist-cnn")
    state = {f"{i}.{k}": v for i, layer in enumerate(net.layers) for k, v in layer.params().items()}
    st.save_file(state, str(tmp_path / "weights.safetensors"))
    (tmp_path / "classes.txt").write_text("\n".join(net.classes))
    code, _, err = cli(capsys, tmp_path / "weights.safetensors", "--input-shape", "1,28,28", "--layers", CNN,
                       "--classes", tmp_path / "classes.txt", "--name", "fmnist-cnn", "-o", tmp_path / "mine.npz")
    assert code == 0, err
    back = load(tmp_path / "mine.npz")
    assert back.classes == net.classes and back.shapes == net.shapes
    for a, b in zip(net.layers, back.layers):
        for k, v in a.params().items():
            np.testing.assert_array_equal(v, b.params()[k])


def test_layer_description_route_needs_no_pytorch(tmp_path, capsys, monkeypatch):
    """With torch unimportable, an .npz state dict and --layers still convert."""
    np.savez(tmp_path / "sd.npz", **cnn_state())
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    code, _, err = cli(capsys, tmp_path / "sd.npz", "--layers", CNN, "--input-shape", "1,28,28",
                       "-o", tmp_path / "o.npz")
    assert code == 0, err
    np.testing.assert_array_equal(load(tmp_path / "o.npz").layers[7].weight, cnn_state()["7.weight"])
