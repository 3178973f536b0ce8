"""Checks of the data, each raising a DataError that names the file, the column or the setting, and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shrinkflow.core.config import DataConfig, shorten
from shrinkflow.core.data.dataset import Splits
from shrinkflow.core.errors import DataError

MIN_SAMPLES_PER_CLASS = 3  # one each for train, validation and test


def require_columns(table: pd.DataFrame, path: Path, names: tuple[str, ...], field: str, role: str) -> pd.DataFrame:
    """The named columns, or a DataError naming the missing ones, the columns there are and the setting."""
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise DataError(
            f"{path}: no {role} column {', '.join(map(repr, missing))}; available columns: {', '.join(table.columns)} "
            f"(set {field})"
        )
    return table[list(names)]


def require_unique_names(names: list[str], path: Path) -> None:
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    if repeated:
        listed = ", ".join(f"{name!r} ({names.count(name)} times)" for name in repeated)
        raise DataError(
            f"{path}: column names must be unique, but {listed} appear more than once; rename or drop the repeats "
            "(a repeated label column would leak the label into the features)"
        )


def require_comma_separated(table: pd.DataFrame, path: Path) -> None:
    """A CSV read as a single column whose name holds another separator was written with that separator."""
    if len(table.columns) != 1:
        return
    header = table.columns[0]
    for separator, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if separator in header:
            raise DataError(
                f"{path}: the header {shorten(header)} looks {name}-separated, but shrinkflow reads comma-separated "
                f"CSV; convert it, e.g. pandas.read_csv(path, sep={separator!r}).to_csv(new_path, index=False)"
            )


def require_float32_range(feature_table: pd.DataFrame, path: Path) -> None:
    """Features fit in float32, the precision the model computes in (1e308 would become infinity)."""
    limit = float(np.finfo(np.float32).max)
    too_large = (feature_table.abs() > limit).sum()
    bad = too_large[too_large > 0]
    if not bad.empty:
        columns = ", ".join(
            f"{name!r} ({count} row{'s' if count > 1 else ''}, e.g. {feature_table[name][feature_table[name].abs() > limit].iloc[0]:g})"
            for name, count in bad.items()
        )
        raise DataError(
            f"{path}: values beyond float32's range (about ±3.4e38) in column{'s' if len(bad) > 1 else ''} {columns}; "
            "the model computes in float32: rescale those columns or drop those rows"
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


def require_finite(table: pd.DataFrame, path: Path) -> None:
    """No missing or infinite values in any column, labels included."""
    missing = table.isna().sum()
    infinite = table.select_dtypes("number").isin([np.inf, -np.inf]).sum()
    for counts, kind, fix in (
        (missing, "missing (NaN) values", "fill or drop those rows"),
        (infinite, "infinite values", "replace or drop those rows"),
    ):
        bad = counts[counts > 0]
        if not bad.empty:
            columns = ", ".join(f"{name!r} ({count} row{'s' if count > 1 else ''})" for name, count in bad.items())
            raise DataError(f"{path}: {kind} in column{'s' if len(bad) > 1 else ''} {columns}; {fix}")


def require_samples_per_class(y: np.ndarray, class_names: tuple[str, ...], source: str, after: str = "") -> None:
    counts = np.bincount(y, minlength=len(class_names))
    smallest = int(counts.argmin())
    if counts[smallest] < MIN_SAMPLES_PER_CLASS:
        raise DataError(
            f"{source}: class {class_names[smallest]!r} has only {counts[smallest]} sample(s){after}; every class "
            f"needs at least {MIN_SAMPLES_PER_CLASS} (one each for train, validation and test)"
        )


def require_finite_after_scaling(splits: Splits, cfg: DataConfig, columns: tuple[str, ...] | None) -> None:
    """Scaled features are finite: a range or variance too large for float32 would turn them into inf or NaN."""
    x = np.concatenate([part.reshape(len(part), -1) for part in (splits.x_train, splits.x_val, splits.x_test)])
    bad = np.flatnonzero(~np.isfinite(x).all(axis=0))
    if bad.size:
        names = [repr(columns[i]) if columns else f"feature {i}" for i in bad[:5]]
        raise DataError(
            f"{cfg.source}: scaling {cfg.scaling!r} gives non-finite (inf or NaN) values in {', '.join(names)}"
            f"{' and more' if bad.size > 5 else ''}: the values span more than float32 can hold; rescale those "
            "columns, drop them, or use data.scaling: none"
        )
