"""What the preparation reads from any source: its labels at once, its features chunk by chunk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shrinkflow.core.errors import DataError

# Rows a source's features are read in at a time, for sources held in memory anyway.
CHUNK_ROWS = 8192


@dataclass(frozen=True)
class Source:
    """A source as the preparation reads it: its labels at once, its features chunk by chunk.

    Attributes:
        labels: one raw label value per sample (class labels, or regression targets, n x targets).
        sample_shape: the shape of one sample's features as `chunks` yields them.
        dtype: the features' dtype as stored (uint8 pixels, float32 values; text: str).
        chunks: a fresh iterator over the features of consecutive samples, in order, each call from the start.
        columns: a table's feature column names (None for images).
        label_field: what holds the labels, for messages.
        class_names: names of the label values 0..k-1 where the source names them (folders, CIFAR's meta file).
        encoded_images: 8-bit images, which a client may as well send encoded (PNG, JPEG): the export then takes
            image bytes too.
        checked: checks that need the whole second pass (counts over every chunk), run after it.
    """

    labels: np.ndarray
    sample_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: Callable[[], Iterator[np.ndarray]]
    columns: tuple[str, ...] | None = None
    label_field: str = "the labels"
    class_names: tuple[str, ...] = ()
    encoded_images: bool = False
    checked: Callable[[], None] = field(default=lambda: None)


def in_memory(features: np.ndarray, labels: np.ndarray, **details: Any) -> Source:
    """A source whose file format is read whole (the bundled and MNIST files): its array, served in chunks."""
    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(features), CHUNK_ROWS):
            yield features[start : start + CHUNK_ROWS]

    if len(features) != len(labels):
        raise DataError(f"{len(features)} samples but {len(labels)} labels")
    return Source(labels, tuple(features.shape[1:]), features.dtype, chunks, **details)
