"""Tests only: a prepared dataset's splits read whole into memory, to compare them with what was written. The
package itself never does this (it streams the shards, see shrinkflow.core.data.dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from shrinkflow.core.data import DatasetRef, batches, split_targets


class Splits(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_splits(ref: DatasetRef) -> Splits:
    """Every split's scaled features and targets, in stored order."""
    parts = []
    for split in ("train", "validation", "test"):
        features = [x for x, _ in batches(ref, split, 4096)]
        parts += [np.concatenate(features), split_targets(ref, split)]
    return Splits(*parts)


def dataset_from_arrays(folder: Path, x: np.ndarray, y: np.ndarray, **fields: Any) -> DatasetRef:
    """A prepared dataset of these samples (as the source holds them) and targets, written in the package's own shard
    layout (rows dealt to train, validation and test in turn), and its reference with `fields` (class names,
    preprocessing, ...)."""
    from shrinkflow.core.data.store import SPLITS, ShardWriter

    split_of_row = np.arange(len(x)) % len(SPLITS)
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(
        folder, split_of_row, {split: y[split_of_row == code] for code, split in enumerate(SPLITS)}, x.shape[1:], x.dtype
    )
    writer.append(x)
    writer.finish({"source": "test", "fingerprint": "test"})
    sizes = tuple((split, int(np.count_nonzero(split_of_row == code))) for code, split in enumerate(SPLITS))
    return DatasetRef(path=str(folder), fingerprint="test", source="test", input_shape=tuple(x.shape[1:]),
                      class_counts=(), split_sizes=sizes, **fields)
