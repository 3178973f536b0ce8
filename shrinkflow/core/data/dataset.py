"""A prepared dataset: the reference stages pass around, and reading its splits back in batches (numpy for
prediction, tf.data for training), one shard mapped at a time, the features scaled as the model takes them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.data.store import VOCABULARY_NAME, Shard, split_shards


@dataclass(frozen=True)
class DatasetRef:
    """A prepared dataset: where its shards are stored and what a model and its clients need to know."""

    path: str  # the prepared dataset's folder (see store.py)
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
    vocabulary_size: int = 0  # text: tokens in the fitted vocabulary (see load_vocabulary)
    # 8-bit images (image folders, the Keras image datasets, IDX files): a client may send them encoded (PNG, JPEG),
    # and the export takes image bytes too (input_shape gives the height, width and channels they are decoded to).
    encoded_images: bool = False
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


Batch = tuple[np.ndarray, np.ndarray]
# tf_dataset reads this many batches per call into Python and lets tf.data cut them: fewer calls, less GIL
# contention with the training step.
BATCHES_PER_READ = 16


def feature_scaler(ref: DatasetRef) -> Callable[[np.ndarray], np.ndarray]:
    """Stored features (a copy is made) as the model takes them, float32: (x - offset) * scale. Computed in float32,
    or in float64 for a batch whose values are too large for that (values near float32's limit, which the
    preparation accepts as long as they scale to finite numbers)."""
    settings = dict(ref.preprocessing)
    if settings.get("kind") not in ("minmax", "standard"):
        return lambda x: np.array(x, dtype=np.float32)
    offset, scale = np.asarray(settings["offset"], np.float64), np.asarray(settings["scale"], np.float64)
    if offset.ndim:  # standard: one offset and scale per feature
        offset, scale = offset.reshape(ref.input_shape), scale.reshape(ref.input_shape)
    offset32, scale32 = offset.astype(np.float32), scale.astype(np.float32)

    def scaled(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            result = np.array(x, dtype=np.float32)
            result -= offset32
            result *= scale32
            if np.isfinite(result).all():
                return result
            return ((x.astype(np.float64) - offset) * scale).astype(np.float32)

    return scaled


def batches(
    ref: DatasetRef, split: str, batch_size: int, shuffle_seed: int | None = None, epoch: int = 0,
    targets_from: str | Path | None = None,
) -> Iterator[Batch]:
    """The split's samples in batches of `batch_size` (the last one may be smaller): scaled float32 features, and
    targets (class indices, or standardized regression targets; or those written by write_targets to
    `targets_from`).

    In stored order, or with `shuffle_seed` in a random order that differs with `epoch`: the shards in a random
    order, each shard's rows in a random order (each shard is a random subset of the split, see store.py). One
    shard is mapped at a time.
    """
    scale = feature_scaler(ref)
    rng = None if shuffle_seed is None else np.random.default_rng([shuffle_seed, epoch])
    shards = split_shards(ref.path, split)
    order = rng.permutation(len(shards)) if rng is not None else range(len(shards))
    held_x: list[np.ndarray] = []
    held_y: list[np.ndarray] = []
    held = 0
    for number in order:
        shard = shards[number]
        if not shard.count:
            continue
        features = np.load(shard.path("x"), mmap_mode="r")
        targets = np.load(_targets_path(shard, targets_from))
        positions = rng.permutation(shard.count) if rng is not None else None
        start = 0
        while start < shard.count:
            end = min(shard.count, start + batch_size - held)
            rows: Any = slice(start, end) if positions is None else np.sort(positions[start:end])
            x, y = scale(features[rows]), targets[rows]
            start = end
            if not held and len(x) == batch_size:
                yield x, y
                continue
            held_x.append(x)
            held_y.append(y)
            held += len(x)
            if held == batch_size:
                yield np.concatenate(held_x), np.concatenate(held_y)
                held_x, held_y, held = [], [], 0
        del features  # unmap the shard before the next one
    if held:
        yield np.concatenate(held_x), np.concatenate(held_y)


def tf_dataset(
    ref: DatasetRef, split: str, batch_size: int, shuffle_seed: int | None = None,
    targets_from: str | Path | None = None,
) -> Any:
    """The split as a tf.data pipeline of (features, targets) batches of `batch_size`, read by `batches` (reshuffled every
    epoch when `shuffle_seed` is given, reproducibly) BATCHES_PER_READ at a time, prefetched while the model trains, of
    known length."""
    import tensorflow as tf

    epochs = itertools.count()

    def generate() -> Iterator[Batch]:
        yield from batches(ref, split, batch_size * BATCHES_PER_READ, shuffle_seed, next(epochs), targets_from)

    sample_targets = np.load(_targets_path(split_shards(ref.path, split)[0], targets_from), mmap_mode="r")
    signature = (
        tf.TensorSpec((None, *ref.input_shape), tf.float32),
        tf.TensorSpec((None, *sample_targets.shape[1:]), tf.as_dtype(sample_targets.dtype)),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).rebatch(batch_size)
    steps = -(-ref.split_size(split) // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def split_targets(ref: DatasetRef, split: str) -> np.ndarray:
    """The split's targets in stored order (the order of `batches` without shuffling): class indices (int64) or
    standardized regression targets (float32, n x targets). One small value per sample."""
    return np.concatenate([np.load(shard.path("y")) for shard in split_shards(ref.path, split)])


def split_rows(ref: DatasetRef, split: str) -> np.ndarray:
    """Each sample's row number in the source (its position as read: table rows in file order, images in class
    and file order), in stored order: what traces a prediction back to its input."""
    return np.concatenate([np.load(shard.path("rows")) for shard in split_shards(ref.path, split)])


def sample_features(ref: DatasetRef, split: str, count: int, seed: int) -> np.ndarray:
    """`count` samples of the split (all when it holds fewer), drawn at random with `seed`, scaled: calibration data,
    read from the shards without the rest of the split."""
    shards = split_shards(ref.path, split)
    total = sum(shard.count for shard in shards)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False))
    scale = feature_scaler(ref)
    parts, offset = [], 0
    for shard in shards:
        local = chosen[(chosen >= offset) & (chosen < offset + shard.count)] - offset
        offset += shard.count
        if len(local):
            parts.append(scale(np.load(shard.path("x"), mmap_mode="r")[local]))
    return np.concatenate(parts)


def write_targets(ref: DatasetRef, split: str, compute: Callable[[np.ndarray, np.ndarray], np.ndarray], folder: str | Path) -> None:
    """Targets of the split's samples computed once, batch by batch, from each batch's (features, targets), written
    beside the dataset's as shards of their own in `folder`, for `batches(..., targets_from=folder)`: the
    teacher's soft targets of distillation, for instance."""
    for shard in split_shards(ref.path, split):
        outputs = [compute(x, y) for x, y in _shard_batches(ref, shard)]
        path = _targets_path(shard, folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.concatenate(outputs) if outputs else np.zeros((0,), np.float32))


def load_vocabulary(ref: DatasetRef) -> list[str]:
    """text: the vocabulary fitted on the training split; token id i is its i-th entry (0 pads, 1 is unknown)."""
    return [str(token) for token in json.loads(Path(ref.path, VOCABULARY_NAME).read_text())]


def _shard_batches(ref: DatasetRef, shard: Shard, batch_size: int = 1024) -> Iterator[Batch]:
    scale = feature_scaler(ref)
    features, targets = np.load(shard.path("x"), mmap_mode="r"), np.load(shard.path("y"))
    for start in range(0, shard.count, batch_size):
        yield scale(features[start : start + batch_size]), targets[start : start + batch_size]


def _targets_path(shard: Shard, targets_from: str | Path | None) -> Path:
    if targets_from is None:
        return shard.path("y")
    return Path(targets_from) / shard.folder.name / shard.path("y").name
