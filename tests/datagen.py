"""Small, fast, deterministic generators for datasets in their REAL on-disk formats.

Tests use these to exercise real loading code (torchvision readers, PIL, the
project's own loaders) without any network access.  Every generator takes its
sizes as parameters, draws from a seeded ``numpy.random.Generator`` (same seed ->
byte-identical files) and runs in well under a second at the defaults.

The synthetic classes are deliberately *learnable*: each class has a distinct
mean colour and/or spatial pattern plus noise, so a nearest-class-mean
classifier (or a tiny convnet in an epoch or two) is far above chance.

Only numpy, PIL and the standard library are imported here (no torch).

Public API:

* :func:`write_cifar10`        -> ``<root>/cifar-10-batches-py/``
* :func:`write_fashion_mnist`  -> ``<root>/FashionMNIST/raw/``
* :func:`write_image_folder`   -> ``<root>/<split>/<class>/*.{jpg,png}``
* :func:`write_popularity_csv` -> a ``price,rating`` CSV
"""

from __future__ import annotations

import csv
import gzip
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
from PIL import Image, ImageFile

PathLike = Union[str, Path]

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "ImageFolderInfo",
    "write_cifar10",
    "write_fashion_mnist",
    "write_image_folder",
    "write_popularity_csv",
]

# The real label names, in the real order, as stored in CIFAR-10's batches.meta.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# The order torchvision.datasets.FashionMNIST.classes uses (labels 0..9).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


# ---------------------------------------------------------------------------
# A minimal writer for Python-2-era pickles (what the real CIFAR files are)
# ---------------------------------------------------------------------------
#
# The official CIFAR-10 "python version" files were written by Python 2 with
# cPickle (protocol 2).  Their dict keys, batch labels, file names and the raw
# numpy buffer are Python 2 ``str`` objects, i.e. BINSTRING/SHORT_BINSTRING
# opcodes.  Python 3 decodes those according to ``pickle.load(encoding=...)``:
#
#   * ``encoding="latin1"`` (what torchvision uses) -> ``str`` keys: ``entry["data"]``
#   * ``encoding="bytes"``  (the recipe on the CIFAR web page) -> ``bytes`` keys: ``d[b"data"]``
#   * the default ``encoding="ASCII"`` -> UnicodeDecodeError on the pixel buffer
#
# Python 3's pickler cannot produce those opcodes (``bytes`` pickles as
# ``_codecs.encode(...)`` under protocol 2, and always loads as ``bytes``), so a
# file written with ``pickle.dump`` would NOT behave like the real one: with
# bytes keys torchvision's ``entry["data"]`` raises KeyError; with str keys the
# ``encoding="bytes"`` recipe breaks.  Hence this tiny hand-rolled emitter for
# exactly the types the CIFAR files contain.


class _Py2Str(bytes):
    """Marks bytes that must be pickled as a Python 2 ``str`` (BINSTRING)."""


def _py2(s: Union[str, bytes]) -> _Py2Str:
    return _Py2Str(s.encode("latin1") if isinstance(s, str) else s)


def _pickle_py2(obj: object) -> bytes:
    out = io.BytesIO()
    w = out.write

    def emit(o: object) -> None:
        if isinstance(o, bool):  # before int: bool is an int subclass
            w(b"\x88" if o else b"\x89")  # NEWTRUE / NEWFALSE
        elif o is None:
            w(b"N")
        elif isinstance(o, (int, np.integer)):
            o = int(o)
            if 0 <= o < 0x100:
                w(b"K" + struct.pack("<B", o))  # BININT1
            elif 0 <= o < 0x10000:
                w(b"M" + struct.pack("<H", o))  # BININT2
            else:
                w(b"J" + struct.pack("<i", o))  # BININT
        elif isinstance(o, _Py2Str):
            if len(o) < 256:
                w(b"U" + struct.pack("<B", len(o)) + o)  # SHORT_BINSTRING
            else:
                w(b"T" + struct.pack("<I", len(o)) + o)  # BINSTRING
        elif isinstance(o, tuple):
            w(b"(")  # MARK
            for item in o:
                emit(item)
            w(b"t")  # TUPLE
        elif isinstance(o, list):
            w(b"]")  # EMPTY_LIST
            if o:
                w(b"(")
                for item in o:
                    emit(item)
                w(b"e")  # APPENDS
        elif isinstance(o, dict):
            w(b"}")  # EMPTY_DICT
            if o:
                w(b"(")
                for k, v in o.items():
                    emit(k)
                    emit(v)
                w(b"u")  # SETITEMS
        elif isinstance(o, np.ndarray):
            if o.dtype != np.uint8:
                raise TypeError(f"only uint8 arrays are supported, got {o.dtype}")
            # Exactly what numpy 1.x under Python 2 wrote:
            #   _reconstruct(ndarray, (0,), 'b') then BUILD with
            #   (1, shape, dtype('u1', 0, 1) + state, fortran=False, rawdata)
            w(b"cnumpy.core.multiarray\n_reconstruct\n")
            w(b"cnumpy\nndarray\n")
            emit((0,))
            emit(_py2("b"))
            w(b"\x87R")  # TUPLE3, REDUCE
            w(b"(")
            emit(1)
            emit(tuple(int(n) for n in o.shape))
            w(b"cnumpy\ndtype\n")
            emit((_py2("u1"), 0, 1))
            w(b"R")
            emit((3, _py2("|"), None, None, None, -1, -1, 0))
            w(b"b")  # BUILD (dtype state)
            emit(False)
            emit(_Py2Str(np.ascontiguousarray(o).tobytes()))
            w(b"tb")  # TUPLE, BUILD (array state)
        else:
            raise TypeError(f"cannot pickle {type(o).__name__} in py2 style")

    w(b"\x80\x02")  # PROTO 2
    emit(obj)
    w(b".")  # STOP
    return out.getvalue()


# ---------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------

# One distinct mean colour per class (RGB).
_CIFAR_COLOURS = np.array(
    [
        (220, 60, 60),  # red
        (60, 200, 60),  # green
        (60, 80, 220),  # blue
        (220, 220, 60),  # yellow
        (200, 60, 200),  # magenta
        (60, 200, 200),  # cyan
        (240, 150, 40),  # orange
        (130, 60, 180),  # purple
        (140, 140, 140),  # grey
        (110, 70, 30),  # brown
    ],
    dtype=np.float32,
)


def _cifar_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) labels -> (N, 32, 32, 3) uint8 images, HWC."""
    n = len(labels)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    patterns = []
    for c in range(10):  # class-specific stripes: orientation + frequency
        theta = np.pi * c / 10.0
        freq = 1.0 + (c % 3)
        patterns.append(np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) / 32.0))
    pattern = np.stack(patterns)[labels]  # (N, 32, 32)
    base = _CIFAR_COLOURS[labels][:, None, None, :]  # (N, 1, 1, 3)
    jitter = rng.uniform(-20, 20, size=(n, 1, 1, 1)).astype(np.float32)  # brightness
    noise = rng.normal(0.0, 30.0, size=(n, 32, 32, 3)).astype(np.float32)
    img = base + jitter + 35.0 * pattern[..., None] + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n, dtype=np.int64) % n_classes)


def write_cifar10(root: PathLike, n_train: int = 500, n_test: int = 200, seed: int = 0) -> Path:
    """Write a synthetic CIFAR-10 in the real "CIFAR-10 python version" layout.

    Layout (what ``torchvision.datasets.CIFAR10(root)`` reads)::

        <root>/cifar-10-batches-py/
            data_batch_1 .. data_batch_5   # n_train split as evenly as possible
            test_batch                     # n_test images
            batches.meta

    Each data/test batch is a protocol-2 pickle of a dict (written exactly like
    the original Python 2 files, see ``_pickle_py2``)::

        {'batch_label': 'training batch 1 of 5',   # 'testing batch 1 of 1'
         'labels':      [int, ...],                # 0..9
         'data':        uint8 ndarray (N, 3072),   # channel-major: 1024 R, 1024 G, 1024 B, rows top->bottom
         'filenames':   ['<class>_s_000123.png', ...]}

    and ``batches.meta`` is ``{'num_cases_per_batch': int, 'label_names': [10
    real class names], 'num_vis': 3072}``.  As with the real files the keys are
    Python 2 ``str``: ``pickle.load(f, encoding="latin1")`` (torchvision) gives
    ``str`` keys, ``pickle.load(f, encoding="bytes")`` (the CIFAR web page
    recipe) gives ``bytes`` keys (``b'data'``, ``b'labels'``, ...), and a plain
    ``pickle.load(f)`` fails with UnicodeDecodeError just like the real data.

    Labels are balanced and shuffled; each class has a distinct mean colour and
    stripe pattern plus noise, so the task is learnable.

    NOTE: the files do NOT match torchvision's hard-coded md5 checksums.
    ``torchvision.datasets.CIFAR10(root, download=False)`` therefore raises
    ``RuntimeError("Dataset not found or corrupted...")`` (its ``__init__``
    md5-checks all six batch files, and ``_load_meta`` md5-checks
    ``batches.meta``); load with an integrity-check-off mode
    (``check_integrity=false``) or read the pickles directly.

    Returns the ``cifar-10-batches-py`` directory.
    """
    rng = np.random.default_rng(seed)
    out = Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)

    def batch(labels: np.ndarray, label: str, start: int) -> dict:
        imgs = _cifar_images(labels, rng)  # (N, 32, 32, 3)
        data = imgs.transpose(0, 3, 1, 2).reshape(len(labels), 3072)  # RRR..GGG..BBB
        return {
            _py2("batch_label"): _py2(label),
            _py2("labels"): [int(v) for v in labels],
            _py2("data"): np.ascontiguousarray(data),
            _py2("filenames"): [
                _py2(f"{CIFAR10_CLASSES[int(v)]}_s_{start + i:06d}.png") for i, v in enumerate(labels)
            ],
        }

    train_labels = _balanced_labels(n_train, 10, rng)
    chunks = np.array_split(train_labels, 5)
    start = 0
    for i, chunk in enumerate(chunks, 1):
        d = batch(chunk, f"training batch {i} of 5", start)
        (out / f"data_batch_{i}").write_bytes(_pickle_py2(d))
        start += len(chunk)

    test_labels = _balanced_labels(n_test, 10, rng)
    d = batch(test_labels, "testing batch 1 of 1", start)
    (out / "test_batch").write_bytes(_pickle_py2(d))

    meta = {
        _py2("num_cases_per_batch"): int(len(chunks[0])),
        _py2("label_names"): [_py2(c) for c in CIFAR10_CLASSES],
        _py2("num_vis"): 3072,
    }
    (out / "batches.meta").write_bytes(_pickle_py2(meta))
    return out


# ---------------------------------------------------------------------------
# Fashion-MNIST (IDX / "SN3 Pascal Vincent" format)
# ---------------------------------------------------------------------------


def _idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    # magic 0x00000803 = 2051: 0x08 -> unsigned byte, 3 dims; all ints big-endian
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    # magic 0x00000801 = 2049: unsigned byte, 1 dim
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _fashion_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) labels -> (N, 28, 28) uint8: one bright blob per image, class = position."""
    n = len(labels)
    angles = 2 * np.pi * np.arange(10) / 10.0
    cx = 14.0 + 8.5 * np.cos(angles)  # 10 blob centres on a ring around the centre
    cy = 14.0 + 8.5 * np.sin(angles)
    jx = rng.uniform(-1.5, 1.5, size=n)
    jy = rng.uniform(-1.5, 1.5, size=n)
    x0 = (cx[labels] + jx)[:, None, None]
    y0 = (cy[labels] + jy)[:, None, None]
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    sigma = rng.uniform(2.5, 3.5, size=(n, 1, 1))
    amp = rng.uniform(170, 255, size=(n, 1, 1))
    blob = amp * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    noise = rng.uniform(0, 40, size=(n, 28, 28))
    return np.clip(np.rint(blob + noise), 0, 255).astype(np.uint8)


def write_fashion_mnist(
    root: PathLike, n_train: int = 600, n_test: int = 200, seed: int = 0, write_gz: bool = False
) -> Path:
    """Write a synthetic Fashion-MNIST in the real IDX format.

    Layout (what ``torchvision.datasets.FashionMNIST(root, train=..., download=False)`` reads)::

        <root>/FashionMNIST/raw/
            train-images-idx3-ubyte   # >IIII magic 2051, n_train, 28, 28 + uint8 pixels
            train-labels-idx1-ubyte   # >II   magic 2049, n_train + uint8 labels
            t10k-images-idx3-ubyte    # same for n_test
            t10k-labels-idx1-ubyte

    torchvision reads the *uncompressed* files: ``_check_exists`` only tests
    that these four paths exist (no md5 check, unlike CIFAR-10), and
    ``raw_folder`` is ``<root>/<ClassName>/raw``.  With ``write_gz=True`` the
    ``*.gz`` siblings are written too, as a real download leaves them.  (Beware:
    if ``<root>/FashionMNIST/processed/{training,test}.pt`` exist, torchvision
    loads those legacy files instead of raw/.)

    Labels are balanced and shuffled; each class is a Gaussian blob at its own
    position on a ring, plus jitter and background noise.

    Returns the ``raw`` directory.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _balanced_labels(n, 10, rng)
        images = _fashion_images(labels, rng)
        for name, payload in (
            (f"{prefix}-images-idx3-ubyte", _idx_images(images)),
            (f"{prefix}-labels-idx1-ubyte", _idx_labels(labels)),
        ):
            (raw / name).write_bytes(payload)
            if write_gz:
                # mtime=0 keeps the .gz byte-identical across runs
                (raw / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
    return raw


# ---------------------------------------------------------------------------
# ImageFolder-style tree with mixed sizes/modes and corrupt files
# ---------------------------------------------------------------------------

# Class k gets colour k (class 0 red-dominant, class 1 blue-dominant, ...).
_FOLDER_COLOURS = np.array(
    [
        (210, 50, 50),
        (50, 70, 210),
        (50, 190, 60),
        (210, 200, 50),
        (190, 60, 190),
        (60, 190, 190),
    ],
    dtype=np.float32,
)

# (mode, extension) cycle: RGB JPEG, RGBA PNG, palette PNG, grayscale PNG.
_FOLDER_KINDS = (("RGB", "jpg"), ("RGBA", "png"), ("P", "png"), ("L", "png"))


@dataclass
class ImageFolderInfo:
    """What :func:`write_image_folder` wrote.

    ``good``: every decodable image (all splits), ``corrupt``: the truncated
    JPEGs and the non-image ``notes.jpg`` files.  Both are sorted lists of paths.
    """

    root: Path
    good: list[Path] = field(default_factory=list)
    corrupt: list[Path] = field(default_factory=list)
    classes: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()


def _folder_image(class_idx: int, n_classes: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8: class colour * class-oriented brightness gradient + noise.

    The gradient direction differs per class so classes stay separable even
    after conversion to grayscale.
    """
    colour = _FOLDER_COLOURS[class_idx % len(_FOLDER_COLOURS)]
    theta = np.pi * class_idx / max(n_classes, 2)  # 2 classes: horizontal vs vertical gradient
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx / max(w - 1, 1)) * np.cos(theta) + (yy / max(h - 1, 1)) * np.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    modulation = 1.0 - 0.7 * t  # bright at one edge, darker at the other
    jitter = rng.uniform(-20, 20, size=3).astype(np.float32)
    noise = rng.normal(0.0, 20.0, size=(h, w, 3)).astype(np.float32)
    img = (colour + jitter) * modulation[..., None] + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _encode(arr: np.ndarray, mode: str, ext: str, rng: np.random.Generator) -> bytes:
    img = Image.fromarray(arr, "RGB")
    if mode == "RGBA":
        alpha = rng.integers(200, 256, size=arr.shape[:2], dtype=np.uint8)
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(alpha, "L"))
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    elif mode == "L":
        img = img.convert("L")
    buf = io.BytesIO()
    if ext == "jpg":
        img.save(buf, format="JPEG", quality=90)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def _fails_to_decode(data: bytes) -> bool:
    """True if PIL (with LOAD_TRUNCATED_IMAGES forced off) cannot fully decode ``data``."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return False
    except (OSError, SyntaxError, ValueError):
        return True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _truncated_jpeg(rng: np.random.Generator) -> bytes:
    """A valid 100x80 JPEG cut to half its bytes (header intact, so ``Image.open``
    succeeds and only ``load()``/``convert()`` fails with "image file is truncated")."""
    arr = rng.integers(0, 256, size=(80, 100, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=90)
    full = buf.getvalue()
    cut = len(full) // 2
    while not _fails_to_decode(full[:cut]):  # never expected; guards against lenient decoders
        cut //= 2
        if cut < 64:
            raise RuntimeError("could not produce a JPEG that PIL refuses to decode")
    return full[:cut]


_NOT_AN_IMAGE = b"These are notes, not an image.\nThe extension says .jpg but the bytes are text.\n"


def write_image_folder(
    root: PathLike,
    splits: Sequence[str] = ("train", "val", "test"),
    classes: Sequence[str] = ("cat", "fish"),
    per_class: int = 12,
    seed: int = 0,
    corrupt_splits: Sequence[str] = ("train", "val"),
) -> ImageFolderInfo:
    """Write an ImageFolder tree with mixed sizes and modes, plus corrupt files.

    Layout::

        <root>/<split>/<class>/<class>_<NNN>.jpg|png   # per_class good images per class per split
        <root>/<split>/<classes[0]>/truncated.jpg      # only in corrupt_splits (default train, val)
        <root>/<split>/<classes[-1]>/notes.jpg         # only in corrupt_splits

    Good image ``i`` cycles through RGB JPEG, RGBA PNG, palette ("P") PNG and
    grayscale ("L") PNG; width is 40..100 and height 30..80 at random.  Class 0
    ("cat") is red-dominant, class 1 ("fish") blue-dominant (further classes get
    further colours), each with its own brightness-gradient direction and
    noise, so the classes are learnable after resizing to e.g. 64x64.

    Corrupt files: ``truncated.jpg`` is a valid JPEG cut to half its bytes --
    ``Image.open`` succeeds but ``.load()``/``.convert("RGB")`` raises OSError
    ("image file is truncated") with PIL's default
    ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` (verified at generation time);
    ``notes.jpg`` is plain text, so ``Image.open`` raises
    ``PIL.UnidentifiedImageError`` (an OSError).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    info = ImageFolderInfo(root=root, classes=tuple(classes), splits=tuple(splits))
    n_classes = len(classes)
    for split in splits:
        for k, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                mode, ext = _FOLDER_KINDS[i % len(_FOLDER_KINDS)]
                w = int(rng.integers(40, 101))
                h = int(rng.integers(30, 81))
                arr = _folder_image(k, n_classes, w, h, rng)
                p = d / f"{cls}_{i:03d}.{ext}"
                p.write_bytes(_encode(arr, mode, ext, rng))
                info.good.append(p)
        if split in corrupt_splits and classes:
            p = root / split / classes[0] / "truncated.jpg"
            p.write_bytes(_truncated_jpeg(rng))
            info.corrupt.append(p)
            p = root / split / classes[-1] / "notes.jpg"
            p.write_bytes(_NOT_AN_IMAGE)
            info.corrupt.append(p)
    info.good.sort()
    info.corrupt.sort()
    return info


# ---------------------------------------------------------------------------
# Tabular
# ---------------------------------------------------------------------------


def write_popularity_csv(
    path: PathLike, rows: Iterable[Union[Sequence[float], Mapping[str, float]]]
) -> Path:
    """Write ``path`` as a CSV with header ``price,rating`` and one line per row.

    ``rows`` items are ``(price, rating)`` pairs or mappings with ``"price"``
    and ``"rating"`` keys.  Parent directories are created.  Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["price", "rating"])
        for row in rows:
            if isinstance(row, Mapping):
                price, rating = row["price"], row["rating"]
            else:
                price, rating = row
            writer.writerow([price, rating])
    return path


# ---------------------------------------------------------------------------
# Hostile variants of the real formats (tests/test_bad_data.py)
# ---------------------------------------------------------------------------


def write_idx_labels(path: PathLike, labels: Sequence[int]) -> Path:
    """Write ``labels`` (each 0..255) as an IDX label file (magic 2049), replacing ``path``.

    Lets a test plant labels a real file could hold but Fashion-MNIST must refuse (e.g. 10),
    or a label count that differs from the images file's.  Returns the path.
    """
    path = Path(path)
    path.write_bytes(_idx_labels(np.asarray(labels, dtype=np.int64)))
    return path
