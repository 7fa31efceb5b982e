"""The generators in datagen.py write the REAL formats, deterministically, and learnable."""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image, ImageFile, UnidentifiedImageError

import datagen
from datagen import (
    CIFAR10_CLASSES,
    write_cifar10,
    write_fashion_mnist,
    write_image_folder,
    write_popularity_csv,
)

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def nearest_mean_accuracy(x_train, y_train, x_test, y_test) -> float:
    x_train = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
    x_test = np.asarray(x_test, dtype=np.float64).reshape(len(x_test), -1)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classes = np.unique(y_train)
    means = np.stack([x_train[y_train == c].mean(axis=0) for c in classes])
    d = ((x_test[:, None, :] - means[None, :, :]) ** 2).sum(axis=-1)
    return float((classes[d.argmin(axis=1)] == y_test).mean())


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------


def load_cifar_split(d, names):
    xs, ys = [], []
    for name in names:
        with open(d / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # exactly as torchvision does
        xs.append(entry["data"])
        ys.extend(entry["labels"])
    return np.vstack(xs), np.array(ys)


def test_cifar10_layout_and_pickles(tmp_path):
    d = write_cifar10(tmp_path, n_train=503, n_test=37, seed=1)
    assert d == tmp_path / "cifar-10-batches-py"
    assert sorted(os.listdir(d)) == sorted(CIFAR_BATCHES + ["batches.meta"])

    sizes = []
    for name in CIFAR_BATCHES:
        with open(d / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        assert set(entry) == {"batch_label", "labels", "data", "filenames"}
        data, labels = entry["data"], entry["labels"]
        assert isinstance(data, np.ndarray) and data.dtype == np.uint8
        assert data.ndim == 2 and data.shape[1] == 3072 and data.flags.c_contiguous
        assert isinstance(labels, list) and all(type(v) is int and 0 <= v < 10 for v in labels)
        assert len(labels) == len(entry["filenames"]) == data.shape[0]
        assert all(isinstance(s, str) and s.endswith(".png") for s in entry["filenames"])
        sizes.append(data.shape[0])
        expected = "testing batch 1 of 1" if name == "test_batch" else f"training batch {name[-1]} of 5"
        assert entry["batch_label"] == expected
    assert sizes == [101, 101, 101, 100, 100, 37]  # n_train split over the 5 batches

    with open(d / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert meta == {"num_cases_per_batch": 101, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}


def test_cifar10_is_python2_pickle_like_the_real_files(tmp_path):
    d = write_cifar10(tmp_path, n_train=50, n_test=10)
    # The CIFAR web page recipe: encoding="bytes" -> bytes keys.
    with open(d / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert set(raw) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert raw[b"data"].shape == (10, 3072) and raw[b"batch_label"] == b"training batch 1 of 5"
    with open(d / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"label_names"][0] == b"airplane"
    # Same pixels either way.
    with open(d / "data_batch_1", "rb") as f:
        np.testing.assert_array_equal(pickle.load(f, encoding="latin1")["data"], raw[b"data"])
    # And, like the real data, the default ASCII decoding chokes on the pixel buffer.
    with open(d / "data_batch_1", "rb") as f, pytest.raises(UnicodeDecodeError):
        pickle.load(f)


def test_cifar10_channel_major_layout(tmp_path):
    d = write_cifar10(tmp_path, n_train=100, n_test=10)
    x, y = load_cifar_split(d, CIFAR_BATCHES[:5])
    img = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # torchvision's reshape
    # Class 0 (airplane) is red-dominant, class 2 (bird) blue-dominant: only true if the
    # 3072 bytes really are RRR..GGG..BBB.
    red = img[y == 0].reshape(-1, 3).mean(axis=0)
    blue = img[y == 2].reshape(-1, 3).mean(axis=0)
    assert red[0] > red[1] + 80 and red[0] > red[2] + 80
    assert blue[2] > blue[0] + 80 and blue[2] > blue[1] + 80


def test_cifar10_learnable_nearest_mean(tmp_path):
    d = write_cifar10(tmp_path)
    x_tr, y_tr = load_cifar_split(d, CIFAR_BATCHES[:5])
    x_te, y_te = load_cifar_split(d, ["test_batch"])
    assert (x_tr.shape, x_te.shape) == ((500, 3072), (200, 3072))
    assert np.bincount(y_tr, minlength=10).tolist() == [50] * 10
    assert nearest_mean_accuracy(x_tr, y_tr, x_te, y_te) > 0.6


def test_torchvision_cifar10_md5_check_rejects_then_loads_when_bypassed(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cifar = pytest.importorskip("torchvision.datasets.cifar")
    write_cifar10(tmp_path, n_train=60, n_test=20)

    # The files cannot match torchvision's hard-coded md5s.
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        cifar.CIFAR10(str(tmp_path), train=True, download=False)

    # With md5 checks off (existence only), torchvision's own loader reads them.
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    train = cifar.CIFAR10(str(tmp_path), train=True, download=False)
    test = cifar.CIFAR10(str(tmp_path), train=False, download=False)
    assert (len(train), len(test)) == (60, 20)
    assert train.classes == list(CIFAR10_CLASSES)
    assert train.data.shape == (60, 32, 32, 3) and train.data.dtype == np.uint8
    img, target = train[0]
    assert isinstance(img, Image.Image) and img.size == (32, 32) and img.mode == "RGB"
    assert isinstance(target, int) and 0 <= target < 10


def test_cifar10_small_convnet_learns_in_two_epochs(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = write_cifar10(tmp_path)
    x_tr, y_tr = load_cifar_split(d, CIFAR_BATCHES[:5])
    x_te, y_te = load_cifar_split(d, ["test_batch"])

    def to_t(x):
        return torch.from_numpy(x.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)

    xt, yt = to_t(x_tr), torch.from_numpy(y_tr)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 16, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        for i in torch.randperm(len(xt)).split(25):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[i]), yt[i]).backward()
            opt.step()
    with torch.no_grad():
        acc = (model(to_t(x_te)).argmax(1).numpy() == y_te).mean()
    assert acc > 0.6, acc


# ---------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------


def test_fashion_mnist_idx_headers(tmp_path):
    raw = write_fashion_mnist(tmp_path, n_train=30, n_test=20)
    assert raw == tmp_path / "FashionMNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(MNIST_FILES)
    img = (raw / "train-images-idx3-ubyte").read_bytes()
    assert struct.unpack(">IIII", img[:16]) == (2051, 30, 28, 28) and len(img) == 16 + 30 * 784
    lab = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    assert struct.unpack(">II", lab[:8]) == (2049, 20) and len(lab) == 8 + 20
    assert max(lab[8:]) <= 9


def test_fashion_mnist_write_gz(tmp_path):
    raw = write_fashion_mnist(tmp_path, n_train=10, n_test=10, write_gz=True)
    assert sorted(os.listdir(raw)) == sorted(MNIST_FILES + [f + ".gz" for f in MNIST_FILES])
    for f in MNIST_FILES:
        assert gzip.decompress((raw / f"{f}.gz").read_bytes()) == (raw / f).read_bytes()


def test_torchvision_fashion_mnist_loads(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    datasets = pytest.importorskip("torchvision.datasets")
    write_fashion_mnist(tmp_path, n_train=600, n_test=200)
    train = datasets.FashionMNIST(str(tmp_path), train=True, download=False)
    test = datasets.FashionMNIST(str(tmp_path), train=False, download=False)
    assert (len(train), len(test)) == (600, 200)
    assert tuple(train.data.shape) == (600, 28, 28) and train.data.dtype == torch.uint8
    assert tuple(test.targets.shape) == (200,) and test.targets.dtype == torch.int64
    img, target = train[0]
    assert isinstance(img, Image.Image) and img.size == (28, 28) and img.mode == "L"
    assert isinstance(target, int) and 0 <= target < 10
    assert sorted(set(train.targets.tolist())) == list(range(10))
    acc = nearest_mean_accuracy(train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy())
    assert acc > 0.6, acc


def test_fashion_mnist_learnable_nearest_mean_numpy_only(tmp_path):
    raw = write_fashion_mnist(tmp_path)

    def read(prefix):
        x = np.frombuffer((raw / f"{prefix}-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
        y = np.frombuffer((raw / f"{prefix}-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8)
        return x.reshape(-1, 28, 28), y

    (x_tr, y_tr), (x_te, y_te) = read("train"), read("t10k")
    assert np.bincount(y_tr, minlength=10).tolist() == [60] * 10
    assert nearest_mean_accuracy(x_tr, y_tr, x_te, y_te) > 0.6


# ---------------------------------------------------------------------------
# Image folder
# ---------------------------------------------------------------------------


def test_image_folder_layout_sizes_and_modes(tmp_path):
    info = write_image_folder(tmp_path)
    assert info.root == tmp_path
    assert sorted(os.listdir(tmp_path)) == ["test", "train", "val"]
    for split in ("train", "val", "test"):
        assert sorted(os.listdir(tmp_path / split)) == ["cat", "fish"]
    assert len(info.good) == 3 * 2 * 12
    assert sorted(p.relative_to(tmp_path).as_posix() for p in info.corrupt) == [
        "train/cat/truncated.jpg",
        "train/fish/notes.jpg",
        "val/cat/truncated.jpg",
        "val/fish/notes.jpg",
    ]
    on_disk = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == set(info.good) | set(info.corrupt)

    modes, sizes = set(), set()
    for p in info.good:
        with Image.open(p) as im:
            im.load()
            modes.add((im.format, im.mode))
            sizes.add(im.size)
            assert 40 <= im.size[0] <= 100 and 30 <= im.size[1] <= 80
            assert p.suffix == {"JPEG": ".jpg", "PNG": ".png"}[im.format]
    assert modes == {("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "L")}
    assert len(sizes) > 20


def test_image_folder_corrupt_files_raise(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # PIL's default
    info = write_image_folder(tmp_path, splits=("train", "val"), per_class=2)
    truncated = [p for p in info.corrupt if p.name == "truncated.jpg"]
    notes = [p for p in info.corrupt if p.name == "notes.jpg"]
    assert len(truncated) == len(notes) == 2
    for p in truncated:
        with Image.open(p) as im:  # the header is intact ...
            assert im.format == "JPEG"
            with pytest.raises(OSError, match="truncated"):
                im.convert("RGB")  # ... but full decoding fails
        with Image.open(p) as im, pytest.raises(OSError):
            im.load()
    for p in notes:
        with pytest.raises(UnidentifiedImageError):
            Image.open(p)


def test_image_folder_corrupt_splits_param(tmp_path):
    info = write_image_folder(tmp_path, splits=("train", "test"), per_class=1, corrupt_splits=("test",))
    assert {p.parent.parent.name for p in info.corrupt} == {"test"}


def test_image_folder_learnable_after_resize(tmp_path):
    info = write_image_folder(tmp_path)

    def load(split):
        xs, ys = [], []
        for p in info.good:
            if p.parent.parent.name == split:
                with Image.open(p) as im:
                    xs.append(np.asarray(im.convert("RGB").resize((64, 64)), dtype=np.float32))
                ys.append(info.classes.index(p.parent.name))
        return np.stack(xs), np.array(ys)

    x_tr, y_tr = load("train")
    x_te, y_te = load("test")
    assert len(x_tr) == len(x_te) == 24
    assert nearest_mean_accuracy(x_tr, y_tr, x_te, y_te) > 0.8
    # cat red-dominant, fish blue-dominant
    cat, fish = x_tr[y_tr == 0].mean(axis=(0, 1, 2)), x_tr[y_tr == 1].mean(axis=(0, 1, 2))
    assert cat[0] > cat[2] and fish[2] > fish[0]


def test_torchvision_image_folder_sees_all_files(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    datasets = pytest.importorskip("torchvision.datasets")
    info = write_image_folder(tmp_path, per_class=3)
    ds = datasets.ImageFolder(str(tmp_path / "train"))
    assert ds.classes == ["cat", "fish"]
    # the corrupt files have image extensions, so ImageFolder lists them as samples
    assert len(ds) == 2 * 3 + 2
    for path, _ in ds.samples:
        if os.path.basename(path) in ("truncated.jpg", "notes.jpg"):
            with pytest.raises(OSError):
                ds.loader(path)
        else:
            assert ds.loader(path).mode == "RGB"
    assert len(info.corrupt) == 4


# ---------------------------------------------------------------------------
# CSV, determinism, speed
# ---------------------------------------------------------------------------


def test_popularity_csv(tmp_path):
    p = write_popularity_csv(tmp_path / "sub" / "pop.csv", [(9.99, 4.5), {"price": 20, "rating": 3}])
    assert p.read_text().splitlines() == ["price,rating", "9.99,4.5", "20,3"]
    with p.open(newline="") as f:
        assert list(csv.DictReader(f)) == [{"price": "9.99", "rating": "4.5"}, {"price": "20", "rating": "3"}]
    assert write_popularity_csv(tmp_path / "empty.csv", []).read_text() == "price,rating\n"


@pytest.mark.parametrize(
    "gen",
    [
        lambda r, s: write_cifar10(r, n_train=50, n_test=10, seed=s),
        lambda r, s: write_fashion_mnist(r, n_train=50, n_test=10, seed=s, write_gz=True),
        lambda r, s: write_image_folder(r, per_class=4, seed=s),
    ],
    ids=["cifar10", "fashion_mnist", "image_folder"],
)
def test_deterministic(tmp_path, gen):
    gen(tmp_path / "a", 3)
    gen(tmp_path / "b", 3)
    gen(tmp_path / "c", 4)
    a, b, c = (tree_bytes(tmp_path / k) for k in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_defaults_are_fast(tmp_path):
    import time

    for name, fn in [
        ("cifar10", write_cifar10),
        ("fashion_mnist", write_fashion_mnist),
        ("image_folder", write_image_folder),
    ]:
        t0 = time.perf_counter()
        fn(tmp_path / name)
        assert time.perf_counter() - t0 < 1.0, name


def test_no_torch_import_at_module_top():
    with open(datagen.__file__) as f:
        src = f.read()
    assert "import torch" not in src
