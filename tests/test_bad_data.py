"""Hostile data in each real format (issue 12, defects 3 and the data parts of 9).

Image folders with links that lead around the split (to `..`, to a sibling class, in a loop),
FIFOs, sockets and dangling links named like images, and corrupt files whose names are not
UTF-8; Fashion-MNIST IDX files with wrong counts, out-of-range labels, bad headers and a pickle
payload planted as torchvision's cached `processed/*.pt`; CIFAR batches with labels that are
not integers; and errors raised inside DataLoader workers. Each must end in one message that
names the file (exit 2), or — where good data remains — in a run that leaves the bad entries
out and lists them in `skipped_files.txt`.

The dataset builders are called directly where that shows the behaviour (fast); the CLI is run
where the user-visible outcome is the exit code and the console (`slow`).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from conftest import RECIPES, cli_env, run_in_process, run_pipeforge
from datagen import write_cifar10, write_fashion_mnist, write_idx_labels, write_image_folder
from pipeforge import BuildContext, DataError

CATFISH = RECIPES / "catfish_simplenet.toml"
FASHION = RECIPES / "fashion_mnist_mlp.toml"
CIFAR = RECIPES / "cifar_resnet18.toml"
TWO_SPLITS = ("--set", 'dataset.splits=["train", "val"]')
NOT_AN_IMAGE = b"notes, not an image\n"


class Blocked(BaseException):
    """Raised by `deadline`; not an Exception, so no `except Exception` in the code swallows it."""


@pytest.fixture
def deadline():
    """Fail a test that blocks (e.g. on opening a FIFO) instead of hanging the suite."""

    def expire(signum, frame):
        raise Blocked("blocked for 60 s: something that is not a regular file was opened")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


class _RunsCode:
    """Unpickling this creates `marker`: proof that a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


# ------------------------------------------------------------------------------ image folders


def small_folder(root: Path):
    """train and val, 4 good images per class, no corrupt files."""
    return write_image_folder(root, splits=("train", "val"), per_class=4, corrupt_splits=())


def build_folder(root: Path):
    from pipeforge.plugins import discover
    from pipeforge_catfish.build import build_image_folder
    from pipeforge_catfish.params import ImageFolderParams

    params = ImageFolderParams(root=str(root), splits=["train", "val"])
    return build_image_folder(params, BuildContext(discover().registry, seed=0, device="cpu"))


def assert_exactly_the_good_images(data, folder, split: str = "train") -> None:
    samples = data.splits[split].samples
    good = [p for p in folder.good if p.parent.parent.name == split]
    assert sorted(str(path) for path, _ in samples) == sorted(map(str, good))
    assert all(data.classes[label] == Path(path).parent.name for path, label in samples)


@pytest.mark.parametrize("target", ["..", ".", "../fish", "../.."])
def test_a_folder_link_in_a_class_folder_is_listed_not_followed(tmp_path, target):
    """`..` relabelled every fish as a cat (80 -> 3,280 samples); `.` looped (each image ~41x)."""
    folder = small_folder(tmp_path / "catfish")
    link = folder.root / "train" / "cat" / "elsewhere"
    link.symlink_to(target)

    data = build_folder(folder.root)

    assert_exactly_the_good_images(data, folder)
    listed = dict(data.skipped)
    assert "link to a folder" in listed[str(link)]


def test_a_link_loop_below_a_class_folder_counts_each_image_once(tmp_path):
    folder = small_folder(tmp_path / "catfish")
    sub = folder.root / "train" / "fish" / "more"
    sub.mkdir()
    (sub / "back").symlink_to("..")

    data = build_folder(folder.root)

    assert_exactly_the_good_images(data, folder)
    assert str(sub / "back") in dict(data.skipped)


def test_a_class_folder_that_is_a_link_around_the_split_is_refused(tmp_path):
    folder = small_folder(tmp_path / "catfish")
    for split in ("train", "val"):
        (folder.root / split / "dog").symlink_to(".")  # would hold cat/ and fish/ as "dog"

    with pytest.raises(DataError, match=r"train/dog") as error:
        build_folder(folder.root)
    assert "link" in str(error.value)


def test_entries_that_are_not_regular_files_are_skipped_unopened(tmp_path, deadline, monkeypatch):
    """A FIFO named pipe.jpg hung the run forever; sockets and dangling links are no images."""
    folder = small_folder(tmp_path / "catfish")
    cat = folder.root / "train" / "cat"
    os.mkfifo(cat / "pipe.jpg")
    (cat / "alias.jpg").symlink_to("pipe.jpg")
    (cat / "gone.png").symlink_to("nowhere.png")
    monkeypatch.chdir(cat)  # a socket path must be short; bind relative to its folder
    server = socket.socket(socket.AF_UNIX)
    server.bind("sock.png")

    try:
        data = build_folder(folder.root)
    finally:
        server.close()

    assert_exactly_the_good_images(data, folder)
    listed = dict(data.skipped)
    assert "FIFO" in listed[str(cat / "pipe.jpg")]
    assert "FIFO" in listed[str(cat / "alias.jpg")]
    assert "socket" in listed[str(cat / "sock.png")]
    assert "broken link" in listed[str(cat / "gone.png")]


def test_skipped_files_with_undecodable_names_are_written_escaped(tmp_path):
    from pipeforge.rundir import RunDir

    name = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.jpg")  # Latin-1 bytes, not UTF-8
    reason = f"UnidentifiedImageError: cannot identify image file {name!r}"
    tab = str(tmp_path / "a\tb\nc.jpg")

    RunDir(tmp_path).write_skipped([(name, reason), (tab, "OSError: truncated")])

    lines = (tmp_path / "skipped_files.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    path, why = lines[0].split("\t")
    assert path == f"{tmp_path}/caf\\xe9.jpg"
    assert why.startswith("UnidentifiedImageError: cannot identify image file")
    assert lines[1] == f"{tmp_path}/a\\tb\\nc.jpg\tOSError: truncated"


@pytest.mark.slow
def test_a_hostile_image_folder_trains_on_the_good_images_and_lists_the_rest(tmp_path):
    folder = small_folder(tmp_path / "catfish")
    cat = folder.root / "train" / "cat"
    (cat / "up").symlink_to("..")
    os.mkfifo(cat / "pipe.jpg")
    latin1 = os.fsencode(cat) + b"/caf\xe9.jpg"
    with open(latin1, "wb") as f:
        f.write(NOT_AN_IMAGE)

    result = run_pipeforge(
        "run", CATFISH, "--run-dir", tmp_path / "run", "--set", f"dataset.root={folder.root}",
        *TWO_SPLITS, "--set", "trainer.epochs=1", cwd=tmp_path, timeout=300,
    )

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert "train 8," in output  # 4 cats + 4 fish: no fish relabelled through the link
    assert "skipped 3 unreadable files" in output
    listed = dict(
        line.split("\t", 1)
        for line in (tmp_path / "run" / "skipped_files.txt").read_text(encoding="utf-8").splitlines()
    )
    assert sorted(listed) == sorted([str(cat / "up"), str(cat / "pipe.jpg"), f"{cat}/caf\\xe9.jpg"])


# ------------------------------------------------------------------------------ Fashion-MNIST


def build_fashion(root: Path):
    from pipeforge_fashion.build import build_fashion_mnist
    from pipeforge_fashion.plugin import FashionMNISTParams

    params = FashionMNISTParams(root=str(root), download=False)
    return build_fashion_mnist(params, BuildContext(registry=None, seed=0, device="cpu"))


@pytest.fixture
def fashion(tmp_path) -> Path:
    """A small Fashion-MNIST; returns its raw folder."""
    return write_fashion_mnist(tmp_path / "data", n_train=60, n_test=20, seed=0)


def test_fashion_label_and_image_counts_that_differ_name_both_files(fashion):
    """Was a bare AssertionError from TensorDataset."""
    write_idx_labels(fashion / "train-labels-idx1-ubyte", [1] * 59)

    with pytest.raises(DataError) as error:
        build_fashion(fashion.parents[1])
    message = str(error.value)
    assert "train-labels-idx1-ubyte" in message and "train-images-idx3-ubyte" in message
    assert "59 labels" in message and "60 images" in message


def test_fashion_label_out_of_range_is_refused_when_read(fashion):
    """Label 10 was an IndexError in the middle of an epoch, naming no file."""
    write_idx_labels(fashion / "t10k-labels-idx1-ubyte", [3] * 19 + [10])

    with pytest.raises(DataError) as error:
        build_fashion(fashion.parents[1])
    message = str(error.value)
    assert str(fashion / "t10k-labels-idx1-ubyte") in message
    assert "0..9" in message and "10" in message


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "magic number"),  # a type torchvision reads, not bytes
        (lambda b: b[:10], "header"),
        (lambda b: b[:-5], "holds"),
        (lambda b: b + b"\x00" * 7, "holds"),
    ],
)
def test_fashion_malformed_images_file_is_named(fashion, damage, expected):
    images = fashion / "t10k-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))

    with pytest.raises(DataError) as error:
        build_fashion(fashion.parents[1])
    message = str(error.value)
    assert f"cannot read Fashion-MNIST from {fashion.resolve()}" in message
    assert "t10k-images-idx3-ubyte" in message and expected in message


def test_fashion_payload_planted_as_the_cached_file_is_refused(fashion, tmp_path):
    """torch's refusal came with its advice to load with weights_only=False."""
    processed = fashion.parent / "processed"
    processed.mkdir()
    marker = tmp_path / "code-ran"
    for name in ("training.pt", "test.pt"):
        torch.save(_RunsCode(marker), processed / name)

    with pytest.raises(DataError) as error:
        build_fashion(fashion.parents[1])
    message = str(error.value)
    assert str(processed.resolve() / "training.pt") in message
    assert "weights_only" not in message
    assert "remove" in message  # the way out: the raw files are read without the cache
    assert not marker.exists()


def test_fashion_cache_of_the_wrong_shape_is_refused(fashion):
    processed = fashion.parent / "processed"
    processed.mkdir()
    for name in ("training.pt", "test.pt"):
        torch.save((torch.zeros(5, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2, 3, 12])), processed / name)

    with pytest.raises(DataError, match=r"training\.pt.*0\.\.9"):
        build_fashion(fashion.parents[1])


def test_fashion_legacy_cache_is_still_read(fashion):
    processed = fashion.parent / "processed"
    processed.mkdir()
    images = torch.arange(3 * 28 * 28).reshape(3, 28, 28).to(torch.uint8)
    torch.save((images, torch.tensor([0, 9, 4])), processed / "training.pt")
    torch.save((images[:2], torch.tensor([1, 2])), processed / "test.pt")

    data = build_fashion(fashion.parents[1])

    assert len(data.splits["train"]) == 3 and len(data.splits["test"]) == 2
    image, label = data.splits["train"][1]
    assert image.shape == (1, 28, 28) and int(label) == 9
    assert torch.equal(image, images[1].float().div(255).unsqueeze(0))


@pytest.mark.slow
def test_fashion_bad_label_is_exit_2_before_training(fashion, tmp_path):
    write_idx_labels(fashion / "train-labels-idx1-ubyte", [10] + [0] * 59)

    result = run_in_process(
        "run", FASHION, "--run-dir", tmp_path / "run", "--set", f"dataset.root={fashion.parents[1]}",
        "--set", "dataset.download=false", "--set", "trainer.epochs=1", cwd=tmp_path,
    )

    assert result.returncode == 2, result.stderr
    assert "train-labels-idx1-ubyte" in result.stderr and "0..9" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ------------------------------------------------------------------------------ CIFAR-10


def cifar_batch(path: Path, labels: list) -> Path:
    data = np.zeros((len(labels), 3072), np.uint8)
    path.write_bytes(pickle.dumps({"data": data, "labels": labels}))
    return path


@pytest.mark.parametrize(
    "labels, found",
    [
        ([0, 0.5, 1], "0.5"),  # was silently truncated to 0
        ([1.0, 2.0], "1.0"),
        ([True, False], "True"),
        (["cat", 1], "cat"),
    ],
)
def test_cifar_labels_that_are_not_integers_are_refused(tmp_path, labels, found):
    from pipeforge_cifar.build import _read_batch

    path = cifar_batch(tmp_path / "data_batch_3", labels)

    with pytest.raises(DataError) as error:
        _read_batch(path, num_classes=10)
    message = str(error.value)
    assert str(path) in message
    assert "not an integer" in message and "labels must be in 0..9" in message and found in message


def test_cifar_label_beyond_int64_is_refused(tmp_path):
    """Was an OverflowError (exit 1)."""
    from pipeforge_cifar.build import _read_batch

    path = cifar_batch(tmp_path / "data_batch_3", [2**70, 1])
    with pytest.raises(DataError, match=rf"data_batch_3 has label {2**70}; labels must be in 0\.\.9"):
        _read_batch(path, num_classes=10)


def test_cifar_integer_labels_of_any_integer_type_are_read(tmp_path):
    from pipeforge_cifar.build import _read_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "labels": np.array([9, 0, 4], np.uint8)}))
    _, labels = _read_batch(path, num_classes=10)
    assert labels.tolist() == [9, 0, 4] and labels.dtype == np.int64
    _, labels = _read_batch(cifar_batch(tmp_path / "test_batch", []), num_classes=10)
    assert labels.shape == (0,)


@pytest.mark.slow
def test_cifar_fractional_label_is_exit_2_naming_the_batch(tmp_path):
    folder = write_cifar10(tmp_path / "data", n_train=50, n_test=20)
    cifar_batch(folder / "data_batch_2", [0, 0.5, 3])

    result = run_in_process(
        "run", CIFAR, "--run-dir", tmp_path / "run", "--set", f"dataset.root={tmp_path / 'data'}",
        "--set", "dataset.download=false", "--set", "dataset.check_integrity=false",
        "--set", "trainer.epochs=1", cwd=tmp_path,
    )

    assert result.returncode == 2, result.stderr
    assert str(folder / "data_batch_2") in result.stderr and "0..9" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ DataLoader workers


class _FailsAtFive(Dataset):
    """Eight items; item 5 raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        if index == 5:
            raise self.error
        return torch.zeros(2), 0


def worker_batches(dataset: Dataset):
    """Every batch of one epoch, loaded by one worker process; on an error, check the worker
    was stopped (it ignores SIGTERM: left running, Python's exit would wait for it forever)."""
    from pipeforge.loaders import make_batches

    before = set(multiprocessing.active_children())
    batches = make_batches(dataset, batch_size=2, shuffle=False, drop_last=False, generator=None,
                           device=torch.device("cpu"), num_workers=1)
    try:
        return list(batches.epoch())
    finally:
        assert set(multiprocessing.active_children()) <= before, "the DataLoader worker is still running"


def test_a_data_error_in_a_worker_arrives_as_its_own_message():
    """torch re-raises it with the worker's whole traceback as the message."""
    with pytest.raises(DataError) as error:
        worker_batches(_FailsAtFive(DataError("/data/cat/7.png: cannot be read any more\n(second line)")))
    assert str(error.value) == "/data/cat/7.png: cannot be read any more\n(second line)"


def test_another_error_in_a_worker_is_one_line_with_the_traceback_behind_it():
    with pytest.raises(ValueError) as error:
        worker_batches(_FailsAtFive(ValueError("row 5 has 3 columns")))
    message = str(error.value)
    assert message == "row 5 has 3 columns (in DataLoader worker process 0)"
    # --debug shows the chain: the worker's traceback is kept as the cause.
    assert "Traceback" in str(error.value.__cause__) and "__getitem__" in str(error.value.__cause__)


CORRUPTER = '''
import os
from pathlib import Path
from pipeforge import hookimpl


@hookimpl
def register_components():
    return []


@hookimpl
def on_fit_start(state):
    # The image was decoded when the dataset was built; damage it before the first epoch.
    path = Path(os.environ["CORRUPT_ON_FIT_START"])
    path.write_bytes(path.read_bytes()[:60])
'''


@pytest.mark.slow
def test_a_data_error_in_a_worker_is_one_message_and_exit_2(tmp_path):
    from plugin_dists import make_dist, pip_install

    site = pip_install(make_dist(tmp_path, "pipeforge-corrupter", "corrupter", "pipeforge_corrupter", CORRUPTER),
                       tmp_path / "site")
    folder = small_folder(tmp_path / "catfish")
    victim = next(p for p in folder.good if "/train/fish/" in str(p))

    result = run_pipeforge(
        "run", CATFISH, "--run-dir", tmp_path / "run", "--set", f"dataset.root={folder.root}",
        *TWO_SPLITS, "--set", "trainer.epochs=1", "--set", "trainer.num_workers=1", cwd=tmp_path,
        env=cli_env(PYTHONPATH=str(site), CORRUPT_ON_FIT_START=str(victim)), timeout=300,
    )

    assert result.returncode == 2, result.stderr
    assert f"{victim}: cannot be read any more" in result.stderr
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
