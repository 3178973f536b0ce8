"""Shaping, labelling, subsampling, splitting and scaling: on the labels (one small value per sample) at once, on
the features chunk by chunk (statistics accumulated in passes, never over the whole array)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from shrinkflow.core.config import DataConfig
from shrinkflow.core.data.source import CHUNK_ROWS, Source
from shrinkflow.core.errors import DataError

TRAIN, VALIDATION, TEST, LEFT_OUT = 0, 1, 2, -1


class Fingerprint:
    """sha256 of the raw features and labels (values, dtypes and shapes), before any config applies, fed chunk by
    chunk: the same data gives the same fingerprint however it is chunked (or whichever file format holds it)."""

    def __init__(self, source: Source) -> None:
        self.features = hashlib.sha256(f"{source.dtype.str}{source.sample_shape}".encode())

    def add(self, chunk: np.ndarray) -> None:
        if chunk.dtype.kind in "UO":  # text: the characters, not the array's memory
            self.features.update("".join(f"{value}\x00" for value in chunk.ravel()).encode())
        else:
            self.features.update(np.ascontiguousarray(chunk).data)  # the array's buffer, not a copy of it

    def hexdigest(self, labels: np.ndarray) -> str:
        digest = hashlib.sha256(self.features.digest())
        digest.update(f"{labels.dtype.str}{labels.shape}".encode())
        if labels.dtype.kind in "UO":
            digest.update("\x00".join(map(str, labels.ravel())).encode())
        else:
            digest.update(np.ascontiguousarray(labels).data)
        return digest.hexdigest()


def reshaped(source: Source, cfg: DataConfig) -> Source:
    """The source with each sample read as cfg.image_shape (a table's pixel columns; a 2-D shape gets a channel
    axis) or cfg.sequence_shape ([timesteps, features], e.g. an image's rows)."""
    shape = source.sample_shape
    values = int(np.prod(shape))
    if cfg.image_shape is not None:
        image_shape = cfg.image_shape + (1,) if len(cfg.image_shape) == 2 else cfg.image_shape
        if source.columns is None:
            if image_shape != shape:
                raise DataError(
                    f"data.image_shape {list(cfg.image_shape)} applies to CSV/Parquet tables only; "
                    f"{cfg.source} images already have shape {list(shape)}"
                )
            return source
        if int(np.prod(image_shape)) != values:
            raise DataError(
                f"{cfg.source}: data.image_shape {list(cfg.image_shape)} holds {int(np.prod(image_shape))} values, "
                f"but the table has {values} feature columns"
            )
        shape = image_shape
    if cfg.sequence_shape is not None:
        if int(np.prod(cfg.sequence_shape)) != values:
            raise DataError(
                f"{cfg.source}: data.sequence_shape {list(cfg.sequence_shape)} holds {int(np.prod(cfg.sequence_shape))} "
                f"values, but each sample has {values} (shape {list(shape)}); give timesteps x features = {values}"
            )
        shape = tuple(cfg.sequence_shape)
    if shape == source.sample_shape:
        return source
    chunks = source.chunks

    def reshaped_chunks() -> Iterator[np.ndarray]:
        for chunk in chunks():
            yield chunk.reshape(len(chunk), *shape)

    return dataclasses.replace(source, sample_shape=shape, chunks=reshaped_chunks)


def windowed(series: np.ndarray, cfg: DataConfig) -> Source:
    """Samples of a time series: each `window` consecutive values (timesteps of one feature), and the value
    `horizon` steps after the window's end as the target. The windows are cut chunk by chunk."""
    assert cfg.window is not None
    window = cfg.window
    count = len(series) - window - cfg.horizon + 1
    if count < 1:
        raise DataError(
            f"{cfg.source}: data.window {window} plus data.horizon {cfg.horizon} is longer than the series "
            f"({len(series)} values in column {cfg.series_column!r}); use a shorter window"
        )

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, count, CHUNK_ROWS):
            starts = np.arange(start, min(count, start + CHUNK_ROWS))
            yield series[starts[:, None] + np.arange(window)[None, :]][..., np.newaxis]

    targets = series[np.arange(count) + window + cfg.horizon - 1]
    return Source(targets, (window, 1), np.dtype(np.float32), chunks, columns=(str(cfg.series_column),))


def encode_labels(labels: np.ndarray, source: Source, cfg: DataConfig) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names (sorted unique label values, or the source's names of them) and each sample's class index."""
    classes, indices = np.unique(labels, return_inverse=True)
    if source.class_names:
        class_names = tuple(source.class_names[int(value)] for value in classes)
    else:
        class_names = tuple(str(value) for value in classes)
    if len(class_names) < 2:
        raise DataError(
            f"{cfg.source}: {source.label_field} has {len(class_names)} class(es) {list(class_names)}; "
            "classification needs at least 2"
        )
    return class_names, indices.reshape(-1).astype(np.int64)


def subsample(y: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """The rows of a subsample of cfg.max_samples, in source order: stratified for classification, the first
    ones of a series (time order)."""
    assert cfg.max_samples is not None
    if cfg.series_column is not None:
        return np.arange(cfg.max_samples)
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
    return np.sort(keep)


def split_codes(y: np.ndarray, rows: np.ndarray, total: int, cfg: DataConfig) -> np.ndarray:
    """Each source row's split (TRAIN, VALIDATION, TEST, or LEFT_OUT), for the rows kept (`rows`, with labels `y`):
    test and validation being shares of them, stratified for classification; in time order for a series (the
    model is tested on the latest windows, as it will be used)."""
    classification = cfg.task == "classification"
    in_time_order = cfg.series_column is not None
    positions = np.arange(len(y))
    try:
        rest, test = train_test_split(
            positions, test_size=cfg.test_fraction, stratify=y if classification else None,
            random_state=cfg.seed, shuffle=not in_time_order,
        )
        train, val = train_test_split(
            rest,
            test_size=cfg.validation_fraction / (1 - cfg.test_fraction),
            stratify=y[rest] if classification else None,
            random_state=cfg.seed, shuffle=not in_time_order,
        )
    except ValueError as exc:
        what = f"{len(y)} samples of {np.unique(y).size} classes" if classification else f"{len(y)} samples"
        needs = "one sample of every class in each" if classification else "at least one sample in each"
        raise DataError(
            f"{cfg.source}: cannot split {what} into train, validation and test with {needs} ({exc}); use more data "
            "or larger data.validation_fraction / data.test_fraction"
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
    codes = np.full(total, LEFT_OUT, dtype=np.int8)
    for code, chosen in ((TRAIN, train), (VALIDATION, val), (TEST, test)):
        codes[rows[chosen]] = code
    return codes


class FeatureStats:
    """What scaling needs, accumulated chunk by chunk: of every row kept, each feature's smallest and largest value (to
    check that scaled features stay finite); of the training rows, for "minmax" the smallest and largest value, for
    "standard" each feature's count, mean and sum of squared deviations (merged as Chan et al.'s parallel algorithm
    does, stable in float64). Nothing for "none"."""

    def __init__(self, features: int, kind: str) -> None:
        self.kind = kind
        self.count = 0
        self.mean = np.zeros(features)
        self.m2 = np.zeros(features)
        self.train_low, self.train_high = np.inf, -np.inf
        self.low, self.high = np.full(features, np.inf), np.full(features, -np.inf)

    def add(self, chunk: np.ndarray, codes: np.ndarray) -> None:
        """A chunk of rows (flattened features) and their split codes."""
        if self.kind == "none":
            return
        kept = chunk if (codes != LEFT_OUT).all() else chunk[codes != LEFT_OUT]
        if not len(kept):
            return
        self.low = np.minimum(self.low, kept.min(axis=0))
        self.high = np.maximum(self.high, kept.max(axis=0))
        train = chunk[codes == TRAIN]
        if not len(train):
            return
        if self.kind == "minmax":
            self.train_low = min(self.train_low, float(train.min()))
            self.train_high = max(self.train_high, float(train.max()))
            return
        count, total = len(train), self.count + len(train)
        with np.errstate(over="ignore", invalid="ignore"):  # values too large for that are refused after the pass
            mean = train.mean(axis=0, dtype=np.float64)
            m2 = np.square(train - mean).sum(axis=0)
            delta = mean - self.mean
            self.mean = self.mean + delta * (count / total)
            self.m2 = self.m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total

    def scaling(self) -> tuple[tuple[str, Any], ...]:
        """How to scale raw features, x -> (x - offset) * scale, fitted on the training split: "minmax" one range,
        "standard" per feature (a constant feature keeps a scale of 1, as scikit-learn's StandardScaler does)."""
        if self.kind == "minmax":
            low, high = float(self.train_low), float(self.train_high)
            value_range = high - low if high > low else 1.0
            return (("kind", "minmax"), ("offset", low), ("scale", 1 / value_range))
        if self.kind == "standard":
            std = np.sqrt(self.m2 / max(self.count, 1))
            std[std == 0] = 1.0
            return (
                ("kind", "standard"),
                ("offset", tuple(float(mean) for mean in self.mean)),
                ("scale", tuple(float(1 / value) for value in std)),
            )
        return (("kind", "none"),)


def standardized_targets(y: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, tuple[tuple[str, Any], ...]]:
    """Regression targets (rows x targets) standardized with the training split's mean and standard deviation (what
    the model learns, float32), and the scaling that brings predictions back to original units."""
    train = y[codes == TRAIN]
    mean, std = train.mean(axis=0), train.std(axis=0)
    scaling = (("mean", tuple(float(m) for m in mean)), ("std", tuple(float(s) for s in std)))
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant target is refused by the caller
        return ((y - mean) / std).astype(np.float32), scaling


def fit_vocabulary(source: Source, codes: np.ndarray, cfg: DataConfig) -> tuple[Any, list[str], tuple[tuple[str, Any], ...]]:
    """A TextVectorization vocabulary (lower case, punctuation stripped, split on whitespace) adapted on the training
    split's texts, streamed to it; each text is then cut or padded to cfg.sequence_length tokens.

    The vectorizer runs outside the model, so every model file (Keras, TFLite, ONNX) takes token ids; the export's
    SavedModel puts it back in front, so a served model receives raw text.
    """
    import tensorflow as tf
    from tf_keras.layers import TextVectorization

    def training_texts() -> Iterator[np.ndarray]:
        start = 0
        for chunk in source.chunks():
            chosen = chunk[codes[start : start + len(chunk)] == TRAIN]
            start += len(chunk)
            if len(chosen):
                yield chosen.astype(str)

    texts = tf.data.Dataset.from_generator(training_texts, output_signature=tf.TensorSpec([None], tf.string))
    vectorizer = TextVectorization(max_tokens=cfg.vocabulary_size, output_sequence_length=cfg.sequence_length)
    vectorizer.adapt(texts)
    vocabulary = [str(token) for token in vectorizer.get_vocabulary()]
    preprocessing: tuple[tuple[str, Any], ...] = (
        ("kind", "text"), ("standardize", "lower_and_strip_punctuation"), ("split", "whitespace"),
        ("sequence_length", cfg.sequence_length), ("vocabulary_size", len(vocabulary)),
    )
    return vectorizer, vocabulary, preprocessing
