"""Tables in parts and data streamed from disk: a folder of Parquet (or CSV) files read as one table in a stable
order, splits stored as shards and read back batch by batch (never whole), shuffled anew each epoch; and the
regression data problems of issue #22 (findings 11 and 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shrinkflow.core.config import DataConfig, ModelConfig, TrainConfig
from shrinkflow.core.data import DatasetRef, batches, prepare_dataset, split_rows, split_targets, store
from shrinkflow.core.errors import DataError


def numbered_table(rows: int, start: int = 0) -> pd.DataFrame:
    """Rows whose first feature is their row number, so a stored sample can be traced to its row."""
    numbers = np.arange(start, start + rows, dtype=float)
    return pd.DataFrame({"row": numbers, "noise": np.sin(numbers), "label": (numbers % 3).astype(int)})


def write_parts(folder: Path, sizes: tuple[int, ...], suffix: str = ".parquet") -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    parts, start = [], 0
    for number, size in enumerate(sizes):
        part = numbered_table(size, start)
        start += size
        if suffix == ".parquet":
            part.to_parquet(folder / f"part-{number:03d}.parquet")
        else:
            part.to_csv(folder / f"part-{number:03d}.csv", index=False)
        parts.append(part)
    (folder / "_SUCCESS").write_text("")  # as Spark leaves it: skipped
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_folder_of_tables_is_read_as_one_table_in_file_order(tmp_path: Path, suffix: str) -> None:
    table = write_parts(tmp_path / "parts", (40, 25, 35), suffix)

    ref = prepare_dataset(DataConfig(source=str(tmp_path / "parts"), scaling="none"), tmp_path / "prepared")

    assert ref.input_shape == (2,) and sum(size for _, size in ref.split_sizes) == 100
    for split in ("train", "validation", "test"):
        rows, labels = split_rows(ref, split), split_targets(ref, split)
        features = np.concatenate([x for x, _ in batches(ref, split, 16)])
        np.testing.assert_array_equal(features[:, 0], rows)  # each sample is its source row: the order is stable
        np.testing.assert_array_equal(labels, table["label"].to_numpy()[rows])


def test_a_file_that_arrives_later_extends_the_table(tmp_path: Path) -> None:
    write_parts(tmp_path / "parts", (40, 25))
    first = prepare_dataset(DataConfig(source=str(tmp_path / "parts")), tmp_path / "prepared")
    numbered_table(30, start=65).to_parquet(tmp_path / "parts" / "part-002.parquet")

    second = prepare_dataset(DataConfig(source=str(tmp_path / "parts")), tmp_path / "prepared")

    assert second.fingerprint != first.fingerprint and second.path != first.path
    assert sum(size for _, size in second.split_sizes) == 95


def test_files_of_a_table_must_have_the_same_columns(tmp_path: Path) -> None:
    write_parts(tmp_path / "parts", (40, 25))
    numbered_table(30).rename(columns={"noise": "signal"}).to_parquet(tmp_path / "parts" / "part-002.parquet")
    with pytest.raises(DataError, match=r"part-002\.parquet: its columns \(row, signal, label\) differ from those of part-000\.parquet"):
        prepare_dataset(DataConfig(source=str(tmp_path / "parts")), tmp_path / "prepared")


@pytest.fixture
def sharded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DatasetRef:
    """600 rows with shards of at most 1 KiB of features (128 rows of two float32): 4 for the 420 training rows."""
    monkeypatch.setattr(store, "SHARD_BYTES", 1024)
    write_parts(tmp_path / "parts", (300, 300))
    return prepare_dataset(DataConfig(source=str(tmp_path / "parts"), scaling="none"), tmp_path / "prepared")


def test_a_split_is_stored_as_shards_each_a_random_subset(sharded: DatasetRef) -> None:
    shards = store.split_shards(sharded.path, "train")
    assert len(shards) == 4 and sum(shard.count for shard in shards) == sharded.split_size("train")
    for shard in shards[:2]:
        rows = np.load(shard.path("rows"))
        assert (np.diff(rows) > 0).all()  # source order within a shard
        assert rows.max() - rows.min() > sharded.split_size("train") // 2  # drawn from the whole split


def test_shuffled_batches_cover_the_split_once_per_epoch_in_a_new_order(sharded: DatasetRef) -> None:
    def epoch(number: int) -> np.ndarray:
        return np.concatenate([x[:, 0] for x, _ in batches(sharded, "train", 32, shuffle_seed=7, epoch=number)])

    first, again, second = epoch(0), epoch(0), epoch(1)
    assert sorted(first) == sorted(split_rows(sharded, "train"))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    sizes = [len(x) for x, _ in batches(sharded, "train", 32, shuffle_seed=7)]
    assert set(sizes[:-1]) == {32}  # full batches across shard boundaries


def test_training_streams_the_shards_batch_by_batch(sharded: DatasetRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of stored features during training is a few batches of one memory-mapped shard, never a split."""
    from shrinkflow.core.data import dataset
    from shrinkflow.core.training import train_baseline

    reads: list[int] = []  # rows of stored features read at a time
    scaler = dataset.feature_scaler

    def recording_scaler(ref: DatasetRef):  # type: ignore[no-untyped-def]
        scale = scaler(ref)
        return lambda x: reads.append(len(x)) or scale(x)

    loads: list[tuple[str, object]] = []
    load = np.load

    def recording_load(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        loads.append((Path(path).name, kwargs.get("mmap_mode")))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(dataset, "feature_scaler", recording_scaler)
    monkeypatch.setattr(np, "load", recording_load)

    metrics = train_baseline(
        sharded, ModelConfig(family="mlp", hidden_units=(4,), dropout=0), TrainConfig(epochs=2, batch_size=4,
                                                                                     early_stopping_patience=None),
        tmp_path / "model.keras",
    )

    assert metrics["epochs_run"] == 2
    assert reads and max(reads) <= 4 * dataset.BATCHES_PER_READ < min(shard.count for shard in store.split_shards(sharded.path, "train"))
    assert sum(reads) == 2 * (sharded.split_size("train") + sharded.split_size("validation"))
    feature_loads = [mode for name, mode in loads if name.endswith("-x.npy")]
    assert feature_loads and set(feature_loads) == {"r"}  # features are only ever mapped, never read whole


def test_a_series_too_short_to_split_speaks_of_samples_not_classes(tmp_path: Path) -> None:
    """Issue #22, finding 11: a regression has no classes."""
    pd.DataFrame({"load": np.arange(6.0)}).to_csv(tmp_path / "series.csv", index=False)
    config = DataConfig(source=str(tmp_path / "series.csv"), task="regression", series_column="load", window=4)
    with pytest.raises(DataError, match=r"cannot split 2 samples into train, validation and test with at least one sample in each") as raised:
        prepare_dataset(config, tmp_path / "prepared")
    assert "class" not in str(raised.value)


def test_a_constant_regression_target_is_refused(tmp_path: Path) -> None:
    """Issue #22, finding 14: it would ship with R2 0.0 and nothing learned."""
    table = numbered_table(40).assign(price=3.5)
    table.to_csv(tmp_path / "prices.csv", index=False)
    config = DataConfig(source=str(tmp_path / "prices.csv"), task="regression", label_column="price")
    with pytest.raises(DataError, match=r"the regression target 'price' \(always 3\.5\) is constant in the training split: there is nothing to learn, and R2 is undefined"):
        prepare_dataset(config, tmp_path / "prepared")
