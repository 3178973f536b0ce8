"""A prepared dataset: the reference stages pass around, and its stored splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from shrinkflow.core.errors import DataError


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
    # A table's feature columns as the file names them (text: the text column; a series: its column); () for arrays.
    feature_names: tuple[str, ...] = ()

    def output_paths(self) -> tuple[str, ...]:
        return (self.path,)

    def split_size(self, split: str) -> int:
        """How many samples the split ("train", "validation" or "test") holds."""
        return dict(self.split_sizes)[split]

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


def load_vocabulary(ref: DatasetRef) -> list[str]:
    """text: the vocabulary fitted on the training split; token id i is its i-th entry (0 pads, 1 is unknown)."""
    with np.load(ref.path) as stored:
        return [str(token) for token in stored["vocabulary"]]
