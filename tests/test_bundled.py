"""The bundled models: they reproduce PyTorch's logits on the committed sample images
(committed reference logits; no torch needed), their stated accuracy holds on the
committed subset, and a non-editable install ships them."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minilrp

FIXTURE = Path(__file__).parent / "fixtures" / "reference_logits.npz"
MODELS = {"fmnist-mlp": 0.87, "fmnist-cnn": 0.90, "fmnist-vgg": 0.92}


def test_bundled_models_listed():
    assert sorted(MODELS) == minilrp.available_models()


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def samples():
    images, labels, classes = minilrp.load_samples()
    assert images.shape == (1000, 28, 28) and images.dtype == np.uint8 and labels.shape == (1000,)
    assert len(classes) == 10
    return images, labels


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_logits_match_pytorch(name, reference, samples):
    images, _ = samples
    net32 = minilrp.load_model(name)
    assert net32.dtype == np.float32
    out32 = net32.forward(net32.preprocess(images))
    ref32 = reference[f"{name}/float32"]
    assert np.max(np.abs(out32 - ref32)) <= 1e-4 * max(1.0, np.abs(ref32).max())
    net64 = minilrp.load_model(name, dtype=np.float64)
    out64 = net64.forward(net64.preprocess(images))
    ref64 = reference[f"{name}/float64"]
    np.testing.assert_allclose(out64, ref64, rtol=1e-10, atol=1e-10 * np.abs(ref64).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_stated_accuracy(name, reference, samples):
    images, labels = samples
    net = minilrp.load_model(name)
    _, pred = net.predict(net.preprocess(images))
    acc = float(np.mean(pred == labels))
    stated = net.provenance["test_accuracy"]
    assert stated >= MODELS[name]                      # the target on the full 10k test set
    np.testing.assert_allclose(acc, float(reference[f"{name}/accuracy"]), atol=1e-12)
    assert abs(acc - stated) < 0.03                    # the subset agrees with the 10k figure
    for key in ("dataset", "training_command", "test_accuracy"):
        assert key in net.provenance


@pytest.mark.slow
def test_demo_runs():
    out = subprocess.run([sys.executable, "-m", "minilrp.demo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--model" in out.stdout


@pytest.mark.slow
def test_non_editable_install_ships_the_data(tmp_path):
    """The built package (pip install ., not editable) carries the weights and samples."""
    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(root)],
                   check=True, cwd=tmp_path, capture_output=True)
    code = ("import minilrp; n = minilrp.load_model('fmnist-cnn'); i, l, c = minilrp.load_samples(); "
            "print(minilrp.__file__, n.name, len(i))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert str(target) in out.stdout and "fmnist-cnn 1000" in out.stdout
