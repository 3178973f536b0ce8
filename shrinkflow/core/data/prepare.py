"""Preparing a dataset once: read and check the source, split it and write it as the shards of a content-addressed
folder (store.py), in two passes over the source: its labels (enough to subsample, split and count the classes),
then its features chunk by chunk, each chunk checked, fingerprinted, counted into the scaling statistics and
appended to its shards. Memory holds the labels and one chunk, whatever the number of rows.

Every problem with the data is raised as a DataError naming the file and what is expected, before any training
starts. TensorFlow is imported only for the sources that need it (keras:, images:, text), because it is slow to load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.config import IMAGE_FOLDER_PREFIX, DataConfig
from shrinkflow.core.data.checks import require_finite_after_scaling, require_samples_per_class, require_varying_targets
from shrinkflow.core.data.dataset import DatasetRef
from shrinkflow.core.data.readers import KERAS_READERS, read_source
from shrinkflow.core.data.store import INDEX_NAME, SPLITS, VOCABULARY_NAME, ShardWriter
from shrinkflow.core.data.transforms import (
    LEFT_OUT, Fingerprint, FeatureStats, encode_labels, fit_vocabulary, reshaped, split_codes, standardized_targets,
    subsample,
)


def prepare_dataset(cfg: DataConfig, out_dir: str | Path) -> DatasetRef:
    """Read and validate the data, split it, and store it as the folder out_dir/<key> of shards.

    The key hashes the raw data and the data config, so an unchanged dataset is never written twice.
    Within one process an unchanged source (same files, sizes and modification times) is not even
    read twice: `shrinkflow run` checks the data before the flow starts, and the flow's first stage
    then gets the same reference back.

    Raises:
        DataError: naming the file and what is wrong with it.
    """
    memo_key = (cfg.model_dump_json(), repr(source_stamp(cfg)), str(Path(out_dir).resolve()))
    known = _PREPARED.get(memo_key)
    if known is not None and Path(known.path, INDEX_NAME).is_file():
        return known
    ref = _prepare(cfg, Path(out_dir))
    _PREPARED[memo_key] = ref
    return ref


# DatasetRefs this process prepared, by data config, source stamp and output folder.

_PREPARED: dict[tuple[str, str, str], DatasetRef] = {}


def _prepare(cfg: DataConfig, out_dir: Path) -> DatasetRef:
    source = reshaped(read_source(cfg), cfg)
    classification = cfg.task == "classification"
    if classification:
        class_names, y = encode_labels(source.labels, source, cfg)
        require_samples_per_class(y, class_names, cfg.source)
    else:
        class_names, y = (), source.labels.astype(np.float64).reshape(len(source.labels), -1)
    rows = np.arange(len(y))
    if cfg.max_samples is not None and cfg.max_samples < len(y):
        rows = subsample(y, cfg)
        if classification:
            require_samples_per_class(
                y[rows], class_names, cfg.source, after=f" after subsampling to data.max_samples={cfg.max_samples}"
            )
    codes = split_codes(y[rows], rows, len(y), cfg)
    target_scaling: tuple[tuple[str, Any], ...] = ()
    stored_targets = y
    if not classification:
        stored_targets, target_scaling = standardized_targets(y, codes)
        scaling = dict(target_scaling)
        require_varying_targets(np.asarray(scaling["std"]), np.asarray(scaling["mean"]), target_names(cfg), cfg.source)
    vectorizer, vocabulary, preprocessing = fit_vocabulary(source, codes, cfg) if cfg.text_column else (None, None, ())
    sample_shape = (cfg.sequence_length,) if vectorizer is not None else source.sample_shape
    stored_dtype = np.dtype(np.int32) if vectorizer is not None else source.dtype

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    try:
        writer = ShardWriter(
            staging, codes, {split: stored_targets[codes == code] for code, split in enumerate(SPLITS)},
            sample_shape, stored_dtype,
        )
        fingerprint = Fingerprint(source)
        stats = FeatureStats(int(np.prod(sample_shape)), cfg.scaling)
        start = 0
        for chunk in source.chunks():
            fingerprint.add(chunk)
            chunk_codes = codes[start : start + len(chunk)]
            start += len(chunk)
            if vectorizer is not None:
                writer.append(vectorizer(chunk.astype(str)).numpy().astype(np.int32))
                continue
            stats.add(chunk.reshape(len(chunk), -1), chunk_codes)
            with np.errstate(over="ignore"):  # values beyond float32 are reported below, and nothing is kept
                writer.append(chunk)
        source.checked()
        if vectorizer is None:
            preprocessing = stats.scaling()
            if cfg.scaling != "none":
                require_finite_after_scaling(stats.low, stats.high, dict(preprocessing), cfg, source.columns)
        data_fingerprint = fingerprint.hexdigest(source.labels)
        key = hashlib.sha256((data_fingerprint + cfg.model_dump_json()).encode()).hexdigest()[:16]
        writer.finish({"source": cfg.source, "fingerprint": data_fingerprint})
        if vocabulary is not None:
            (staging / VOCABULARY_NAME).write_text(json.dumps(vocabulary))
        path = out_dir / key
        try:
            os.rename(staging, path)
        except OSError:  # prepared before (or just now, by a concurrent run): the same content
            if not (path / INDEX_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kept = y[codes != LEFT_OUT]
    counts = np.bincount(kept, minlength=len(class_names)) if classification else np.array([])
    return DatasetRef(
        path=str(path),
        fingerprint=data_fingerprint,
        source=cfg.source,
        input_shape=tuple(int(size) for size in sample_shape),
        num_classes=len(class_names),
        class_names=class_names,
        class_counts=tuple((name, int(count)) for name, count in zip(class_names, counts)),
        split_sizes=tuple((split, int(np.count_nonzero(codes == code))) for code, split in enumerate(SPLITS)),
        is_image=len(sample_shape) == 3,
        preprocessing=preprocessing,
        task=cfg.task,
        target_names=() if classification else target_names(cfg),
        target_scaling=target_scaling,
        vocabulary_size=0 if vocabulary is None else len(vocabulary),
        feature_names=source.columns or (),
        encoded_images=source.encoded_images and cfg.image_shape is None and cfg.sequence_shape is None,
    )


def target_names(cfg: DataConfig) -> tuple[str, ...]:
    if cfg.series_column is not None:
        return (cfg.series_column,)
    return ("target",) if cfg.source.startswith("sklearn:") else cfg.targets()


def source_stamp(cfg: DataConfig) -> list[Any]:
    """What identifies the raw source without reading it: its files' paths, sizes and modification
    times (or the version of the package that bundles it). A cache key for loading the data.
    """
    source = cfg.source
    if source.startswith("sklearn:"):
        import sklearn

        return [source, sklearn.__version__]
    if source in KERAS_READERS:
        return [source, *file_stamps(Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets")]
    return [source, *file_stamps(Path(source.split(":", 1)[1] if source.startswith(("idx:", IMAGE_FOLDER_PREFIX)) else source))]


def file_stamps(path: Path) -> list[tuple[str, int, int]]:
    """(path, size, modification time) of the file, or of every file below the folder, sorted. With os.walk and
    os.stat rather than pathlib: an image folder has tens of thousands of files."""
    root = os.path.realpath(path)
    if not os.path.isdir(root):
        names = [root] if os.path.isfile(root) else []
    else:
        names = [os.path.join(folder, name) for folder, _, files in os.walk(root) for name in files]
    stamps = []
    for name in names:
        try:
            status = os.stat(name)
        except OSError:
            continue
        stamps.append((name, status.st_size, status.st_mtime_ns))
    return sorted(stamps)
