"""Reading each kind of source into features and raw labels, checked as it is read: scikit-learn's bundled
datasets, the Keras download cache, MNIST-format IDX files, CSV and Parquet tables."""

from __future__ import annotations

import gzip
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from shrinkflow.core.config import DataConfig
from shrinkflow.core.data.checks import (
    require_columns, require_comma_separated, require_finite, require_float32_range, require_numeric,
    require_unique_names,
)
from shrinkflow.core.errors import DataError

ACCEPTED_SOURCES = (
    "sklearn:digits, sklearn:diabetes, keras:mnist, keras:fashion_mnist, idx:DIR (MNIST-format IDX files), "
    "or a path to a .csv or .parquet file"
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


def read_source(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Features and raw label values as the source holds them, and a table's feature column names (None
    for image sources)."""
    source = cfg.source
    if source == "sklearn:digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images[..., np.newaxis], digits.target, None
    if source == "sklearn:diabetes":
        from sklearn.datasets import load_diabetes

        diabetes = load_diabetes(scaled=False)
        if cfg.task != "regression":
            raise DataError(f"{source} is a regression dataset (disease progression); set data.task: regression")
        return diabetes.data, diabetes.target, tuple(diabetes.feature_names)
    if source in KERAS_READERS:
        features, labels = KERAS_READERS[source]()
        return features, labels, None
    if source.startswith("idx:"):
        features, labels = read_idx_dir(Path(source.removeprefix("idx:")))
        return features, labels, None
    if Path(source).suffix.lower() in (".csv", ".parquet"):
        return read_table(Path(source), cfg)
    raise DataError(f"data.source {source!r} is not supported; use {ACCEPTED_SOURCES}")


def read_table(path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Numeric feature columns (2-D float64), or the text column, or the series column; the label or target
    columns; and the feature columns' names."""
    table = read_table_file(path)
    if cfg.text_column is not None:
        return text_and_labels(table, path, cfg)
    if cfg.series_column is not None:
        series = require_columns(table, path, (cfg.series_column,), "data.series_column", "series")
        require_numeric(series, path, "data.series_column")
        require_finite(series, path)
        values = series[cfg.series_column].to_numpy(dtype=np.float64)
        return values, values, (cfg.series_column,)
    label_columns = cfg.targets() if cfg.task == "regression" else (cfg.label_column,)
    field = "data.target_columns" if cfg.target_columns else "data.label_column"
    labels = require_columns(table, path, label_columns, field, "target" if cfg.task == "regression" else "label")
    feature_table = table.drop(columns=list(label_columns))
    if feature_table.columns.empty:
        role = "target column(s)" if cfg.task == "regression" else "label column"
        raise DataError(f"{path}: no feature columns, only the {role} {', '.join(map(repr, label_columns))}")
    require_numeric(feature_table, path)
    if cfg.task == "regression":
        require_numeric(labels, path, f"{field} (a regression target)")
    require_finite(table, path)
    require_float32_range(feature_table, path)
    if cfg.task == "regression":
        return feature_table.to_numpy(dtype=np.float64), labels.to_numpy(dtype=np.float64), tuple(feature_table.columns)
    label = labels[cfg.label_column]
    label_values = label.to_numpy() if pd.api.types.is_numeric_dtype(label) else label.to_numpy(dtype=str)
    return feature_table.to_numpy(dtype=np.float64), label_values, tuple(feature_table.columns)


def text_and_labels(table: pd.DataFrame, path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The text column as strings and the label column, both without missing values."""
    assert cfg.text_column is not None
    require_columns(table, path, (cfg.text_column,), "data.text_column", "text")
    columns = require_columns(table, path, (cfg.text_column, cfg.label_column), "data.label_column", "label")
    text = columns[cfg.text_column]
    if pd.api.types.is_numeric_dtype(text) or pd.api.types.is_bool_dtype(text):
        raise DataError(
            f"{path}: data.text_column {cfg.text_column!r} holds numbers ({text.dtype}, e.g. {text.iloc[0]!r}), not text; "
            "name the column of raw text, or use a numeric model family for numeric columns"
        )
    require_finite(columns, path)
    label = columns[cfg.label_column]
    label_values = label.to_numpy() if pd.api.types.is_numeric_dtype(label) else label.to_numpy(dtype=str)
    return text.to_numpy(dtype=str), label_values, (cfg.text_column,)


def read_table_file(path: Path) -> pd.DataFrame:
    """The whole table, with unique string column names and rows."""
    kind = path.suffix.lower()[1:]
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a {kind} file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        # pandas renames a repeated column ("a", "a.1"), so a duplicated label column would become a feature.
        require_unique_names(column_names(path), path)
        table = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the table is empty (no columns and no rows)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the file as {kind} ({exc})") from None
    table.columns = [str(column) for column in table.columns]
    require_comma_separated(table, path)
    if table.empty:
        raise DataError(f"{path}: the table has no rows")
    return table


def column_names(path: Path) -> list[str]:
    """The column names as the file has them, repeats included."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return [str(name) for name in pq.read_schema(path).names]
    return [str(name) for name in pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist()]


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


def read_keras_mnist() -> tuple[np.ndarray, np.ndarray]:
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
    return features[..., np.newaxis], np.concatenate([arrays["y_train"], arrays["y_test"]])


def read_keras_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Keras's Fashion-MNIST IDX files, train and test parts together."""
    subdir = os.path.join("datasets", "fashion-mnist")
    paths = {filename: keras_file(subdir, filename) for filename in FASHION_MNIST_FILES}
    parts = [
        read_idx_pair(paths[f"{part}-images-idx3-ubyte.gz"], paths[f"{part}-labels-idx1-ubyte.gz"])
        for part in ("train", "t10k")
    ]
    features, labels = zip(*parts)
    return np.concatenate(features), np.concatenate(labels)

KERAS_READERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "keras:mnist": read_keras_mnist,
    "keras:fashion_mnist": read_keras_fashion_mnist,
}
