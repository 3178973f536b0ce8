"""The prepared dataset on disk, and reading it back one shard at a time.

Layout of a prepared dataset folder (content-addressed: its name hashes the raw data and the data config):

    dataset.json                 what is where: the features' dtype and sample shape, each split's shard sizes
    train/00000-x.npy            features as the source holds them (uint8 pixels, float32 values, int32 token ids)
    train/00000-y.npy            class indices (int64), or regression targets standardized (float32, n x targets)
    train/00000-rows.npy         each sample's row number in the source (int64), to trace a prediction back
    train/00001-x.npy ...        then validation/ and test/ alike; vocabulary.txt for text

Why `.npy` shards, memory-mapped: a row is read back with no decoding at all (TFRecord parses every example, a
Parquet row group is decompressed and converted), the features keep their compact dtype (uint8 pixels are a
quarter of float32), and numpy maps a shard without reading it. A split is cut into shards of at most
SHARD_BYTES, each a random subset of the split (rows keep their source order within a shard): shuffling a
shard's rows then shuffles the whole split well, even for a source sorted by class (an image folder), while
only one shard is mapped at a time, so memory does not grow with the rows. Scaling is applied as batches are
read (see dataset.py), so the shards are written in one pass before the training split's statistics are known.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.errors import DataError

SPLITS = ("train", "validation", "test")
INDEX_NAME = "dataset.json"
VOCABULARY_NAME = "vocabulary.txt"
# At most this many bytes of features per shard: what a reader maps at once.
SHARD_BYTES = 32 << 20
# Seed of the draw that puts each row of a split into one of its shards (a storage choice, not a config one).
SHARD_SEED = 20261124


@dataclass(frozen=True)
class Shard:
    """One shard of a split: its files and how many samples it holds."""

    folder: Path
    number: int
    count: int

    def path(self, kind: str) -> Path:
        """The shard's file of one kind: "x" (features), "y" (targets), "rows" (source row numbers)."""
        return self.folder / f"{self.number:05d}-{kind}.npy"


def read_index(dataset_path: str | Path) -> dict[str, Any]:
    try:
        return dict(json.loads((Path(dataset_path) / INDEX_NAME).read_text()))
    except FileNotFoundError:
        raise DataError(f"{dataset_path}: prepared dataset not found; prepare the dataset again") from None


def split_shards(dataset_path: str | Path, split: str) -> list[Shard]:
    """The shards of a split, in their stored order."""
    counts = read_index(dataset_path)["splits"][split]
    return [Shard(Path(dataset_path) / split, number, count) for number, count in enumerate(counts)]


def shard_layout(split_of_row: np.ndarray, row_bytes: int) -> dict[str, np.ndarray]:
    """For each split, the shard of each of its rows (in source order): enough shards that none holds more than
    SHARD_BYTES of features, each row drawn at random into one of them (seeded, so a dataset is written the
    same way twice)."""
    layout = {}
    rng = np.random.default_rng(SHARD_SEED)
    for code, split in enumerate(SPLITS):
        count = int(np.count_nonzero(split_of_row == code))
        shards = max(1, -(-count * row_bytes // SHARD_BYTES))
        layout[split] = rng.integers(shards, size=count, dtype=np.int32) if shards > 1 else np.zeros(count, np.int32)
    return layout


class ShardWriter:
    """Writes a dataset's shards: targets and row numbers at once (they are small), features appended chunk by chunk
    in source order, each into the shard its row was drawn into.

    Args:
        folder: the (staging) dataset folder.
        split_of_row: for each source row, the index of its split in SPLITS, or -1 when it is left out
            (data.max_samples).
        targets: for each split, its targets in source order, as they are to be stored.
        sample_shape, dtype: of one sample's stored features.
    """

    def __init__(
        self, folder: Path, split_of_row: np.ndarray, targets: Mapping[str, np.ndarray], sample_shape: tuple[int, ...],
        dtype: np.dtype[Any],
    ) -> None:
        self.folder, self.sample_shape, self.dtype = folder, sample_shape, np.dtype(dtype)
        row_bytes = max(1, int(np.prod(sample_shape)) * self.dtype.itemsize)
        layout = shard_layout(split_of_row, row_bytes)
        self.split_of_row = split_of_row.astype(np.int8)
        # Where each source row goes: a global shard number (split offset + shard), -1 for rows left out.
        self.shard_of_row = np.full(len(split_of_row), -1, dtype=np.int32)
        self.shards: list[Shard] = []
        self.counts: dict[str, list[int]] = {}
        for code, split in enumerate(SPLITS):
            rows = np.flatnonzero(split_of_row == code)
            shard_of = layout[split]
            counts = np.bincount(shard_of, minlength=int(shard_of.max(initial=0)) + 1)
            self.counts[split] = [int(count) for count in counts]
            self.shard_of_row[rows] = len(self.shards) + shard_of
            (folder / split).mkdir(parents=True, exist_ok=True)
            for number, count in enumerate(counts):
                shard = Shard(folder / split, number, int(count))
                members = shard_of == number
                np.save(shard.path("y"), targets[split][members])
                np.save(shard.path("rows"), rows[members].astype(np.int64))
                with shard.path("x").open("wb") as file:
                    np.lib.format.write_array_header_1_0(file, {
                        "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                        "shape": (int(count), *sample_shape),
                    })
                self.shards.append(shard)
        self.written = 0

    def append(self, features: np.ndarray) -> None:
        """The features of the next rows of the source, in order."""
        if features.shape[1:] != self.sample_shape:
            raise ValueError(f"features of shape {features.shape[1:]}, expected {self.sample_shape}")
        destination = self.shard_of_row[self.written : self.written + len(features)]
        self.written += len(features)
        # Rows grouped by shard, in source order within each (a stable sort: a radix sort of 16-bit shard numbers).
        order = np.argsort(destination.astype(np.int16) if len(self.shards) < 2**15 else destination, kind="stable")
        grouped = np.ascontiguousarray(features[order], dtype=self.dtype)
        shard_numbers, starts = np.unique(destination[order], return_index=True)
        ends = [*starts[1:], len(order)]
        for number, start, end in zip(shard_numbers, starts, ends):
            if number >= 0:
                with self.shards[number].path("x").open("ab") as file:
                    file.write(grouped[start:end])  # a contiguous slice: its buffer, not a copy

    def finish(self, index: Mapping[str, Any]) -> None:
        """Check every row arrived and write dataset.json."""
        if self.written != len(self.shard_of_row):
            raise RuntimeError(f"the source gave {self.written} samples in its second pass, {len(self.shard_of_row)} in its first")
        full_index = {
            **index, "feature_dtype": self.dtype.str, "sample_shape": list(self.sample_shape), "splits": self.counts,
        }
        (self.folder / INDEX_NAME).write_text(json.dumps(full_index, indent=1, sort_keys=True))
