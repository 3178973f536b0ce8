"""Which variant ships, and whether it may become the registry's champion (the gate).

Pure functions over metric tables, so every rule is testable without training anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shrinkflow.core.config import SelectConfig

# Metric values go through float32 kernels and JSON; two accuracies this close are equal.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Selection:
    """The shipped variant (None when no variant passes) and, for every variant, why or why not."""

    selected: str | None
    reasons: dict[str, str]


@dataclass(frozen=True)
class Promotion:
    """Whether the new version becomes the champion, and why."""

    promote: bool
    reason: str


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


def select_variant(
    metrics_by_variant: Mapping[str, Mapping[str, float]], baseline_metrics: Mapping[str, float], policy: SelectConfig
) -> Selection:
    """The variant lowest on `policy.metric` among those within the quality budget (policy.quality,
    policy.max_quality_drop against the baseline) and size.

    Ties go to the better variant on the quality metric, then to the name, so the choice is deterministic.
    """
    quality = Quality(policy.quality)
    reference = baseline_metrics[policy.quality]
    reasons: dict[str, str] = {}
    eligible: list[str] = []
    for variant, metrics in metrics_by_variant.items():
        if not quality.within(metrics[policy.quality], reference, policy.max_quality_drop):
            reasons[variant] = (
                f"{policy.quality} {metrics[policy.quality]:.4f} is worse than the baseline's {reference:.4f} "
                f"{quality.describe_budget(policy.max_quality_drop)} (max_quality_drop)"
            )
        elif policy.max_size_bytes is not None and metrics["size_bytes"] > policy.max_size_bytes:
            reasons[variant] = f"size {int(metrics['size_bytes'])} bytes exceeds max_size_bytes {policy.max_size_bytes}"
        else:
            eligible.append(variant)
            reasons[variant] = "eligible"
    if not eligible:
        return Selection(None, reasons)
    chosen = min(
        eligible,
        key=lambda v: (metrics_by_variant[v][policy.metric], quality.better_first(metrics_by_variant[v][policy.quality]), v),
    )
    reasons[chosen] = f"selected: lowest {policy.metric} ({metrics_by_variant[chosen][policy.metric]:g}) among eligible"
    return Selection(chosen, reasons)


def decide_promotion(
    candidate: float, champion: float | None, max_regression: float, quality: Quality = Quality("accuracy")
) -> Promotion:
    """Promote the first version outright; later ones only if not worse than the champion by more than allowed
    on the quality metric. Both values must come from the same test set (this run's)."""
    name = quality.metric
    if champion is None:
        return Promotion(True, "first champion")
    budget = quality.describe_budget(max_regression)
    if quality.within(candidate, champion, max_regression):
        return Promotion(True, f"{name} {candidate:.4f} is within the champion's {champion:.4f} {budget}")
    return Promotion(False, f"{name} {candidate:.4f} is worse than the champion's {champion:.4f} {budget} (max_regression)")


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
