"""Tests only: a prepared dataset's splits read whole into memory, to compare them with what was written. The
package itself never does this (it streams the shards, see shrinkflow.core.data.dataset)."""

from __future__ import annotations

from typing import NamedTuple

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
