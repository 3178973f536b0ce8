"""How sure a measured quality is: intervals over the rows a metric was measured on, intervals of the difference
between two models measured on the same rows (paired), and the paired test of the champion gate.

- Accuracy: a Wilson score interval (a proportion of correct rows).
- Every other metric (F1, RMSE, MAE, R2): a percentile bootstrap over the rows (scipy.stats.bootstrap).
- The paired difference of two accuracies: conditional on the rows where exactly one of the two is right (the
  discordant rows, the only ones that move the difference), the share the first model wins has a Wilson interval;
  scaled by the discordant share, that is an interval of the difference. It is the interval that goes with
  McNemar's test (the exact binomial test on the same discordant rows), so two models that disagree on 3 of 2,000
  rows get a difference within about a tenth of a point, and two that predict identically a difference of exactly 0.
- The paired difference of any other metric: a bootstrap that resamples the same rows for both models.

Every bootstrap uses BOOTSTRAP_RESAMPLES resamples from a fixed seed, so a run's intervals repeat exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# The confidence of every interval a run reports (the selection rule's own is select.confidence).
REPORTED_CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# Resamples per vectorized batch: bounds the memory of a bootstrap over a large split (batch x rows values).
BOOTSTRAP_BATCH = 50
# The metrics an interval is computed for: the quality metrics and F1 (loss and ROC AUC get none).
INTERVAL_METRICS = ("accuracy", "f1_macro", "rmse", "mae", "r2")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of a challenger with a reference on the same rows: the difference of a metric
    (challenger minus reference), its interval, and the test behind it (with its p-value where it has one)."""

    test: str
    difference: float
    interval: Interval
    p_value: float | None = None


@dataclass(frozen=True)
class PairedTest:
    """Two models' predictions on the same rows: how many rows only the first (`first_only`) or only the second
    (`second_only`) got right, McNemar's exact two-sided p-value, and the interval of the accuracy difference
    (first minus second)."""

    first_only: int
    second_only: int
    rows: int
    p_value: float
    difference: Interval

    @property
    def discordant(self) -> int:
        return self.first_only + self.second_only


def wilson(successes: int, trials: int, confidence: float) -> Interval:
    """The Wilson score interval of a proportion; (0, 1) when there are no trials."""
    if trials == 0:
        return Interval(0.0, 1.0)
    from scipy.stats import binomtest

    found = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(float(found.low), float(found.high))


def mcnemar(first_correct: np.ndarray, second_correct: np.ndarray, confidence: float) -> PairedTest:
    """McNemar's exact test of two models on the same rows, and the interval of their accuracy difference."""
    from scipy.stats import binomtest

    first_only = int(np.count_nonzero(first_correct & ~second_correct))
    second_only = int(np.count_nonzero(second_correct & ~first_correct))
    discordant, rows = first_only + second_only, len(first_correct)
    if discordant == 0:  # they agree on every row: the difference on these rows is exactly 0
        return PairedTest(0, 0, rows, 1.0, Interval(0.0, 0.0))
    share = wilson(first_only, discordant, confidence)
    scale = discordant / rows
    p_value = float(binomtest(first_only, discordant, 0.5).pvalue)
    return PairedTest(first_only, second_only, rows, p_value, Interval((2 * share.low - 1) * scale, (2 * share.high - 1) * scale))


def metric_interval(
    metric: str, y_true: np.ndarray, predicted: np.ndarray, confidence: float, num_classes: int = 0
) -> Interval:
    """The interval of `metric` of `predicted` (class indices, or predictions in the targets' units) on these rows."""
    if metric == "accuracy":
        return wilson(int(np.count_nonzero(predicted == y_true)), len(y_true), confidence)
    statistic = row_statistic(metric, num_classes)
    return _bootstrap(lambda rows: statistic(y_true[rows], predicted[rows]), len(y_true), confidence)


def paired_interval(
    metric: str, y_true: np.ndarray, first: np.ndarray, second: np.ndarray, confidence: float, num_classes: int = 0
) -> Interval:
    """The interval of `metric` of `first` minus that of `second`, both measured on the same rows."""
    if metric == "accuracy":
        return mcnemar(first == y_true, second == y_true, confidence).difference
    if np.array_equal(first, second):
        return Interval(0.0, 0.0)
    statistic = row_statistic(metric, num_classes)
    return _bootstrap(
        lambda rows: statistic(y_true[rows], first[rows]) - statistic(y_true[rows], second[rows]), len(y_true), confidence
    )


def row_statistic(metric: str, num_classes: int = 0) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """`metric` of (truth, predicted) for a batch of resamples at once: arrays of shape (resamples, rows) of class
    indices, or (resamples, rows[, targets]) of regression values (averaged over targets as scikit-learn does)."""
    if metric == "accuracy":
        return lambda truth, predicted: np.mean(truth == predicted, axis=1)
    if metric == "f1_macro":
        return lambda truth, predicted: _f1_macro(truth, predicted, num_classes)
    if metric == "rmse":
        return lambda truth, predicted: np.sqrt(np.mean((truth - predicted) ** 2, axis=_beyond_resamples(truth)))
    if metric == "mae":
        return lambda truth, predicted: np.mean(np.abs(truth - predicted), axis=_beyond_resamples(truth))
    if metric == "r2":
        return _r2
    raise ValueError(f"no interval for the metric {metric!r}; expected one of {', '.join(INTERVAL_METRICS)}")


def _bootstrap(statistic: Callable[[np.ndarray], np.ndarray], rows: int, confidence: float) -> Interval:
    """A percentile bootstrap over `rows` rows (scipy.stats.bootstrap, from a fixed seed): `statistic` takes a
    (resamples, rows) array of resampled row indices, the same rows for every model compared (paired)."""
    from scipy.stats import bootstrap

    if rows < 2:
        return Interval(-math.inf, math.inf)
    result = bootstrap(
        (np.arange(rows),), lambda indices, axis: statistic(np.atleast_2d(indices)), vectorized=True,
        n_resamples=BOOTSTRAP_RESAMPLES, batch=BOOTSTRAP_BATCH, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):  # every resample gave the same value
        value = float(statistic(np.arange(rows)[None, :])[0])
        return Interval(value, value)
    return Interval(low, high)


def _beyond_resamples(values: np.ndarray) -> tuple[int, ...]:
    """The axes of rows (and targets) of a (resamples, rows[, targets]) array."""
    return tuple(range(1, values.ndim))


def _r2(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """R2 of each target, averaged over targets, for each resample."""
    residual = np.sum((truth - predicted) ** 2, axis=1)
    total = np.sum((truth - truth.mean(axis=1, keepdims=True)) ** 2, axis=1)
    r2 = 1 - np.divide(residual, total, out=np.full_like(residual, np.inf, dtype=np.float64), where=total > 0)
    return r2.reshape(len(r2), -1).mean(axis=1)


def _f1_macro(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro-averaged F1 over `num_classes` classes (as scikit-learn's with zero_division=0), for each resample: the
    confusion counts of every resample come from one bincount over (resample, truth, predicted)."""
    resamples = len(truth)
    codes = (np.arange(resamples)[:, None] * num_classes + truth.astype(np.int64)) * num_classes + predicted.astype(np.int64)
    confusion = np.bincount(codes.ravel(), minlength=resamples * num_classes**2).reshape(resamples, num_classes, num_classes)
    true_positive = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    denominator = (confusion.sum(axis=1) + confusion.sum(axis=2)).astype(np.float64)
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return f1.mean(axis=1)
