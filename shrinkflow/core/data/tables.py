"""CSV and Parquet tables, one file or a folder of them read as one table (pyarrow datasets), chunk by chunk.

A folder's files (recursively; names starting with "." or "_", such as Spark's _SUCCESS, are skipped) are read in
the order of their paths, so files that arrive later (one per day) extend the table at its end, and a
nightly run reads the same rows in the same order. Every file must have the same columns in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shrinkflow.core.config import DataConfig
from shrinkflow.core.data.checks import (
    ValueCounts, require_columns, require_comma_separated, require_numeric, require_unique_names,
)
from shrinkflow.core.data.source import Source
from shrinkflow.core.errors import DataError

TABLE_SUFFIXES = (".csv", ".parquet")
# Rows per record batch read from a table: a chunk of 64 float64 columns is 32 MiB.
BATCH_ROWS = 65_536


def table_files(path: Path) -> tuple[list[Path], str]:
    """The table's files in reading order and their format ("csv" or "parquet")."""
    if path.is_dir():
        files = sorted(
            file for file in path.rglob("*")
            if file.is_file() and file.suffix.lower() in TABLE_SUFFIXES
            and not any(part.startswith((".", "_")) for part in file.relative_to(path).parts)
        )
        if not files:
            raise DataError(f"{path}: is a folder with no .csv or .parquet files; a folder source is a table in parts")
        kinds = sorted({file.suffix.lower() for file in files})
        if len(kinds) > 1:
            raise DataError(f"{path}: holds both {' and '.join(kinds)} files; a folder is one table in one format")
        return files, kinds[0][1:]
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return [path], path.suffix.lower()[1:]


def column_names(path: Path) -> list[str]:
    """The column names as the file has them, repeats included."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return [str(name) for name in pq.read_schema(path).names]
        return [str(name) for name in pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist()]
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the table is empty (no columns and no rows)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the file as {path.suffix.lower()[1:]} ({exc})") from None


class Table:
    """A table of one or more files: its columns, checked, and its rows read column by column in batches."""

    def __init__(self, path: Path) -> None:
        import pyarrow.csv
        import pyarrow.dataset as ds

        self.path = path
        self.files, kind = table_files(path)
        self.names = column_names(self.files[0])
        # pandas would rename a repeated column ("a", "a.1"), so a duplicated label column would become a feature.
        require_unique_names(self.names, self.files[0])
        if kind == "csv":
            require_comma_separated(self.names, self.files[0])
        for file in self.files[1:]:
            names = column_names(file)
            if names != self.names:
                raise DataError(
                    f"{file}: its columns ({', '.join(names)}) differ from those of {self.files[0].name} "
                    f"({', '.join(self.names)}); every file of a table needs the same columns in the same order"
                )
        # As pandas reads a CSV: an empty field is missing, in a text column too.
        file_format = ds.CsvFileFormat(convert_options=pyarrow.csv.ConvertOptions(strings_can_be_null=True)) if kind == "csv" else kind
        try:
            self.dataset = ds.dataset([str(file) for file in self.files], format=file_format)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"{path}: cannot read the file as {kind} ({exc})") from None
        self.schema = self.dataset.schema

    def batches(self, columns: list[str]) -> Iterator[Any]:
        """Record batches of these columns, file after file in order (a dataset built from a list of files reads
        them in that order)."""
        for fragment, file in zip(self.dataset.get_fragments(), self.files):
            try:
                yield from fragment.to_batches(columns=columns, batch_size=BATCH_ROWS)
            except (OSError, ValueError) as exc:  # a value a column's type cannot hold, a damaged file
                raise DataError(f"{file}: cannot read the file ({exc})") from None

    def is_numeric(self, name: str) -> bool:
        import pyarrow.types as types

        kind = self.schema.field(name).type
        return bool(types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind) or types.is_null(kind))

    def is_integer(self, name: str) -> bool:
        import pyarrow.types as types

        kind = self.schema.field(name).type
        return bool(types.is_integer(kind) or types.is_boolean(kind))

    def require_numeric(self, names: list[str], field: str = "") -> None:
        """Numeric columns, or the DataError naming each other one with its first value that is not a number."""
        other = [name for name in names if not self.is_numeric(name)]
        if other:
            first = next(self.batches(other), None)
            sample = first.to_pandas() if first is not None else pd.DataFrame({name: [] for name in other}, dtype=object)
            require_numeric(sample, self.path, field)

    def values(self, names: list[str], counts: ValueCounts | None = None) -> Iterator[np.ndarray]:
        """The columns' values as chunks (rows x columns), nulls as NaN, counted into `counts`: float32 when every
        column's type fits it (float32 values, integers; half the work), else float64 (a float64 value beyond
        float32's range is reported)."""
        import pyarrow as pa

        wide = any(self.schema.field(name).type not in (pa.float32(), pa.float16()) and not self.is_integer(name)
                   for name in names)
        dtype = np.float64 if wide else np.float32
        for batch in self.batches(names):
            chunk = np.empty((batch.num_rows, len(names)), dtype=dtype)
            for column, name in enumerate(names):
                chunk[:, column] = batch.column(name).to_numpy(zero_copy_only=False)
            if counts is not None:
                counts.add(chunk)
            yield chunk

    def labels(self, name: str) -> np.ndarray:
        """One column's values (a class label column): numbers as they are, anything else as strings; nulls and
        non-finite numbers are reported with every other column's (see require_finite)."""
        parts = [batch.column(name) for batch in self.batches([name])]
        if sum(part.null_count for part in parts):
            self.require_finite(self.names)
        if self.is_numeric(name):
            values = np.concatenate([part.to_numpy(zero_copy_only=False) for part in parts]) if parts else np.array([])
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                self.require_finite(self.names)
            return values
        return np.concatenate([np.asarray(part.to_numpy(zero_copy_only=False), dtype=str) for part in parts]) if parts else np.array([], str)

    def require_finite(self, names: list[str]) -> None:
        """No missing or infinite values in these columns, counted over the whole table (raises the DataError)."""
        counts = ValueCounts(names)
        for batch in self.batches(names):
            chunk = np.zeros((batch.num_rows, len(names)))
            for column, name in enumerate(names):
                values = batch.column(name)
                if self.is_numeric(name):
                    chunk[:, column] = values.to_numpy(zero_copy_only=False)
                else:
                    counts.add_missing(column, values.null_count)
            counts.add(chunk)
        counts.check(self.path)


def table_source(path: Path, cfg: DataConfig) -> Source:
    """A table's features (numeric columns; or the text column; or the series column's windows) and labels."""
    table = Table(path)
    if cfg.text_column is not None:
        return text_source(table, cfg)
    if cfg.series_column is not None:
        require_columns(table.names, path, (cfg.series_column,), "data.series_column", "series")
        table.require_numeric([cfg.series_column], "data.series_column")
        counts = ValueCounts([cfg.series_column])
        series = np.concatenate([chunk[:, 0] for chunk in table.values([cfg.series_column], counts)] or [np.array([])])
        counts.check(path)
        from shrinkflow.core.data.transforms import windowed

        return windowed(series, cfg)
    regression = cfg.task == "regression"
    label_columns = cfg.targets() if regression else (cfg.label_column,)
    field = "data.target_columns" if cfg.target_columns else "data.label_column"
    require_columns(table.names, path, label_columns, field, "target" if regression else "label")
    features = [name for name in table.names if name not in label_columns]
    if not features:
        role = "target column(s)" if regression else "label column"
        raise DataError(f"{path}: no feature columns, only the {role} {', '.join(map(repr, label_columns))}")
    table.require_numeric(features)
    if regression:
        table.require_numeric(list(label_columns), f"{field} (a regression target)")
        counts = ValueCounts(list(label_columns))
        labels = np.concatenate(list(table.values(list(label_columns), counts)) or [np.zeros((0, len(label_columns)))])
        if counts.missing.any() or counts.infinite.any():
            table.require_finite(table.names)
    else:
        labels = table.labels(cfg.label_column)
    if not len(labels):
        raise DataError(f"{path}: the table has no rows")
    counts = ValueCounts(features)
    return Source(
        labels, (len(features),), np.dtype(np.float32), lambda: table.values(features, counts), columns=tuple(features),
        label_field=f"column {cfg.label_column!r}", checked=lambda: counts.check(path),
    )


def text_source(table: Table, cfg: DataConfig) -> Source:
    """The text column as strings and the label column, both without missing values."""
    text_column = cfg.text_column
    assert text_column is not None
    path = table.path
    require_columns(table.names, path, (text_column,), "data.text_column", "text")
    require_columns(table.names, path, (cfg.label_column,), "data.label_column", "label")
    if table.is_numeric(text_column):
        first = next(table.batches([text_column])).column(text_column)
        raise DataError(
            f"{path}: data.text_column {text_column!r} holds numbers ({first.type}, e.g. {first[0].as_py()!r}), "
            "not text; name the column of raw text, or use a numeric model family for numeric columns"
        )
    if sum(batch.column(text_column).null_count for batch in table.batches([text_column])):
        table.require_finite([text_column, cfg.label_column])
    labels = table.labels(cfg.label_column)
    if not len(labels):
        raise DataError(f"{path}: the table has no rows")

    def texts() -> Iterator[np.ndarray]:
        for batch in table.batches([text_column]):
            yield np.asarray(batch.column(text_column).to_numpy(zero_copy_only=False), dtype=object)

    return Source(labels, (), np.dtype(object), texts, columns=(text_column,), label_field=f"column {cfg.label_column!r}")
