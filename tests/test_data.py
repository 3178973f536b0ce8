"""shrinkflow.core.data: every source read from real files, split, scaled, and every data problem reported."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shrinkflow.core.config import DataConfig
from shrinkflow.core.data import DatasetRef, prepare_dataset
from tests.datasets import Splits, load_splits
from shrinkflow.core.errors import DataError

MNIST_T10K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"
MNIST_T10K_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def prepare(tmp_path: Path, **settings: object) -> tuple[DatasetRef, Splits]:
    ref = prepare_dataset(DataConfig(**settings), tmp_path / "prepared")
    return ref, load_splits(ref)


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An unsigned-byte IDX file, gzipped when the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    content = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


def random_images(count: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images and labels cycling through 3 classes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size), dtype=np.uint8), np.arange(count, dtype=np.uint8) % 3


def animal_table(rows_per_class: int = 10, classes: tuple[str, ...] = ("cat", "dog", "fox")) -> pd.DataFrame:
    """Four numeric feature columns and a string label column."""
    labels = [name for name in classes for _ in range(rows_per_class)]
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(len(labels), 4)), columns=["a", "b", "c", "d"])
    table["label"] = labels
    return table


def write_csv(tmp_path: Path, table: pd.DataFrame, name: str = "data.csv") -> str:
    path = tmp_path / name
    table.to_csv(path, index=False)
    return str(path)


def all_rows(splits: Splits) -> np.ndarray:
    """Every sample's features, flattened and sorted, to compare datasets regardless of the split."""
    features = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    flat = features.reshape(len(features), -1)
    return flat[np.lexsort(flat.T[::-1])]


# --- sklearn:digits, splitting and scaling -------------------------------------------------------


def test_digits_are_images_of_ten_classes_split_into_three_parts(tmp_path: Path) -> None:
    ref, splits = prepare(tmp_path)

    assert ref.source == "sklearn:digits"
    assert ref.input_shape == (8, 8, 1) and ref.is_image
    assert ref.num_classes == 10 and ref.class_names == tuple(str(digit) for digit in range(10))
    assert sum(count for _, count in ref.class_counts) == 1797
    assert [name for name, _ in ref.split_sizes] == ["train", "validation", "test"]
    assert sum(size for _, size in ref.split_sizes) == 1797
    assert dict(ref.split_sizes) == {"train": len(splits.y_train), "validation": len(splits.y_val), "test": 360}
    assert splits.x_train.shape == (len(splits.y_train), 8, 8, 1)
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int64
    assert Path(ref.path).parent == tmp_path / "prepared"
    assert sorted(path.name for path in Path(ref.path).iterdir()) == ["dataset.json", "test", "train", "validation"]
    assert sorted(path.name for path in Path(ref.path, "test").iterdir()) == ["00000-rows.npy", "00000-x.npy", "00000-y.npy"]


def test_every_class_is_in_every_split_in_proportion(tmp_path: Path) -> None:
    _, splits = prepare(tmp_path)

    for labels in (splits.y_train, splits.y_val, splits.y_test):
        shares = np.bincount(labels, minlength=10) / len(labels)
        assert shares.min() > 0.08 and shares.max() < 0.12


def test_same_seed_gives_identical_splits_and_reuses_the_file(tmp_path: Path) -> None:
    first_ref, first = prepare(tmp_path, seed=7)
    written_at = Path(first_ref.path, "dataset.json").stat().st_mtime_ns
    second_ref, second = prepare(tmp_path, seed=7)

    assert second_ref == first_ref
    assert Path(second_ref.path, "dataset.json").stat().st_mtime_ns == written_at
    for first_array, second_array in zip(first, second):
        np.testing.assert_array_equal(first_array, second_array)
    assert [path.name for path in (tmp_path / "prepared").iterdir()] == [Path(first_ref.path).name]


def test_another_seed_gives_another_split_of_the_same_data(tmp_path: Path) -> None:
    ref_7, splits_7 = prepare(tmp_path, seed=7)
    ref_8, splits_8 = prepare(tmp_path, seed=8)

    assert ref_7.path != ref_8.path
    assert ref_7.fingerprint == ref_8.fingerprint
    assert not np.array_equal(splits_7.y_train, splits_8.y_train)


def test_max_samples_takes_a_stratified_subsample(tmp_path: Path) -> None:
    ref, splits = prepare(tmp_path, max_samples=200)

    assert sum(size for _, size in ref.split_sizes) == 200
    assert sum(count for _, count in ref.class_counts) == 200
    assert all(18 <= count <= 22 for _, count in ref.class_counts)
    assert set(splits.y_test) == set(range(10))


def test_minmax_scaling_is_fitted_on_the_training_split_only(tmp_path: Path) -> None:
    values = np.arange(60, dtype=float)
    source = write_csv(tmp_path, pd.DataFrame({"value": values, "label": values.astype(int) % 3}))

    ref, splits = prepare(tmp_path, source=source, seed=3)

    preprocessing = dict(ref.preprocessing)
    assert preprocessing["kind"] == "minmax"
    assert splits.x_train.min() == 0.0 and splits.x_train.max() == 1.0
    train_values = splits.x_train[:, 0] / preprocessing["scale"] + preprocessing["offset"]
    assert preprocessing["offset"] == pytest.approx(train_values.min())
    assert 1 / preprocessing["scale"] == pytest.approx(train_values.max() - train_values.min())
    # This seed leaves the smallest or the largest value out of training, so the whole data's range differs.
    held_out = np.concatenate([splits.x_val, splits.x_test])
    assert held_out.min() < 0.0 or held_out.max() > 1.0


def test_standard_scaling_uses_per_feature_training_statistics(tmp_path: Path) -> None:
    table = animal_table()
    table["b"] = table["b"] * 100 + 5
    table["d"] = 2.0  # constant: StandardScaler must not divide by zero
    ref, splits = prepare(tmp_path, source=write_csv(tmp_path, table), scaling="standard")

    preprocessing = dict(ref.preprocessing)
    assert preprocessing["kind"] == "standard"
    assert len(preprocessing["offset"]) == len(preprocessing["scale"]) == 4
    np.testing.assert_allclose(splits.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(splits.x_train[:, :3].std(axis=0), 1, atol=1e-5)
    assert np.all(np.isfinite(splits.x_test))
    raw_train = splits.x_train / np.asarray(preprocessing["scale"]) + np.asarray(preprocessing["offset"])
    np.testing.assert_allclose(raw_train[:, 3], 2.0)


def test_no_scaling_keeps_the_values_as_read(tmp_path: Path) -> None:
    ref, splits = prepare(tmp_path, scaling="none")

    assert ref.preprocessing == (("kind", "none"),)
    assert splits.x_train.max() == 16.0


# --- tables --------------------------------------------------------------------------------------


def test_csv_with_string_labels_is_tabular_data(tmp_path: Path) -> None:
    table = animal_table(classes=("fox", "cat", "dog"))
    ref, splits = prepare(tmp_path, source=write_csv(tmp_path, table), scaling="none")

    assert ref.input_shape == (4,) and not ref.is_image
    assert ref.class_names == ("cat", "dog", "fox")
    assert ref.class_counts == (("cat", 10), ("dog", 10), ("fox", 10))
    raw = table[["a", "b", "c", "d"]].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(all_rows(splits), raw[np.lexsort(raw.T[::-1])])
    # Each sample keeps its own label: look the training rows up in the table.
    for features, label in zip(splits.x_train, splits.y_train):
        row = np.flatnonzero((raw == features).all(axis=1))[0]
        assert ref.class_names[label] == table["label"][row]


def test_csv_pixel_columns_are_reshaped_to_image_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (30, 16))
    table = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(16)])
    table.insert(0, "digit", np.arange(30) % 3)
    source = write_csv(tmp_path, table)

    ref, splits = prepare(tmp_path, source=source, label_column="digit", image_shape=(4, 4), scaling="none")

    assert ref.input_shape == (4, 4, 1) and ref.is_image
    assert ref.class_names == ("0", "1", "2")
    assert splits.x_train.shape[1:] == (4, 4, 1)
    expected = pixels.astype(np.float32)
    np.testing.assert_array_equal(all_rows(splits), expected[np.lexsort(expected.T[::-1])])


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    table = animal_table()
    table.to_parquet(tmp_path / "data.parquet")
    csv_ref, _ = prepare(tmp_path, source=write_csv(tmp_path, table))
    parquet_ref, _ = prepare(tmp_path, source=str(tmp_path / "data.parquet"))

    assert parquet_ref.class_counts == csv_ref.class_counts
    assert parquet_ref.input_shape == (4,)
    assert parquet_ref.fingerprint == csv_ref.fingerprint


# --- IDX files and the Keras cache ---------------------------------------------------------------


def test_idx_dir_concatenates_gzipped_and_plain_pairs(tmp_path: Path) -> None:
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    train_images, train_labels = random_images(30, seed=1, size=6)
    test_images, test_labels = random_images(12, seed=2, size=6)
    write_idx(idx_dir / "train-images-idx3-ubyte.gz", train_images)
    write_idx(idx_dir / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(idx_dir / "t10k-images-idx3-ubyte", test_images)
    write_idx(idx_dir / "t10k-labels-idx1-ubyte", test_labels)
    (idx_dir / "README.md").write_text("not data")

    ref, splits = prepare(tmp_path, source=f"idx:{idx_dir}", scaling="none")

    assert ref.input_shape == (6, 6, 1) and ref.is_image
    assert ref.class_counts == (("0", 14), ("1", 14), ("2", 14))
    expected = np.concatenate([train_images, test_images]).reshape(42, -1).astype(np.float32)
    np.testing.assert_array_equal(all_rows(splits), expected[np.lexsort(expected.T[::-1])])


@pytest.mark.skipif(not MNIST_T10K.is_dir(), reason=f"real MNIST test set not found at {MNIST_T10K}")
def test_real_mnist_t10k_idx_files(tmp_path: Path) -> None:
    ref, splits = prepare(tmp_path, source=f"idx:{MNIST_T10K}")

    assert ref.input_shape == (28, 28, 1)
    assert ref.class_counts == tuple((str(digit), count) for digit, count in enumerate(MNIST_T10K_CLASS_COUNTS))
    assert ref.split_sizes == (("train", 7000), ("validation", 1000), ("test", 2000))
    assert splits.x_train.min() == 0.0 and splits.x_train.max() == 1.0
    assert dict(ref.preprocessing)["scale"] == pytest.approx(1 / 255)


def test_keras_mnist_uses_the_cached_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    x_train, y_train = random_images(30, seed=1)
    x_test, y_test = random_images(15, seed=2)
    np.savez(tmp_path / "datasets" / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    ref, splits = prepare(tmp_path, source="keras:mnist", scaling="none")

    assert ref.input_shape == (28, 28, 1)
    assert ref.class_counts == (("0", 15), ("1", 15), ("2", 15))
    expected = np.concatenate([x_train, x_test]).reshape(45, -1).astype(np.float32)
    np.testing.assert_array_equal(all_rows(splits), expected[np.lexsort(expected.T[::-1])])


def test_a_damaged_keras_cache_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "mnist.npz").write_bytes(b"half a download")

    with pytest.raises(DataError, match=r"mnist\.npz: not a \.npz archive; delete it and Keras downloads it again"):
        prepare(tmp_path, source="keras:mnist")

    np.savez(tmp_path / "datasets" / "mnist.npz", x_train=np.zeros((3, 28, 28)), y_train=np.zeros(3))
    with pytest.raises(DataError, match=r"mnist\.npz: no x_test, y_test array; expected x_train, y_train, x_test"):
        prepare(tmp_path, source="keras:mnist")


def test_keras_fashion_mnist_uses_the_cached_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cache = tmp_path / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    for part, count in (("train", 30), ("t10k", 12)):
        images, labels = random_images(count, seed=count)
        write_idx(cache / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(cache / f"{part}-labels-idx1-ubyte.gz", labels)

    ref, _ = prepare(tmp_path, source="keras:fashion_mnist")

    assert ref.input_shape == (28, 28, 1)
    assert ref.class_counts == (("0", 14), ("1", 14), ("2", 14))


def test_keras_mnist_that_cannot_be_downloaded_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    expected_path = tmp_path / "datasets" / "mnist.npz"

    message = rf"cannot download .*mnist\.npz.*put the file at {re.escape(str(expected_path))}"
    with pytest.raises(DataError, match=message):
        prepare_dataset(DataConfig(source="keras:mnist"), tmp_path / "prepared")


# --- every data problem is a DataError naming the file and what is expected ----------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.csv: file not found"):
        prepare(tmp_path, source=str(tmp_path / "missing.csv"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("data.parquet", b"these are not parquet bytes", r"data\.parquet: cannot read the file as parquet"),
        ("data.csv", b"a,label\n\xff\xfe,1\n", r"data\.csv: column 'a' is not numeric \(first bad value b'\\xff\\xfe'\)"),
    ],
)
def test_unreadable_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)

    with pytest.raises(DataError, match=message):
        prepare(tmp_path, source=str(tmp_path / name))


@pytest.mark.parametrize(
    ("content", "message"), [("a,b,label\n", "the table has no rows"), ("", r"the table is empty \(no columns")]
)
def test_empty_table(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "data.csv").write_text(content)

    with pytest.raises(DataError, match=rf"data\.csv: {message}"):
        prepare(tmp_path, source=str(tmp_path / "data.csv"))


def test_missing_label_column_lists_the_columns(tmp_path: Path) -> None:
    source = write_csv(tmp_path, animal_table().rename(columns={"label": "animal"}))

    with pytest.raises(
        DataError, match=r"data\.csv: no label column 'label'; available columns: a, b, c, d, animal \(set data"
    ):
        prepare(tmp_path, source=source)


def test_table_without_feature_columns(tmp_path: Path) -> None:
    source = write_csv(tmp_path, animal_table()[["label"]])

    with pytest.raises(DataError, match=r"data\.csv: no feature columns, only the label column 'label'"):
        prepare(tmp_path, source=source)


def test_non_numeric_feature_column(tmp_path: Path) -> None:
    table = animal_table()
    table["color"] = ["red", "green", "blue"] * 10

    with pytest.raises(
        DataError,
        match=(
            r"data\.csv: column 'color' is not numeric \(first bad value 'red'\); "
            r"features must be numbers, or drop the column"
        ),
    ):
        prepare(tmp_path, source=write_csv(tmp_path, table))


def test_every_non_numeric_feature_column_is_named(tmp_path: Path) -> None:
    table = animal_table()
    table["color"] = ["red", "green", "blue"] * 10
    table["size"] = ["12", "big"] * 15

    with pytest.raises(
        DataError,
        match=r"column 'color' is not numeric \(first bad value 'red'\), column 'size' is not numeric \(first bad "
        r"value 'big'\);",
    ):
        prepare(tmp_path, source=write_csv(tmp_path, table))


def test_missing_values_name_the_columns_and_rows(tmp_path: Path) -> None:
    table = animal_table()
    table.loc[[3, 7], "b"] = np.nan
    table.loc[5, "label"] = None

    with pytest.raises(
        DataError, match=r"data\.csv: missing \(NaN\) values in columns 'b' \(2 rows\), 'label' \(1 row\)"
    ):
        prepare(tmp_path, source=write_csv(tmp_path, table))


def test_infinite_values_name_the_column_and_rows(tmp_path: Path) -> None:
    table = animal_table()
    table.loc[4, "c"] = np.inf

    with pytest.raises(DataError, match=r"data\.csv: infinite values in column 'c' \(1 row\)"):
        prepare(tmp_path, source=write_csv(tmp_path, table))


def test_a_single_class_cannot_be_classified(tmp_path: Path) -> None:
    source = write_csv(tmp_path, animal_table(classes=("cat",)))

    with pytest.raises(DataError, match=r"column 'label' has 1 class\(es\) \['cat'\]; classification needs at least 2"):
        prepare(tmp_path, source=source)


def test_a_class_too_small_to_split(tmp_path: Path) -> None:
    table = pd.concat([animal_table(classes=("cat", "dog")), animal_table(rows_per_class=2, classes=("eel",))])

    with pytest.raises(DataError, match=r"data\.csv: class 'eel' has only 2 sample\(s\); every class needs at least 3"):
        prepare(tmp_path, source=write_csv(tmp_path, table))


def test_validation_and_test_splits_need_one_sample_per_class(tmp_path: Path) -> None:
    source = write_csv(tmp_path, animal_table(rows_per_class=3, classes=tuple("abcdefghij")))

    with pytest.raises(DataError, match=r"data\.csv: cannot split 30 samples of 10 classes into train, validation"):
        prepare(tmp_path, source=source)


def test_a_class_too_small_after_subsampling(tmp_path: Path) -> None:
    table = pd.concat([animal_table(rows_per_class=100, classes=("cat", "dog")), animal_table(classes=("eel",))])

    with pytest.raises(DataError, match=r"class 'eel' has only \d sample\(s\) after subsampling to data\.max_samples"):
        prepare(tmp_path, source=write_csv(tmp_path, table), max_samples=40)


def test_image_shape_must_match_the_feature_columns(tmp_path: Path) -> None:
    table = pd.DataFrame(np.zeros((30, 15)), columns=[f"pixel{i}" for i in range(15)])
    table["label"] = np.arange(30) % 3

    with pytest.raises(
        DataError, match=r"data\.csv: data\.image_shape \[4, 4\] holds 16 values, but the table has 15 feature columns"
    ):
        prepare(tmp_path, source=write_csv(tmp_path, table), image_shape=(4, 4))


def test_image_shape_applies_to_tables_only(tmp_path: Path) -> None:
    ref, _ = prepare(tmp_path, image_shape=(8, 8))
    assert ref.input_shape == (8, 8, 1)

    with pytest.raises(DataError, match=r"data\.image_shape \[4, 16\] applies to CSV/Parquet tables only"):
        prepare(tmp_path, image_shape=(4, 16))


@pytest.mark.parametrize("source", ["sklearn:iris", "keras:cifar", "data.xlsx"])
def test_unknown_source_lists_the_accepted_forms(tmp_path: Path, source: str) -> None:
    with pytest.raises(DataError, match=r"not supported; use sklearn:digits, sklearn:diabetes, keras:mnist, keras:fashion_mnist, keras:cifar10, keras:cifar100, idx:DIR .*images:DIR"):
        prepare(tmp_path, source=source)


def test_bad_idx_magic_number(tmp_path: Path) -> None:
    images, labels = random_images(30, seed=1, size=4)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(labels))

    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte: not an IDX file .* magic number 0x12345678, expected 0x00000801"
    ):
        prepare(tmp_path, source=f"idx:{tmp_path}")


def test_idx_data_shorter_than_its_header_says(tmp_path: Path) -> None:
    images, labels = random_images(30, seed=1, size=4)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    content = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(content[:-5]))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)

    with pytest.raises(DataError, match=r"images-idx3-ubyte\.gz: the header promises 30 x 4 x 4 = 480 values, but"):
        prepare(tmp_path, source=f"idx:{tmp_path}")


def test_idx_images_and_labels_must_be_equally_many(tmp_path: Path) -> None:
    images, labels = random_images(30, seed=1, size=4)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:29])

    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: 29 labels, but train-images-idx3-ubyte has 30"):
        prepare(tmp_path, source=f"idx:{tmp_path}")


def test_idx_images_without_labels(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", random_images(30, seed=1, size=4)[0])

    with pytest.raises(DataError, match=r"no matching labels file; expected train-labels-idx1-ubyte\[\.gz\]"):
        prepare(tmp_path, source=f"idx:{tmp_path}")


def test_idx_dir_must_exist_and_hold_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"idx:.*missing: directory not found"):
        prepare(tmp_path, source=f"idx:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match=r"no \*images\*idx3-ubyte\[\.gz\] files"):
        prepare(tmp_path, source=f"idx:{tmp_path}")


def test_loading_a_removed_dataset_file(tmp_path: Path) -> None:
    ref, _ = prepare(tmp_path)
    shutil.rmtree(ref.path)

    with pytest.raises(DataError, match=r"prepared dataset not found"):
        load_splits(ref)


@pytest.mark.parametrize(
    ("header", "repeated"),
    [("a,label,label", "'label' (2 times)"), ("a,a,label", "'a' (2 times)")],
)
def test_repeated_column_names_are_refused(tmp_path: Path, header: str, repeated: str) -> None:
    """pandas would rename the second one "x.1": a repeated label column would become a feature (a label leak)."""
    path = tmp_path / "data.csv"
    path.write_text(header + "\n" + "".join(f"{i},{i % 2},{i % 2}\n" for i in range(30)))
    with pytest.raises(DataError, match=rf"data.csv: column names must be unique, but {re.escape(repeated)}"):
        prepare(tmp_path, source=str(path))


def test_repeated_parquet_column_names_are_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    labels = pa.array([i % 2 for i in range(30)])
    pq.write_table(pa.table([pa.array(range(30)), labels, labels], names=["a", "label", "label"]), path)
    with pytest.raises(DataError, match=r"column names must be unique, but 'label' \(2 times\)"):
        prepare(tmp_path, source=str(path))


@pytest.mark.parametrize("scaling", ["minmax", "standard", "none"])
def test_values_beyond_float32_are_refused_naming_the_column(tmp_path: Path, scaling: str) -> None:
    table = animal_table()
    table.loc[3, "c"], table.loc[5, "c"] = 1e308, -1e308
    with pytest.raises(DataError, match=r"values beyond float32's range .* in column 'c' \(2 rows, e.g. 1e\+308\)"):
        prepare(tmp_path, source=write_csv(tmp_path, table), scaling=scaling)


@pytest.mark.parametrize("scaling", ["minmax", "standard"])
def test_values_spanning_more_than_float32_scale_to_finite_features(tmp_path: Path, scaling: str) -> None:
    """Each value fits float32, but their range does not: the statistics are computed in float64."""
    table = animal_table()
    table.loc[3, "c"], table.loc[5, "c"] = 3e38, -3e38
    _, splits = prepare(tmp_path, source=write_csv(tmp_path, table), scaling=scaling)
    for x in (splits.x_train, splits.x_val, splits.x_test):
        assert np.isfinite(x).all()


def test_a_semicolon_separated_csv_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a;b;label\n" + "".join(f"{i};{i};{i % 2}\n" for i in range(30)))
    with pytest.raises(DataError, match=r"the header 'a;b;label' looks semicolon-separated, .* sep=';'"):
        prepare(tmp_path, source=str(path))


def test_a_folder_without_tables_is_not_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(DataError, match=r"data.csv: is a folder with no .csv or .parquet files"):
        prepare(tmp_path, source=str(tmp_path / "data.csv"))
