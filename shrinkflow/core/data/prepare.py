"""Preparing a dataset once: read, check, split and scale it into one content-addressed file of splits.

Every problem with the data is raised as a DataError naming the file and what is expected, before any training
starts. TensorFlow is imported only for the keras: sources and text, because it is slow to load.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.config import DataConfig
from shrinkflow.core.data.checks import require_finite_after_scaling, require_samples_per_class
from shrinkflow.core.data.dataset import DatasetRef
from shrinkflow.core.data.readers import KERAS_READERS, read_source
from shrinkflow.core.data.transforms import (
    apply_image_shape, apply_sequence_shape, data_fingerprint, encode_labels, scale, split, standardize_targets, subsample,
    vectorize, windows,
)
from shrinkflow.core.files import atomic_path


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
    features, labels, columns = read_source(cfg)
    from_table = columns is not None
    fingerprint = data_fingerprint(features, labels)
    features = apply_image_shape(features, cfg, from_table)
    features = apply_sequence_shape(features, cfg)
    if cfg.series_column is not None:
        features, labels = windows(features, cfg)
    classification = cfg.task == "classification"
    if classification:
        label_field = f"column {cfg.label_column!r}" if from_table else "the labels"
        class_names, y = encode_labels(labels, cfg.source, label_field)
        require_samples_per_class(y, class_names, cfg.source)
    else:
        class_names, y = (), labels.astype(np.float64).reshape(len(labels), -1)
    if cfg.max_samples is not None and cfg.max_samples < len(y):
        features, y = subsample(features, y, cfg)
        if classification:
            require_samples_per_class(
                y, class_names, cfg.source, after=f" after subsampling to data.max_samples={cfg.max_samples}"
            )
    splits = split(features, y, cfg)
    vocabulary = None
    if cfg.text_column is not None:
        splits, vocabulary, preprocessing = vectorize(splits, cfg)
    else:
        splits, preprocessing = scale(splits, cfg.scaling)
        require_finite_after_scaling(splits, cfg, columns)
    target_scaling: tuple[tuple[str, Any], ...] = ()
    if not classification:
        splits, target_scaling = standardize_targets(splits)

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
        target_names=() if classification else target_names(cfg),
        target_scaling=target_scaling,
        vocabulary_size=0 if vocabulary is None else len(vocabulary),
        feature_names=columns or (),
    )


def target_names(cfg: DataConfig) -> tuple[str, ...]:
    if cfg.series_column is not None:
        return (cfg.series_column,)
    return cfg.targets() if Path(cfg.source).suffix.lower() in (".csv", ".parquet") else ("target",)


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
        return [source, *file_stamps(cache.rglob("*") if cache.is_dir() else [])]
    path = Path(source.removeprefix("idx:"))
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [source, *file_stamps(files)]


def file_stamps(paths: Any) -> list[tuple[str, int, int]]:
    stamps = []
    for path in paths:
        try:
            status = Path(path).stat()
        except OSError:
            continue
        if Path(path).is_file():
            stamps.append((str(Path(path).resolve()), status.st_size, status.st_mtime_ns))
    return sorted(stamps)
