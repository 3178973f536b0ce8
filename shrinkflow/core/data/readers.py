"""Reading each kind of source, checked as it is read: scikit-learn's bundled datasets, the Keras download cache
(MNIST, Fashion-MNIST, CIFAR-10 and -100), MNIST-format IDX files, image folders (images.py) and CSV or Parquet
tables, one file or a folder of them (tables.py).

A source is read in two passes (see Source): its labels first, one small value per sample, which is enough to
split it; then its features in chunks, which are written to the prepared dataset's shards as they come, so no
source is ever held whole in memory unless its format is (the bundled and MNIST files, tens of MiB).
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.config import IMAGE_FOLDER_PREFIX, DataConfig
from shrinkflow.core.data.source import Source, in_memory
from shrinkflow.core.errors import DataError

ACCEPTED_SOURCES = (
    "sklearn:digits, sklearn:diabetes, keras:mnist, keras:fashion_mnist, keras:cifar10, keras:cifar100, "
    "idx:DIR (MNIST-format IDX files), images:DIR (a subfolder of images per class), or a path to a .csv or "
    ".parquet file or to a folder of them"
)
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
MNIST_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
FASHION_MNIST_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
IDX_UNSIGNED_BYTE = 0x08
IDX_IMAGES_NAME = re.compile(r"(?P<prefix>.*)images(?P<middle>.*)idx3-ubyte(\.gz)?")


def read_source(cfg: DataConfig) -> Source:
    """The source of the config, its labels read and checked, its features ready to be read."""
    source = cfg.source
    if source == "sklearn:digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return in_memory(digits.images[..., np.newaxis], digits.target)
    if source == "sklearn:diabetes":
        from sklearn.datasets import load_diabetes

        diabetes = load_diabetes(scaled=False)
        if cfg.task != "regression":
            raise DataError(f"{source} is a regression dataset (disease progression); set data.task: regression")
        return in_memory(diabetes.data, diabetes.target, columns=tuple(diabetes.feature_names))
    if source in KERAS_READERS:
        return KERAS_READERS[source]()
    if source.startswith("idx:"):
        features, labels = read_idx_dir(Path(source.removeprefix("idx:")))
        return in_memory(features, labels, encoded_images=True)
    if source.startswith(IMAGE_FOLDER_PREFIX):
        from shrinkflow.core.data.images import image_folder_source

        return image_folder_source(Path(source.removeprefix(IMAGE_FOLDER_PREFIX)), cfg)
    path = Path(source)
    if path.suffix.lower() in (".csv", ".parquet") or path.is_dir():
        from shrinkflow.core.data.tables import table_source

        return table_source(path, cfg)
    raise DataError(f"data.source {source!r} is not supported; use {ACCEPTED_SOURCES}")


def read_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every images/labels IDX pair in `directory`, concatenated in file name order."""
    if not directory.is_dir():
        raise DataError(f"idx:{directory}: directory not found")
    pairs = []
    for images_path in sorted(directory.iterdir()):
        match = IDX_IMAGES_NAME.fullmatch(images_path.name)
        if match is None:
            continue
        labels_name = f"{match['prefix']}labels{match['middle']}idx1-ubyte"
        candidates = [directory / labels_name, directory / f"{labels_name}.gz"]
        labels_path = next((path for path in candidates if path.is_file()), None)
        if labels_path is None:
            raise DataError(f"{images_path}: no matching labels file; expected {labels_name}[.gz] beside it")
        pairs.append(read_idx_pair(images_path, labels_path))
    if not pairs:
        raise DataError(f"idx:{directory}: no *images*idx3-ubyte[.gz] files in the directory")
    features, labels = zip(*pairs)
    return np.concatenate(features), np.concatenate(labels)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images with a channel axis (N, H, W, 1) and their labels, checked to be equally many."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels, but {images_path.name} has {len(images)} images")
    return images[..., np.newaxis], labels


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array (optionally gzipped): magic 0x0000 0x08 ndim, big-endian sizes, data."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            content = file.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the file ({exc})") from None
    expected_magic = (IDX_UNSIGNED_BYTE << 8) | ndim
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s): magic number "
            f"0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(f"{path}: truncated IDX header ({len(content)} bytes, expected {header_size})")
    sizes = tuple(int(size) for size in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(content, dtype=np.uint8, offset=header_size)
    if data.size != np.prod(sizes):
        raise DataError(
            f"{path}: the header promises {' x '.join(map(str, sizes))} = {np.prod(sizes)} values, "
            f"but the file holds {data.size}"
        )
    return data.reshape(sizes)


def keras_file(subdir: str, filename: str) -> Path:
    """A file of Keras's dataset cache (KERAS_HOME or ~/.keras), downloaded only when missing."""
    from tf_keras.utils import get_file  # shrinkflow/__init__ has set TF_USE_LEGACY_KERAS by now

    cache_dir = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    origin = KERAS_ORIGIN + filename
    try:
        return Path(get_file(filename, origin=origin, cache_dir=cache_dir, cache_subdir=subdir, file_hash=None))
    except Exception as exc:  # get_file raises a bare Exception for network errors
        raise DataError(
            f"cannot download {origin} ({exc}); without internet access, put the file at "
            f"{Path(cache_dir, subdir, filename)}"
        ) from None


def read_keras_mnist() -> Source:
    """Keras's mnist.npz, train and test parts together, images with a channel axis."""
    path = keras_file("datasets", "mnist.npz")
    redownload = "delete it and Keras downloads it again"
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a .npz archive; {redownload}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in MNIST_ARRAYS if name not in archive.files]
            if missing:
                raise DataError(f"{path}: no {', '.join(missing)} array; expected {', '.join(MNIST_ARRAYS)}")
            arrays = {name: archive[name] for name in MNIST_ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the file as .npz ({exc}); {redownload}") from None
    for part in ("train", "test"):
        if len(arrays[f"x_{part}"]) != len(arrays[f"y_{part}"]):
            raise DataError(f"{path}: x_{part} and y_{part} differ in length")
    features = np.concatenate([arrays["x_train"], arrays["x_test"]])
    return in_memory(features[..., np.newaxis], np.concatenate([arrays["y_train"], arrays["y_test"]]), encoded_images=True)


def read_keras_fashion_mnist() -> Source:
    """Keras's Fashion-MNIST IDX files, train and test parts together."""
    subdir = os.path.join("datasets", "fashion-mnist")
    paths = {filename: keras_file(subdir, filename) for filename in FASHION_MNIST_FILES}
    parts = [
        read_idx_pair(paths[f"{part}-images-idx3-ubyte.gz"], paths[f"{part}-labels-idx1-ubyte.gz"])
        for part in ("train", "t10k")
    ]
    features, labels = zip(*parts)
    return in_memory(np.concatenate(features), np.concatenate(labels), encoded_images=True)


CIFAR_LAYOUTS = {
    # source: (folder in the cache, batch files in order, label key, meta file, its names key)
    "keras:cifar10": (
        "cifar-10-batches-py", (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"), b"labels", "batches.meta",
        b"label_names",
    ),
    "keras:cifar100": ("cifar-100-python", ("train", "test"), b"fine_labels", "meta", b"fine_label_names"),
}
CIFAR_ORIGIN = "https://www.cs.toronto.edu/~kriz/"
CIFAR_ROW_BYTES = 3 * 32 * 32


def read_keras_cifar(source: str) -> Source:
    """CIFAR-10 or CIFAR-100 (fine labels) from the Keras cache: the python-pickle batches, training batches then the
    test batch, each a `data` array of rows of 3,072 bytes (the red, green and blue planes of 32 x 32 pixels) and
    their labels; the class names from the meta file. Read batch by batch."""
    folder_name, batch_names, label_key, meta_name, names_key = CIFAR_LAYOUTS[source]
    folder = cifar_folder(folder_name)
    paths = [folder / name for name in batch_names]
    labels = np.concatenate([np.asarray(cifar_batch(path, label_key)[1], dtype=np.int64) for path in paths])
    names: tuple[str, ...] = ()
    if (folder / meta_name).is_file():
        meta = unpickle(folder / meta_name)
        names = tuple(name.decode() if isinstance(name, bytes) else str(name) for name in meta.get(names_key, ()))

    def chunks() -> Iterator[np.ndarray]:
        for path in paths:
            yield cifar_batch(path, label_key)[0]

    return Source(labels, (32, 32, 3), np.dtype(np.uint8), chunks, class_names=names, encoded_images=True)


def cifar_folder(folder_name: str) -> Path:
    """The extracted CIFAR folder in the Keras cache; Keras downloads and extracts it when it is missing."""
    cache_dir = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    folder = Path(cache_dir, "datasets", folder_name)
    if folder.is_dir():
        return folder
    from tf_keras.utils import get_file

    archive = folder_name.replace("-batches-py", "-python") + ".tar.gz"
    try:
        return Path(get_file(folder_name, origin=CIFAR_ORIGIN + archive, untar=True, cache_dir=cache_dir))
    except Exception as exc:  # get_file raises a bare Exception for network errors
        raise DataError(
            f"cannot download {CIFAR_ORIGIN + archive} ({exc}); without internet access, put the extracted folder "
            f"at {folder}"
        ) from None


def unpickle(path: Path) -> dict[Any, Any]:
    """A CIFAR pickle (Python 2 pickles of numpy arrays: keys are bytes). Like Keras, this unpickles the cache's files,
    so the cache must be trusted."""
    try:
        with path.open("rb") as file:
            content = pickle.load(file, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; the CIFAR folder is incomplete: delete it and Keras downloads it again") from None
    except Exception as exc:  # unpickling raises anything for a damaged file
        raise DataError(f"{path}: cannot read the CIFAR batch ({type(exc).__name__}: {exc}); delete the folder and "
                        "Keras downloads it again") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: not a CIFAR batch (a pickled dict)")
    return content


def cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, list[int]]:
    """One batch's images (n, 32, 32, 3) and labels."""
    content = unpickle(path)
    if b"data" not in content or label_key not in content:
        raise DataError(f"{path}: not a CIFAR batch: expected the keys data and {label_key.decode()}")
    data, labels = np.asarray(content[b"data"]), list(content[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_ROW_BYTES or len(data) != len(labels):
        raise DataError(
            f"{path}: data must be uint8 rows of {CIFAR_ROW_BYTES} bytes (3 planes of 32 x 32), one per label; it is "
            f"{data.dtype} {list(data.shape)} for {len(labels)} labels"
        )
    return data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1), labels


KERAS_READERS: dict[str, Callable[[], Source]] = {
    "keras:mnist": read_keras_mnist,
    "keras:fashion_mnist": read_keras_fashion_mnist,
    "keras:cifar10": lambda: read_keras_cifar("keras:cifar10"),
    "keras:cifar100": lambda: read_keras_cifar("keras:cifar100"),
}
