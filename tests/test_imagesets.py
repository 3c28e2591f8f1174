"""Image sets: every source reads the very pixels and labels of the bundled Fashion-MNIST sample
it was made from, and every bad source gets a MinilrpError naming the file."""
import gzip
import os

import numpy as np
import pytest
from PIL import Image

import minilrp
from minilrp import MinilrpError
from minilrp.models.imagesets import FASHION_MNIST, open_images


@pytest.fixture(scope="module")
def net():
    return minilrp.load_model("fmnist-cnn")


@pytest.fixture(scope="module")
def sample():
    images, labels, classes = minilrp.load_samples()
    return images[:20], labels[:20], classes


def write_idx(path, array, gz=False):
    head = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(head + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def test_bundled_source(net, sample):
    s = open_images("bundled", net)
    assert len(s) == 1000 and np.array_equal(s.read(0, 20), sample[0])
    assert np.array_equal(s.labels[:20], sample[1]) and "bundled" in s.description


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_with_their_labels(tmp_path, net, sample, gz):
    images, labels, _ = sample
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels.astype(np.uint8), gz)
    s = open_images(str(tmp_path / f"t10k-images-idx3-ubyte{suffix}"), net)
    assert len(s) == 20 and np.array_equal(s.read(5, 12), images[5:12])
    assert np.array_equal(s.labels, labels) and "labels" in s.description


def test_npy_is_memory_mapped_and_takes_labels(tmp_path, net, sample):
    images, labels, _ = sample
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    s = open_images(str(tmp_path / "x.npy"), net, labels=str(tmp_path / "y.npy"))
    assert isinstance(s._data(), np.memmap)
    assert np.array_equal(s.read(3, 9), images[3:9]) and np.array_equal(s.labels, labels)
    np.save(tmp_path / "f.npy", images[:, None] / 255.0)  # floats in [0, 1], (N, C, H, W)
    f = open_images(str(tmp_path / "f.npy"), net)
    assert f.labels is None
    np.testing.assert_array_equal(net.preprocess(f.read(0, 20)), net.preprocess(images))


def test_folder_of_pngs_with_class_folders(tmp_path, net, sample):
    images, labels, classes = sample
    for i in range(6):
        d = tmp_path / classes[labels[i]]
        d.mkdir(exist_ok=True)
        Image.fromarray(images[i]).save(d / f"img{i:02d}.png")
    s = open_images(str(tmp_path), net)
    assert len(s) == 6
    order = sorted(range(6), key=lambda i: (classes[labels[i]], i))  # sorted path order
    np.testing.assert_array_equal(net.preprocess(s.read(0, 6)), net.preprocess(images[order]))
    assert np.array_equal(s.labels, labels[order])
    # without class folders: no labels
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(images[0]).save(flat / "a.png")
    assert open_images(str(flat), net).labels is None


def test_the_debian_fashion_mnist_test_set(net, sample):
    if not os.path.exists(os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    s = open_images("fashion-mnist", net)
    assert len(s) == 10000 and s.labels.shape == (10000,)
    # the bundled sample is its first 1000 images
    assert np.array_equal(s.read(0, 20), sample[0]) and np.array_equal(s.labels[:20], sample[1])


def test_bad_sources_name_the_file(tmp_path, net, sample):
    images = sample[0]
    good = tmp_path / "good.png"
    Image.fromarray(images[0]).save(good)
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.fromarray(images[1]).save(folder / "a.png")
    (folder / "b.png").write_bytes(good.read_bytes()[:60])  # truncated PNG
    with pytest.raises(MinilrpError, match="b.png"):
        open_images(str(folder), net)
    (folder / "b.png").write_bytes(b"not a picture at all")
    with pytest.raises(MinilrpError, match="b.png"):
        open_images(str(folder), net)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MinilrpError, match="no picture files"):
        open_images(str(empty), net)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(MinilrpError, match="do not fit the network's input"):
        open_images(str(tmp_path / "wrong.npy"), net)
    np.save(tmp_path / "flat.npy", np.zeros((3, 784), np.uint8))
    with pytest.raises(MinilrpError, match="flat.npy"):
        open_images(str(tmp_path / "flat.npy"), net)
    np.save(tmp_path / "big.npy", np.full((3, 28, 28), 7.0))
    s = open_images(str(tmp_path / "big.npy"))  # no model: opened unchecked
    with pytest.raises(MinilrpError, match=r"image 0 has values outside \[0, 1\]"):
        s.read(0, 3)
    np.save(tmp_path / "ok.npy", images)
    np.save(tmp_path / "lab.npy", np.arange(3))
    with pytest.raises(MinilrpError, match="labels .* must be 20 ints"):
        open_images(str(tmp_path / "ok.npy"), net, labels=str(tmp_path / "lab.npy"))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x00" * 10)
    with pytest.raises(MinilrpError, match="truncated"):
        open_images(str(tmp_path / "t10k-images-idx3-ubyte"), net)
    (tmp_path / "x-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" * 8)
    with pytest.raises(MinilrpError, match="not an IDX file"):
        open_images(str(tmp_path / "x-idx3-ubyte"), net)
    with pytest.raises(MinilrpError, match="not found"):
        open_images(str(tmp_path / "nowhere"), net)


def test_image_sets_travel_to_other_processes_as_paths(tmp_path, net, sample):
    import pickle
    np.save(tmp_path / "x.npy", np.repeat(sample[0], 50, axis=0))  # 1000 images, 784 kB
    s = open_images(str(tmp_path / "x.npy"), net)
    blob = pickle.dumps(s)
    assert len(blob) < 2000
    assert np.array_equal(pickle.loads(blob).read(990, 1000), s.read(990, 1000))
