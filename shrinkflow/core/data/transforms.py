"""Shaping, labelling, subsampling, splitting, scaling and vectorizing the data read from a source."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from shrinkflow.core.config import DataConfig
from shrinkflow.core.data.dataset import Splits
from shrinkflow.core.errors import DataError


def data_fingerprint(features: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the raw features and labels (values, dtypes and shapes), before any config applies."""
    digest = hashlib.sha256()
    for array in (features, labels):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        if array.dtype.kind in "UO":  # text: the characters, not the array's memory
            digest.update("\x00".join(map(str, array.ravel())).encode())
        else:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def apply_sequence_shape(features: np.ndarray, cfg: DataConfig) -> np.ndarray:
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


def windows(series: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
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


def apply_image_shape(features: np.ndarray, cfg: DataConfig, from_table: bool) -> np.ndarray:
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


def encode_labels(labels: np.ndarray, source: str, label_field: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names (sorted unique label values) and each sample's class index."""
    classes, indices = np.unique(labels, return_inverse=True)
    class_names = tuple(str(value) for value in classes)
    if len(class_names) < 2:
        raise DataError(
            f"{source}: {label_field} has {len(class_names)} class(es) {list(class_names)}; "
            "classification needs at least 2"
        )
    return class_names, indices.reshape(-1).astype(np.int64)


def subsample(features: np.ndarray, y: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
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


def split(features: np.ndarray, y: np.ndarray, cfg: DataConfig) -> Splits:
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


def scale(splits: Splits, scaling: str) -> tuple[Splits, tuple[tuple[str, Any], ...]]:
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


def vectorize(splits: Splits, cfg: DataConfig) -> tuple[Splits, np.ndarray, tuple[tuple[str, Any], ...]]:
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


def standardize_targets(splits: Splits) -> tuple[Splits, tuple[tuple[str, Any], ...]]:
    """Regression targets standardized with the training split's mean and standard deviation (what the model
    learns), and the scaling that brings predictions back to original units."""
    scaler = StandardScaler().fit(splits.y_train)
    y_train, y_val, y_test = (scaler.transform(y).astype(np.float32) for y in (splits.y_train, splits.y_val, splits.y_test))
    scaling = (("mean", tuple(float(m) for m in scaler.mean_)), ("std", tuple(float(s) for s in scaler.scale_)))
    return splits._replace(y_train=y_train, y_val=y_val, y_test=y_test), scaling
