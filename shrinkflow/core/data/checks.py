"""Checks of the data, each raising a DataError that names the file, the column or the setting, and the fix.

Checks over values count as the chunks of a source pass by (ValueCounts), so a message says how many rows of
which column are wrong without the table ever being held whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shrinkflow.core.config import DataConfig, shorten
from shrinkflow.core.errors import DataError

MIN_SAMPLES_PER_CLASS = 3  # one each for train, validation and test


def require_columns(available: Sequence[str], path: Path, names: tuple[str, ...], field: str, role: str) -> None:
    """The named columns are there, or a DataError naming the missing ones, the columns there are and the setting."""
    missing = [name for name in names if name not in available]
    if missing:
        raise DataError(
            f"{path}: no {role} column {', '.join(map(repr, missing))}; available columns: {', '.join(available)} "
            f"(set {field})"
        )


def require_unique_names(names: list[str], path: Path) -> None:
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    if repeated:
        listed = ", ".join(f"{name!r} ({names.count(name)} times)" for name in repeated)
        raise DataError(
            f"{path}: column names must be unique, but {listed} appear more than once; rename or drop the repeats "
            "(a repeated label column would leak the label into the features)"
        )


def require_comma_separated(names: Sequence[str], path: Path) -> None:
    """A CSV read as a single column whose name holds another separator was written with that separator."""
    if len(names) != 1:
        return
    header = names[0]
    for separator, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if separator in header:
            raise DataError(
                f"{path}: the header {shorten(header)} looks {name}-separated, but shrinkflow reads comma-separated "
                f"CSV; convert it, e.g. pandas.read_csv(path, sep={separator!r}).to_csv(new_path, index=False)"
            )


def require_numeric(feature_table: pd.DataFrame, path: Path, field: str = "") -> None:
    problems = []
    for name, column in feature_table.items():
        if pd.api.types.is_numeric_dtype(column):
            continue
        unconvertible = column.notna() & pd.to_numeric(column, errors="coerce").isna()
        example = (
            f"first bad value {column[unconvertible].iloc[0]!r}" if unconvertible.any() else f"dtype {column.dtype}"
        )
        problems.append(f"column {name!r} is not numeric ({example})")
    if problems:
        if field:
            raise DataError(f"{path}: {field}: {', '.join(problems)}; it must hold numbers")
        raise DataError(f"{path}: {', '.join(problems)}; features must be numbers, or drop the column")


class ValueCounts:
    """Counts, column by column, of missing (NaN), infinite and beyond-float32 values, over the chunks of a pass."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.missing = np.zeros(len(names), np.int64)
        self.infinite = np.zeros(len(names), np.int64)
        self.too_large = np.zeros(len(names), np.int64)
        self.example: dict[int, float] = {}  # a value beyond float32's range, by column

    def add(self, values: np.ndarray) -> None:
        """A chunk of rows (float32 or float64, rows x columns, in the order of `names`)."""
        finite = np.isfinite(values)
        if not finite.all():
            missing = np.isnan(values)
            self.missing += missing.sum(axis=0)
            self.infinite += (~finite & ~missing).sum(axis=0)
        if values.dtype.itemsize <= 4:
            return  # float32 values fit float32
        limit = float(np.finfo(np.float32).max)
        with np.errstate(invalid="ignore"):
            if finite.all() and max(float(values.max()), -float(values.min())) <= limit:
                return
            too_large = (np.abs(values) > limit) & finite
        counts = too_large.sum(axis=0)
        self.too_large += counts
        for column in np.flatnonzero(counts):
            self.example.setdefault(int(column), float(values[too_large[:, column], column][0]))

    def add_missing(self, column: int, count: int) -> None:
        """Missing values found another way (a null text or label)."""
        self.missing[column] += count

    def check(self, path: Path | str) -> None:
        """No missing or infinite values in any column, and every value within float32's range (the precision
        the model computes in: 1e308 would become infinity)."""
        for counts, kind, fix in (
            (self.missing, "missing (NaN) values", "fill or drop those rows"),
            (self.infinite, "infinite values", "replace or drop those rows"),
        ):
            bad = np.flatnonzero(counts)
            if bad.size:
                raise DataError(f"{path}: {kind} in column{'s' if bad.size > 1 else ''} {self._listed(counts)}; {fix}")
        bad = np.flatnonzero(self.too_large)
        if bad.size:
            columns = ", ".join(
                f"{self.names[i]!r} ({_rows(int(self.too_large[i]))}, e.g. {self.example[int(i)]:g})" for i in bad
            )
            raise DataError(
                f"{path}: values beyond float32's range (about ±3.4e38) in column{'s' if bad.size > 1 else ''} {columns}; "
                "the model computes in float32: rescale those columns or drop those rows"
            )

    def _listed(self, counts: np.ndarray) -> str:
        return ", ".join(f"{self.names[i]!r} ({_rows(int(counts[i]))})" for i in np.flatnonzero(counts))


def _rows(count: int) -> str:
    return f"{count} row{'s' if count > 1 else ''}"


def require_samples_per_class(y: np.ndarray, class_names: tuple[str, ...], source: str, after: str = "") -> None:
    counts = np.bincount(y, minlength=len(class_names))
    smallest = int(counts.argmin())
    if counts[smallest] < MIN_SAMPLES_PER_CLASS:
        raise DataError(
            f"{source}: class {class_names[smallest]!r} has only {counts[smallest]} sample(s){after}; every class "
            f"needs at least {MIN_SAMPLES_PER_CLASS} (one each for train, validation and test)"
        )


def require_finite_after_scaling(
    low: np.ndarray, high: np.ndarray, preprocessing: dict[str, Any], cfg: DataConfig, columns: tuple[str, ...] | None
) -> None:
    """Scaled features are finite: a range or variance too large for float32 would turn them into inf or NaN.
    `low` and `high` are each feature's smallest and largest value in any split."""
    offset, scale = np.asarray(preprocessing["offset"], np.float64), np.asarray(preprocessing["scale"], np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        extremes = np.stack([(low - offset) * scale, (high - offset) * scale]).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(extremes).all(axis=0))
    if bad.size:
        names = [repr(columns[i]) if columns else f"feature {i}" for i in bad[:5]]
        raise DataError(
            f"{cfg.source}: scaling {cfg.scaling!r} gives non-finite (inf or NaN) values in {', '.join(names)}"
            f"{' and more' if bad.size > 5 else ''}: the values span more than float32 can hold; rescale those "
            "columns, drop them, or use data.scaling: none"
        )


def require_varying_targets(std: np.ndarray, mean: np.ndarray, target_names: tuple[str, ...], source: str) -> None:
    """Each regression target varies in the training split: a constant one leaves nothing to learn, its
    standardization would divide by zero, and R2, which compares errors with the targets' variance, is undefined."""
    constant = np.flatnonzero(std == 0)
    if constant.size:
        listed = ", ".join(f"{target_names[i]!r} (always {mean[i]:g})" for i in constant)
        raise DataError(
            f"{source}: the regression target{'s' if constant.size > 1 else ''} {listed} "
            f"{'are' if constant.size > 1 else 'is'} constant in the training split: there is nothing to learn, and "
            "R2 is undefined; predict a column that varies (data.label_column, data.target_columns)"
        )
