"""Load, validate, split and scale a dataset into one content-addressed .npz file.

Every problem with the data is raised as a DataError naming the file and what is expected, before
any training starts. TensorFlow is imported only for the keras: sources, because it is slow to load.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from shrinkflow.core.config import DataConfig, shorten
from shrinkflow.core.errors import DataError
from shrinkflow.core.files import atomic_path

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
MIN_SAMPLES_PER_CLASS = 3  # one each for train, validation and test
IDX_UNSIGNED_BYTE = 0x08
IDX_IMAGES_NAME = re.compile(r"(?P<prefix>.*)images(?P<middle>.*)idx3-ubyte(\.gz)?")


@dataclass(frozen=True)
class DatasetRef:
    """A prepared dataset: where its splits are stored and what a model and its clients need to know."""

    path: str
    fingerprint: str
    source: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    class_counts: tuple[tuple[str, int], ...]
    split_sizes: tuple[tuple[str, int], ...]
    is_image: bool
    preprocessing: tuple[tuple[str, Any], ...]
    built_by: str = ""  # the pipeline run that prepared it; another run reused it from the cache
    task: str = "classification"
    target_names: tuple[str, ...] = ()  # regression: the predicted columns
    # regression: targets are learned standardized; a prediction in original units is y * std + mean.
    target_scaling: tuple[tuple[str, Any], ...] = ()
    vocabulary_size: int = 0  # text: tokens in the fitted vocabulary (stored in the .npz, see load_vocabulary)

    def output_paths(self) -> tuple[str, ...]:
        return (self.path,)

    @property
    def num_outputs(self) -> int:
        """The model's outputs: one probability per class, or one value per regression target."""
        return len(self.target_names) if self.task == "regression" else self.num_classes

    def to_original_units(self, predictions: np.ndarray) -> np.ndarray:
        """Regression outputs (standardized, n x targets) in the targets' original units."""
        scaling = dict(self.target_scaling)
        return predictions.reshape(len(predictions), -1) * np.asarray(scaling["std"]) + np.asarray(scaling["mean"])


class Splits(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def prepare_dataset(cfg: DataConfig, out_dir: str | Path) -> DatasetRef:
    """Read and validate the data, split and scale it, and store the splits as out_dir/<key>.npz.

    The key hashes the raw data and the data config, so an unchanged dataset is never written twice.
    Within one process an unchanged source (same files, sizes and modification times) is not even
    read twice: `shrinkflow run` checks the data before the flow starts, and the flow's first stage
    then gets the same reference back.

    Raises:
        DataError: naming the file and what is wrong with it.
    """
    memo_key = (cfg.model_dump_json(), repr(source_stamp(cfg)), str(Path(out_dir).resolve()))
    known = _PREPARED.get(memo_key)
    if known is not None and Path(known.path).is_file():
        return known
    ref = _prepare(cfg, out_dir)
    _PREPARED[memo_key] = ref
    return ref


# DatasetRefs this process prepared, by data config, source stamp and output folder.
_PREPARED: dict[tuple[str, str, str], DatasetRef] = {}


def _prepare(cfg: DataConfig, out_dir: str | Path) -> DatasetRef:
    features, labels, columns = _read_source(cfg)
    from_table = columns is not None
    fingerprint = _fingerprint(features, labels)
    features = _apply_image_shape(features, cfg, from_table)
    features = _apply_sequence_shape(features, cfg)
    if cfg.series_column is not None:
        features, labels = _windows(features, cfg)
    classification = cfg.task == "classification"
    if classification:
        label_field = f"column {cfg.label_column!r}" if from_table else "the labels"
        class_names, y = _encode_labels(labels, cfg.source, label_field)
        _require_samples_per_class(y, class_names, cfg.source)
    else:
        class_names, y = (), labels.astype(np.float64).reshape(len(labels), -1)
    if cfg.max_samples is not None and cfg.max_samples < len(y):
        features, y = _subsample(features, y, cfg)
        if classification:
            _require_samples_per_class(
                y, class_names, cfg.source, after=f" after subsampling to data.max_samples={cfg.max_samples}"
            )
    splits = _split(features, y, cfg)
    vocabulary = None
    if cfg.text_column is not None:
        splits, vocabulary, preprocessing = _vectorize(splits, cfg)
    else:
        splits, preprocessing = _scale(splits, cfg.scaling)
        _require_finite_after_scaling(splits, cfg, columns)
    target_scaling: tuple[tuple[str, Any], ...] = ()
    if not classification:
        splits, target_scaling = _standardize_targets(splits)

    key = hashlib.sha256((fingerprint + cfg.model_dump_json()).encode()).hexdigest()[:16]
    path = Path(out_dir) / f"{key}.npz"
    if not path.exists():
        arrays: dict[str, np.ndarray] = splits._asdict() | ({} if vocabulary is None else {"vocabulary": vocabulary})
        with atomic_path(path) as partial:
            np.savez_compressed(partial, **arrays)  # type: ignore[arg-type]
    counts = np.bincount(y, minlength=len(class_names)) if classification else np.array([])
    return DatasetRef(
        path=str(path),
        fingerprint=fingerprint,
        source=cfg.source,
        input_shape=tuple(int(size) for size in splits.x_train.shape[1:]),
        num_classes=len(class_names),
        class_names=class_names,
        class_counts=tuple((name, int(count)) for name, count in zip(class_names, counts)),
        split_sizes=(
            ("train", len(splits.y_train)),
            ("validation", len(splits.y_val)),
            ("test", len(splits.y_test)),
        ),
        is_image=splits.x_train.ndim == 4,
        preprocessing=preprocessing,
        task=cfg.task,
        target_names=() if classification else _target_names(cfg),
        target_scaling=target_scaling,
        vocabulary_size=0 if vocabulary is None else len(vocabulary),
    )


def load_splits(ref: DatasetRef) -> Splits:
    """The stored splits: float32 features, and int64 class indices or float32 standardized regression targets."""
    label_type = np.int64 if ref.task == "classification" else np.float32
    try:
        with np.load(ref.path) as stored:
            return Splits(
                *(
                    stored[name].astype(np.float32 if name.startswith("x") else label_type, copy=False)
                    for name in Splits._fields
                )
            )
    except FileNotFoundError:
        raise DataError(f"{ref.path}: prepared dataset not found; prepare the dataset again") from None


def _target_names(cfg: DataConfig) -> tuple[str, ...]:
    if cfg.series_column is not None:
        return (cfg.series_column,)
    return cfg.targets() if Path(cfg.source).suffix.lower() in (".csv", ".parquet") else ("target",)


def load_vocabulary(ref: DatasetRef) -> list[str]:
    """text: the vocabulary fitted on the training split; token id i is its i-th entry (0 pads, 1 is unknown)."""
    with np.load(ref.path) as stored:
        return [str(token) for token in stored["vocabulary"]]


def source_stamp(cfg: DataConfig) -> list[Any]:
    """What identifies the raw source without reading it: its files' paths, sizes and modification
    times (or the version of the package that bundles it). A cache key for loading the data.
    """
    source = cfg.source
    if source.startswith("sklearn:"):
        import sklearn

        return [source, sklearn.__version__]
    if source in KERAS_READERS:
        cache = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"
        return [source, *_file_stamps(cache.rglob("*") if cache.is_dir() else [])]
    path = Path(source.removeprefix("idx:"))
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [source, *_file_stamps(files)]


def _file_stamps(paths: Any) -> list[tuple[str, int, int]]:
    stamps = []
    for path in paths:
        try:
            status = Path(path).stat()
        except OSError:
            continue
        if Path(path).is_file():
            stamps.append((str(Path(path).resolve()), status.st_size, status.st_mtime_ns))
    return sorted(stamps)


# --- reading -------------------------------------------------------------------------------------


def _read_source(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
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
        features, labels = _read_idx_dir(Path(source.removeprefix("idx:")))
        return features, labels, None
    if Path(source).suffix.lower() in (".csv", ".parquet"):
        return _read_table(Path(source), cfg)
    raise DataError(f"data.source {source!r} is not supported; use {ACCEPTED_SOURCES}")


def _read_table(path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Numeric feature columns (2-D float64), or the text column, or the series column; the label or target
    columns; and the feature columns' names."""
    table = _read_table_file(path)
    if cfg.text_column is not None:
        return _text_and_labels(table, path, cfg)
    if cfg.series_column is not None:
        series = _require_columns(table, path, (cfg.series_column,), "data.series_column", "series")
        _require_numeric(series, path, "data.series_column")
        _require_finite(series, path)
        values = series[cfg.series_column].to_numpy(dtype=np.float64)
        return values, values, (cfg.series_column,)
    label_columns = cfg.targets() if cfg.task == "regression" else (cfg.label_column,)
    field = "data.target_columns" if cfg.target_columns else "data.label_column"
    labels = _require_columns(table, path, label_columns, field, "target" if cfg.task == "regression" else "label")
    feature_table = table.drop(columns=list(label_columns))
    if feature_table.columns.empty:
        role = "target column(s)" if cfg.task == "regression" else "label column"
        raise DataError(f"{path}: no feature columns, only the {role} {', '.join(map(repr, label_columns))}")
    _require_numeric(feature_table, path)
    if cfg.task == "regression":
        _require_numeric(labels, path, f"{field} (a regression target)")
    _require_finite(table, path)
    _require_float32_range(feature_table, path)
    if cfg.task == "regression":
        return feature_table.to_numpy(dtype=np.float64), labels.to_numpy(dtype=np.float64), tuple(feature_table.columns)
    label = labels[cfg.label_column]
    label_values = label.to_numpy() if pd.api.types.is_numeric_dtype(label) else label.to_numpy(dtype=str)
    return feature_table.to_numpy(dtype=np.float64), label_values, tuple(feature_table.columns)


def _require_columns(table: pd.DataFrame, path: Path, names: tuple[str, ...], field: str, role: str) -> pd.DataFrame:
    """The named columns, or a DataError naming the missing ones, the columns there are and the setting."""
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise DataError(
            f"{path}: no {role} column {', '.join(map(repr, missing))}; available columns: {', '.join(table.columns)} "
            f"(set {field})"
        )
    return table[list(names)]


def _text_and_labels(table: pd.DataFrame, path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The text column as strings and the label column, both without missing values."""
    assert cfg.text_column is not None
    _require_columns(table, path, (cfg.text_column,), "data.text_column", "text")
    columns = _require_columns(table, path, (cfg.text_column, cfg.label_column), "data.label_column", "label")
    text = columns[cfg.text_column]
    if pd.api.types.is_numeric_dtype(text) or pd.api.types.is_bool_dtype(text):
        raise DataError(
            f"{path}: data.text_column {cfg.text_column!r} holds numbers ({text.dtype}, e.g. {text.iloc[0]!r}), not text; "
            "name the column of raw text, or use a numeric model family for numeric columns"
        )
    _require_finite(columns, path)
    label = columns[cfg.label_column]
    label_values = label.to_numpy() if pd.api.types.is_numeric_dtype(label) else label.to_numpy(dtype=str)
    return text.to_numpy(dtype=str), label_values, (cfg.text_column,)


def _read_table_file(path: Path) -> pd.DataFrame:
    """The whole table, with unique string column names and rows."""
    kind = path.suffix.lower()[1:]
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a {kind} file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        # pandas renames a repeated column ("a", "a.1"), so a duplicated label column would become a feature.
        _require_unique_names(_column_names(path), path)
        table = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the table is empty (no columns and no rows)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the file as {kind} ({exc})") from None
    table.columns = [str(column) for column in table.columns]
    _require_comma_separated(table, path)
    if table.empty:
        raise DataError(f"{path}: the table has no rows")
    return table


def _column_names(path: Path) -> list[str]:
    """The column names as the file has them, repeats included."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return [str(name) for name in pq.read_schema(path).names]
    return [str(name) for name in pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist()]


def _require_unique_names(names: list[str], path: Path) -> None:
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    if repeated:
        listed = ", ".join(f"{name!r} ({names.count(name)} times)" for name in repeated)
        raise DataError(
            f"{path}: column names must be unique, but {listed} appear more than once; rename or drop the repeats "
            "(a repeated label column would leak the label into the features)"
        )


def _require_comma_separated(table: pd.DataFrame, path: Path) -> None:
    """A CSV read as a single column whose name holds another separator was written with that separator."""
    if len(table.columns) != 1:
        return
    header = table.columns[0]
    for separator, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if separator in header:
            raise DataError(
                f"{path}: the header {shorten(header)} looks {name}-separated, but shrinkflow reads comma-separated "
                f"CSV; convert it, e.g. pandas.read_csv(path, sep={separator!r}).to_csv(new_path, index=False)"
            )


def _require_float32_range(feature_table: pd.DataFrame, path: Path) -> None:
    """Features fit in float32, the precision the model computes in (1e308 would become infinity)."""
    limit = float(np.finfo(np.float32).max)
    too_large = (feature_table.abs() > limit).sum()
    bad = too_large[too_large > 0]
    if not bad.empty:
        columns = ", ".join(
            f"{name!r} ({count} row{'s' if count > 1 else ''}, e.g. {feature_table[name][feature_table[name].abs() > limit].iloc[0]:g})"
            for name, count in bad.items()
        )
        raise DataError(
            f"{path}: values beyond float32's range (about ±3.4e38) in column{'s' if len(bad) > 1 else ''} {columns}; "
            "the model computes in float32: rescale those columns or drop those rows"
        )


def _require_numeric(feature_table: pd.DataFrame, path: Path, field: str = "") -> None:
    problems = []
    for name, column in feature_table.items():
        if pd.api.types.is_numeric_dtype(column):
            continue
        unconvertible = column.notna() & pd.to_numeric(column, errors="coerce").isna()
        example = (
            f"first bad value {column[unconvertible].iloc[0]!r}" if unconvertible.any() else f"dtype {column.dtype}"
        )
        problems.append(f"column {name!r} is not numeric ({example})")
    if problems:
        if field:
            raise DataError(f"{path}: {field}: {', '.join(problems)}; it must hold numbers")
        raise DataError(f"{path}: {', '.join(problems)}; features must be numbers, or drop the column")


def _require_finite(table: pd.DataFrame, path: Path) -> None:
    """No missing or infinite values in any column, labels included."""
    missing = table.isna().sum()
    infinite = table.select_dtypes("number").isin([np.inf, -np.inf]).sum()
    for counts, kind, fix in (
        (missing, "missing (NaN) values", "fill or drop those rows"),
        (infinite, "infinite values", "replace or drop those rows"),
    ):
        bad = counts[counts > 0]
        if not bad.empty:
            columns = ", ".join(f"{name!r} ({count} row{'s' if count > 1 else ''})" for name, count in bad.items())
            raise DataError(f"{path}: {kind} in column{'s' if len(bad) > 1 else ''} {columns}; {fix}")


def _read_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray]:
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
        pairs.append(_read_idx_pair(images_path, labels_path))
    if not pairs:
        raise DataError(f"idx:{directory}: no *images*idx3-ubyte[.gz] files in the directory")
    features, labels = zip(*pairs)
    return np.concatenate(features), np.concatenate(labels)


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images with a channel axis (N, H, W, 1) and their labels, checked to be equally many."""
    images = _read_idx(images_path, ndim=3)
    labels = _read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels, but {images_path.name} has {len(images)} images")
    return images[..., np.newaxis], labels


def _read_idx(path: Path, ndim: int) -> np.ndarray:
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


def _keras_file(subdir: str, filename: str) -> Path:
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


def _read_keras_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Keras's mnist.npz, train and test parts together, images with a channel axis."""
    path = _keras_file("datasets", "mnist.npz")
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


def _read_keras_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Keras's Fashion-MNIST IDX files, train and test parts together."""
    subdir = os.path.join("datasets", "fashion-mnist")
    paths = {filename: _keras_file(subdir, filename) for filename in FASHION_MNIST_FILES}
    parts = [
        _read_idx_pair(paths[f"{part}-images-idx3-ubyte.gz"], paths[f"{part}-labels-idx1-ubyte.gz"])
        for part in ("train", "t10k")
    ]
    features, labels = zip(*parts)
    return np.concatenate(features), np.concatenate(labels)


KERAS_READERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "keras:mnist": _read_keras_mnist,
    "keras:fashion_mnist": _read_keras_fashion_mnist,
}


# --- validating ----------------------------------------------------------------------------------


def _fingerprint(features: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the raw features and labels (values, dtypes and shapes), before any config applies."""
    digest = hashlib.sha256()
    for array in (features, labels):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        if array.dtype.kind in "UO":  # text: the characters, not the array's memory
            digest.update("\x00".join(map(str, array.ravel())).encode())
        else:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _apply_sequence_shape(features: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Each sample's values read as [timesteps, features] (cfg.sequence_shape), e.g. an image's rows."""
    if cfg.sequence_shape is None:
        return features
    values = int(np.prod(features.shape[1:]))
    if int(np.prod(cfg.sequence_shape)) != values:
        raise DataError(
            f"{cfg.source}: data.sequence_shape {list(cfg.sequence_shape)} holds {int(np.prod(cfg.sequence_shape))} values, "
            f"but each sample has {values} (shape {list(features.shape[1:])}); give timesteps x features = {values}"
        )
    return features.reshape(len(features), *cfg.sequence_shape)


def _windows(series: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Samples of a time series: each `window` consecutive values (timesteps of one feature), and the value
    `horizon` steps after the window's end as the target."""
    assert cfg.window is not None
    count = len(series) - cfg.window - cfg.horizon + 1
    if count < 1:
        raise DataError(
            f"{cfg.source}: data.window {cfg.window} plus data.horizon {cfg.horizon} is longer than the series "
            f"({len(series)} values in column {cfg.series_column!r}); use a shorter window"
        )
    starts = np.arange(count)
    features = series[starts[:, None] + np.arange(cfg.window)[None, :]][..., np.newaxis]
    return features, series[starts + cfg.window + cfg.horizon - 1]


def _apply_image_shape(features: np.ndarray, cfg: DataConfig, from_table: bool) -> np.ndarray:
    """A table's columns reshaped to cfg.image_shape (a 2-D shape gets a channel axis)."""
    if cfg.image_shape is None:
        return features
    image_shape = cfg.image_shape + (1,) if len(cfg.image_shape) == 2 else cfg.image_shape
    if not from_table:
        if image_shape != features.shape[1:]:
            raise DataError(
                f"data.image_shape {list(cfg.image_shape)} applies to CSV/Parquet tables only; "
                f"{cfg.source} images already have shape {list(features.shape[1:])}"
            )
        return features
    if int(np.prod(image_shape)) != features.shape[1]:
        raise DataError(
            f"{cfg.source}: data.image_shape {list(cfg.image_shape)} holds {int(np.prod(image_shape))} values, "
            f"but the table has {features.shape[1]} feature columns"
        )
    return features.reshape(len(features), *image_shape)


def _encode_labels(labels: np.ndarray, source: str, label_field: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names (sorted unique label values) and each sample's class index."""
    classes, indices = np.unique(labels, return_inverse=True)
    class_names = tuple(str(value) for value in classes)
    if len(class_names) < 2:
        raise DataError(
            f"{source}: {label_field} has {len(class_names)} class(es) {list(class_names)}; "
            "classification needs at least 2"
        )
    return class_names, indices.reshape(-1).astype(np.int64)


def _require_samples_per_class(y: np.ndarray, class_names: tuple[str, ...], source: str, after: str = "") -> None:
    counts = np.bincount(y, minlength=len(class_names))
    smallest = int(counts.argmin())
    if counts[smallest] < MIN_SAMPLES_PER_CLASS:
        raise DataError(
            f"{source}: class {class_names[smallest]!r} has only {counts[smallest]} sample(s){after}; every class "
            f"needs at least {MIN_SAMPLES_PER_CLASS} (one each for train, validation and test)"
        )


# --- splitting and scaling -----------------------------------------------------------------------


def _subsample(features: np.ndarray, y: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """A subsample of cfg.max_samples: stratified for classification, the first ones of a series (time order)."""
    if cfg.series_column is not None:
        return features[: cfg.max_samples], y[: cfg.max_samples]
    try:
        keep, _ = train_test_split(
            np.arange(len(y)), train_size=cfg.max_samples, random_state=cfg.seed,
            stratify=y if cfg.task == "classification" else None,
        )
    except ValueError as exc:
        raise DataError(
            f"{cfg.source}: cannot take a stratified subsample of data.max_samples={cfg.max_samples} "
            f"from {len(y)} samples ({exc})"
        ) from None
    keep = np.sort(keep)
    return features[keep], y[keep]


def _split(features: np.ndarray, y: np.ndarray, cfg: DataConfig) -> Splits:
    """A train/validation/test split, test and validation being shares of all samples: stratified for
    classification; in time order for a series (the model is tested on the latest windows, as it will be used)."""
    classification = cfg.task == "classification"
    in_time_order = cfg.series_column is not None
    try:
        rest, test = train_test_split(
            np.arange(len(y)), test_size=cfg.test_fraction, stratify=y if classification else None,
            random_state=cfg.seed, shuffle=not in_time_order,
        )
        train, val = train_test_split(
            rest,
            test_size=cfg.validation_fraction / (1 - cfg.test_fraction),
            stratify=y[rest] if classification else None,
            random_state=cfg.seed, shuffle=not in_time_order,
        )
    except ValueError as exc:
        raise DataError(
            f"{cfg.source}: cannot split {len(y)} samples of {np.unique(y).size} classes into train, validation "
            f"and test with one sample of every class in each ({exc}); use more data or larger "
            "data.validation_fraction / data.test_fraction"
        ) from None
    if in_time_order and cfg.window is not None:
        # Windows overlap: drop those at the start of validation and test whose values or targets a training
        # (or validation) window already saw, so nothing is tested on what it learned from.
        gap = cfg.window + cfg.horizon - 1
        val, test = val[gap:], test[gap:]
        if not len(val) or not len(test):
            raise DataError(
                f"{cfg.source}: too few windows to split in time order with a gap of data.window + data.horizon - 1 "
                f"= {gap} between train, validation and test; use a longer series or a shorter window"
            )
    return Splits(features[train], y[train], features[val], y[val], features[test], y[test])


def _scale(splits: Splits, scaling: str) -> tuple[Splits, tuple[tuple[str, Any], ...]]:
    """float32 features scaled with statistics of the training split only, and how to repeat it.

    A client scales raw input as (x - offset) * scale; "standard" has one offset and scale per
    (flattened) feature.
    """
    # Statistics and scaling in float64, then float32: a value range beyond float32's would overflow.
    x_train, x_val, x_test = (x.astype(np.float64) for x in (splits.x_train, splits.x_val, splits.x_test))
    if scaling == "minmax":
        low, high = x_train.min(), x_train.max()
        value_range = high - low if high > low else 1.0
        x_train, x_val, x_test = ((x - low) / value_range for x in (x_train, x_val, x_test))
        preprocessing: tuple[tuple[str, Any], ...] = (
            ("kind", "minmax"),
            ("offset", float(low)),
            ("scale", 1 / float(value_range)),
        )
    elif scaling == "standard":
        scaler = StandardScaler().fit(x_train.reshape(len(x_train), -1))
        x_train, x_val, x_test = (scaler.transform(x.reshape(len(x), -1)).reshape(x.shape) for x in (x_train, x_val, x_test))
        preprocessing = (
            ("kind", "standard"),
            ("offset", tuple(float(mean) for mean in scaler.mean_)),
            ("scale", tuple(1 / float(std) for std in scaler.scale_)),
        )
    else:
        preprocessing = (("kind", "none"),)
    with np.errstate(over="ignore"):  # what overflows becomes inf, which the caller reports
        train32, val32, test32 = (x.astype(np.float32) for x in (x_train, x_val, x_test))
    return Splits(train32, splits.y_train, val32, splits.y_val, test32, splits.y_test), preprocessing


def _vectorize(splits: Splits, cfg: DataConfig) -> tuple[Splits, np.ndarray, tuple[tuple[str, Any], ...]]:
    """Texts as token ids: a vocabulary fitted on the training split (Keras TextVectorization: lower case,
    punctuation stripped, split on whitespace), each text cut or padded to cfg.sequence_length tokens.

    The vectorizer runs here, outside the model, so every model file (Keras, TFLite, ONNX) takes token ids;
    the export's SavedModel puts it back in front, so a served model receives raw text.
    """
    from tf_keras.layers import TextVectorization

    vectorizer = TextVectorization(max_tokens=cfg.vocabulary_size, output_sequence_length=cfg.sequence_length)
    vectorizer.adapt(splits.x_train)
    vocabulary = np.array(vectorizer.get_vocabulary(), dtype=str)
    x_train, x_val, x_test = (vectorizer(x).numpy().astype(np.int32) for x in (splits.x_train, splits.x_val, splits.x_test))
    preprocessing: tuple[tuple[str, Any], ...] = (
        ("kind", "text"), ("standardize", "lower_and_strip_punctuation"), ("split", "whitespace"),
        ("sequence_length", cfg.sequence_length), ("vocabulary_size", len(vocabulary)),
    )
    return splits._replace(x_train=x_train, x_val=x_val, x_test=x_test), vocabulary, preprocessing


def _standardize_targets(splits: Splits) -> tuple[Splits, tuple[tuple[str, Any], ...]]:
    """Regression targets standardized with the training split's mean and standard deviation (what the model
    learns), and the scaling that brings predictions back to original units."""
    scaler = StandardScaler().fit(splits.y_train)
    y_train, y_val, y_test = (scaler.transform(y).astype(np.float32) for y in (splits.y_train, splits.y_val, splits.y_test))
    scaling = (("mean", tuple(float(m) for m in scaler.mean_)), ("std", tuple(float(s) for s in scaler.scale_)))
    return splits._replace(y_train=y_train, y_val=y_val, y_test=y_test), scaling


def _require_finite_after_scaling(splits: Splits, cfg: DataConfig, columns: tuple[str, ...] | None) -> None:
    """Scaled features are finite: a range or variance too large for float32 would turn them into inf or NaN."""
    x = np.concatenate([part.reshape(len(part), -1) for part in (splits.x_train, splits.x_val, splits.x_test)])
    bad = np.flatnonzero(~np.isfinite(x).all(axis=0))
    if bad.size:
        names = [repr(columns[i]) if columns else f"feature {i}" for i in bad[:5]]
        raise DataError(
            f"{cfg.source}: scaling {cfg.scaling!r} gives non-finite (inf or NaN) values in {', '.join(names)}"
            f"{' and more' if bad.size > 5 else ''}: the values span more than float32 can hold; rescale those "
            "columns, drop them, or use data.scaling: none"
        )
