"""Two models compared row by row on the same rows: a variant against the run's baseline (on the validation rows the
selection decides on, and on the test rows the run reports), and a new version against the champion (the gate).

The rows' predictions are the ones each variant's evaluation kept (shrinkflow.core.evaluation); the intervals are
shrinkflow.core.statistics'. Paired, they are much tighter than the two models' own intervals: what moves a
difference is only the rows where the two disagree.
"""

from __future__ import annotations

import numpy as np

from shrinkflow.core.data import DatasetRef, load_splits
from shrinkflow.core.evaluation import EVALUATED_SPLITS, load_row_predictions, true_rows
from shrinkflow.core.selection import Quality
from shrinkflow.core.statistics import REPORTED_CONFIDENCE, PairedResult, mcnemar, paired_interval, row_statistic
from shrinkflow.core.variants import Variant

# The metrics compare_to_baseline adds to a variant's: its quality minus the baseline's on the test rows (with a
# REPORTED_CONFIDENCE interval) and on the validation rows (with an interval at the selection's confidence), and
# on how many validation rows its prediction differs from the baseline's.
DELTA = "quality_delta"
CHANGED_ROWS = "val_rows_changed"


def split_truth(dataset: DatasetRef) -> dict[str, np.ndarray]:
    """The stored labels of the evaluated splits, as the row predictions are kept (class indices, or targets in
    their own units)."""
    splits = load_splits(dataset)
    return {"validation": true_rows(dataset, splits.y_val), "test": true_rows(dataset, splits.y_test)}


def compare_to_baseline(
    variant: Variant, baseline: Variant, dataset: DatasetRef, truth: dict[str, np.ndarray], metric: str,
    confidence: float | None,
) -> dict[str, float]:
    """The variant's paired differences from the baseline (see DELTA): <prefix>quality_delta with
    <prefix>quality_delta_ci_low and _ci_high for the test rows (no prefix) and the validation rows (val_)."""
    compared: dict[str, float] = {}
    for split, prefix in EVALUATED_SPLITS.items():
        mine = load_row_predictions(variant.predictions, split)
        theirs = load_row_predictions(baseline.predictions, split)
        level = REPORTED_CONFIDENCE if split == "test" or confidence is None else confidence
        interval = paired_interval(metric, truth[split], mine, theirs, level, dataset.num_classes)
        compared |= {
            f"{prefix}{DELTA}": variant.metrics[f"{prefix}{metric}"] - baseline.metrics[f"{prefix}{metric}"],
            f"{prefix}{DELTA}_ci_low": interval.low,
            f"{prefix}{DELTA}_ci_high": interval.high,
        }
        if split == "validation":
            compared[CHANGED_ROWS] = float(np.count_nonzero(_differ(mine, theirs)))
    return compared


def paired_test(
    y_true: np.ndarray, challenger: np.ndarray, reference: np.ndarray, quality: Quality, confidence: float,
    num_classes: int = 0,
) -> PairedResult:
    """The champion gate's test of a challenger against the reference on the same rows: McNemar's exact test for
    accuracy, a paired bootstrap interval for RMSE and R2."""
    statistic = row_statistic(quality.metric, num_classes)
    difference = float(statistic(y_true[None], challenger[None])[0] - statistic(y_true[None], reference[None])[0])
    if quality.metric == "accuracy":
        test = mcnemar(challenger == y_true, reference == y_true, confidence)
        return PairedResult("McNemar's exact test", difference, test.difference, test.p_value)
    interval = paired_interval(quality.metric, y_true, challenger, reference, confidence, num_classes)
    return PairedResult("paired bootstrap", difference, interval)


def _differ(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Rows where two predictions differ (any target of a regression row)."""
    different = first != second
    return different.reshape(len(different), -1).any(axis=1)
