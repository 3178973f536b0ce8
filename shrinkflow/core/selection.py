"""Which variant ships, and whether it may become the registry's champion (the gate).

Pure functions over metric tables, so every rule is testable without training anything. The selection decides on
the validation split only (val_<metric> and the paired val_quality_delta of shrinkflow.core.comparison); the test
split is reported once, after the choice, so the reported quality of what ships carries no selection bias.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from shrinkflow.core.config import SelectConfig
from shrinkflow.core.statistics import PairedResult

# Metric values go through float32 kernels and JSON; two accuracies this close are equal.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Selection:
    """The shipped variant (None when no variant passes); for every variant, why or why not; the rule that decided;
    and a note when the validation split is too small for the budget to let anything but the baseline through."""

    selected: str | None
    reasons: dict[str, str]
    rule: str = ""
    note: str | None = None

    @property
    def eligible(self) -> tuple[str, ...]:
        """The variants the rule let through (the selected one among them)."""
        return tuple(name for name, reason in self.reasons.items() if reason.startswith(("eligible", "selected")))


@dataclass(frozen=True)
class Promotion:
    """Whether the new version becomes the champion, why, and the paired test the decision rests on (None for the
    first champion or the point rule)."""

    promote: bool
    reason: str
    test: PairedResult | None = None


@dataclass(frozen=True)
class Quality:
    """The metric a task is judged on (SelectConfig.quality), and how a budget applies to it: accuracy and R2
    may drop by so many points; RMSE may grow by a share of the reference's."""

    metric: str

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "rmse"

    def worst_allowed(self, reference: float, budget: float) -> float:
        """The worst value still within `budget` of `reference`."""
        return reference - budget if self.higher_is_better else reference * (1 + budget)

    def within(self, value: float, reference: float, budget: float) -> bool:
        return self.meets(value, self.worst_allowed(reference, budget))

    def meets(self, value: float, floor: float) -> bool:
        """Whether `value` is no worse than `floor` (the worst allowed value)."""
        return value >= floor - TOLERANCE if self.higher_is_better else value <= floor + TOLERANCE

    def shortfall(self, value: float, floor: float) -> float:
        """How far `value` is on the wrong side of `floor` (<= 0: it meets it)."""
        return floor - value if self.higher_is_better else value - floor

    def better_first(self, value: float) -> float:
        """A sort key that puts better values first."""
        return -value if self.higher_is_better else value

    def describe_budget(self, budget: float) -> str:
        return f"minus {budget}" if self.higher_is_better else f"plus {budget:.0%}"

    def delta_within(self, delta: float, reference: float, budget: float) -> bool:
        """Whether a difference from `reference` (value minus reference) stays within `budget` of it."""
        return self.meets(reference + delta, self.worst_allowed(reference, budget))

    def worse_end(self, low: float, high: float) -> float:
        """The worse end of an interval of differences (value minus reference)."""
        return low if self.higher_is_better else high


def select_variant(
    metrics_by_variant: Mapping[str, Mapping[str, float]], baseline_metrics: Mapping[str, float], policy: SelectConfig,
    validation_rows: int,
) -> Selection:
    """The variant lowest on `policy.metric` among those within the quality budget and size, decided on the
    validation split: with `policy.confidence`, a variant is eligible when the worse end of the interval of its
    difference from the baseline, paired over the `validation_rows` rows (val_quality_delta_ci_low / _high),
    stays within policy.max_quality_drop; with none, when its measured difference does (the point rule).

    Ties go to the better variant on the validation quality, then to the name, so the choice is deterministic.
    """
    quality = Quality(policy.quality)
    metric = f"val_{policy.quality}"
    reference = baseline_metrics[metric]
    budget = quality.describe_budget(policy.max_quality_drop)
    reasons: dict[str, str] = {}
    eligible: list[str] = []
    for variant, metrics in metrics_by_variant.items():
        delta = metrics["val_quality_delta"]
        judged = delta if policy.confidence is None else quality.worse_end(
            metrics["val_quality_delta_ci_low"], metrics["val_quality_delta_ci_high"]
        )
        measured = f"validation {policy.quality} {metrics[metric]:.4f} ({delta:+.4f} against the baseline"
        if policy.confidence is not None:
            measured += (
                f", {policy.confidence:.0%} paired interval {metrics['val_quality_delta_ci_low']:+.4f} to "
                f"{metrics['val_quality_delta_ci_high']:+.4f}"
            )
        measured += ")"
        if not quality.delta_within(judged, reference, policy.max_quality_drop):
            why = "is" if policy.confidence is None else "can be, by the worse end of its interval,"
            reasons[variant] = f"{measured} {why} worse than the baseline's {budget} (max_quality_drop)"
        elif policy.max_size_bytes is not None and metrics["size_bytes"] > policy.max_size_bytes:
            reasons[variant] = f"size {int(metrics['size_bytes'])} bytes exceeds max_size_bytes {policy.max_size_bytes}"
        else:
            eligible.append(variant)
            reasons[variant] = f"eligible: {measured}"
    rule = selection_rule(policy, validation_rows)
    note = small_split_note(policy, validation_rows, [metrics_by_variant[v] for v in eligible])
    if not eligible:
        return Selection(None, reasons, rule, note)
    chosen = min(
        eligible, key=lambda v: (metrics_by_variant[v][policy.metric], quality.better_first(metrics_by_variant[v][metric]), v)
    )
    reasons[chosen] = f"selected: lowest {policy.metric} ({metrics_by_variant[chosen][policy.metric]:g}) among eligible; " + (
        reasons[chosen].removeprefix("eligible: ")
    )
    return Selection(chosen, reasons, rule, note)


def selection_rule(policy: SelectConfig, validation_rows: int) -> str:
    """The rule that decides, in words, for the log."""
    budget = f"{policy.max_quality_drop:g} (max_quality_drop)"
    if policy.confidence is None:
        return (
            f"point rule (select.confidence: none): eligible when the validation {policy.quality} is within {budget} "
            f"of the baseline's on the {validation_rows} validation rows"
        )
    return (
        f"eligible when the worse end of the {policy.confidence:.0%} interval of the {policy.quality} difference from "
        f"the baseline, paired over the {validation_rows} validation rows, is within {budget}"
    )


def small_split_note(policy: SelectConfig, validation_rows: int, eligible: list[Mapping[str, float]]) -> str | None:
    """Say so when the validation split is too small for the budget: on accuracy, a variant that is wrong on k rows
    the baseline gets right (and right on none it gets wrong) has a paired interval reaching -k/rows; when that
    exceeds the budget at k = 1, only the baseline and files that predict like it on every row can pass."""
    if policy.confidence is None or policy.quality != "accuracy" or validation_rows == 0:
        return None
    if math.floor(policy.max_quality_drop * validation_rows + 1e-9) >= 1:
        if eligible and all(metrics.get("val_rows_changed", 1) == 0 for metrics in eligible):
            return (
                "only the baseline and variants that predict exactly like it on every validation row passed the "
                "selection rule"
            )
        return None
    return (
        f"with {validation_rows} validation rows, a variant wrong on even one row the baseline gets right cannot be "
        f"shown within max_quality_drop {policy.max_quality_drop:g} at {policy.confidence:.0%} confidence: only the "
        "baseline and files that predict like it on every validation row can pass; use more data, a larger "
        "data.validation_fraction or max_quality_drop, or select.confidence: none"
    )


def resolution_warning(baseline: Mapping[str, float], metric: str, test_rows: int, budget: float) -> str | None:
    """A warning when the test split is too small to resolve the budget: the half-width of the baseline's test
    interval (at the quality the variants are expected to have, the baseline's) is wider than the budget
    (max_quality_drop; for RMSE, relative to the baseline's RMSE)."""
    low, high = baseline.get(f"{metric}_ci_low"), baseline.get(f"{metric}_ci_high")
    if low is None or high is None:
        return None
    half_width = (high - low) / 2
    relative = half_width / baseline[metric] if metric == "rmse" and baseline[metric] else half_width
    if relative <= budget:
        return None
    shown = f"{relative:.1%} of it" if metric == "rmse" else f"±{half_width:.4f}"
    return (
        f"the test split ({test_rows} rows) is too small to resolve select.max_quality_drop {budget:g}: the baseline's "
        f"{metric} {baseline[metric]:.4f} has a 95 % interval of {shown}, so the reported quality of any variant is "
        "no more precise than that; use a larger data.test_fraction or more data"
    )


def decide_promotion(
    candidate: float, champion: float | None, max_regression: float, quality: Quality = Quality("accuracy"),
    test: PairedResult | None = None, confidence: float | None = None,
) -> Promotion:
    """Promote the first version outright. A later one, with a paired `test` of it against the champion on this
    run's test rows and a `confidence`, unless the test shows it worse than the champion by more than
    `max_regression`: for accuracy, McNemar's test significant (p below 1 - confidence) and the difference beyond
    the budget; for RMSE and R2, the whole paired interval beyond it. Without a test or a confidence, unless its
    measured quality is beyond the budget (the point rule). Both qualities must come from the same test rows."""
    name = quality.metric
    if champion is None:
        return Promotion(True, "first champion")
    budget = quality.describe_budget(max_regression)
    measured = f"{name} {candidate:.4f} against the champion's {champion:.4f} on this run's test rows"
    if test is None or confidence is None:
        if quality.within(candidate, champion, max_regression):
            return Promotion(True, f"{measured}: within {budget} (point rule)", test)
        return Promotion(False, f"{measured}: worse than {budget} (max_regression; point rule)", test)
    allowed = quality.worst_allowed(champion, max_regression) - champion  # the difference still allowed
    if name == "accuracy":
        assert test.p_value is not None
        evidence = f"{test.test}: p = {test.p_value:.3g}, difference {test.difference:+.4f}"
        worse = test.p_value < 1 - confidence and not quality.delta_within(test.difference, champion, max_regression)
    else:
        evidence = f"{test.test}: difference {test.difference:+.4g}, {confidence:.0%} interval {test.interval.low:+.4g} to {test.interval.high:+.4g}"
        best_end = test.interval.high if quality.higher_is_better else test.interval.low
        worse = not quality.delta_within(best_end, champion, max_regression)
    if worse:
        return Promotion(False, f"{measured}: shown worse than {budget} ({evidence}; max_regression {allowed:+.4g})", test)
    return Promotion(True, f"{measured}: not shown worse than {budget} ({evidence})", test)


def pareto_front(points: Mapping[str, tuple[float, float]]) -> set[str]:
    """Variants not dominated on (size, accuracy): nothing else is as small and as accurate, and better in one."""
    front = set()
    for name, (size, accuracy) in points.items():
        dominated = any(
            other_size <= size and other_accuracy >= accuracy and (other_size < size or other_accuracy > accuracy)
            for other, (other_size, other_accuracy) in points.items()
            if other != name
        )
        if not dominated:
            front.add(name)
    return front
