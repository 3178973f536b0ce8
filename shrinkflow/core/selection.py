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


def select_variant(
    metrics_by_variant: Mapping[str, Mapping[str, float]], baseline_accuracy: float, policy: SelectConfig
) -> Selection:
    """The variant lowest on `policy.metric` among those within the allowed accuracy drop and size.

    Ties go to the more accurate variant, then to the name, so the choice is deterministic.
    """
    reasons: dict[str, str] = {}
    eligible: list[str] = []
    floor = baseline_accuracy - policy.max_accuracy_drop
    for variant, metrics in metrics_by_variant.items():
        if metrics["accuracy"] < floor - TOLERANCE:
            reasons[variant] = (
                f"accuracy {metrics['accuracy']:.4f} is below the baseline's {baseline_accuracy:.4f} "
                f"minus max_accuracy_drop {policy.max_accuracy_drop}"
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
        key=lambda v: (metrics_by_variant[v][policy.metric], -metrics_by_variant[v]["accuracy"], v),
    )
    reasons[chosen] = f"selected: lowest {policy.metric} ({metrics_by_variant[chosen][policy.metric]:g}) among eligible"
    return Selection(chosen, reasons)


def decide_promotion(candidate_accuracy: float, champion_accuracy: float | None, max_regression: float) -> Promotion:
    """Promote the first version outright; later ones only if not worse than the champion by more than allowed.

    Both accuracies must come from the same test set (this run's).
    """
    if champion_accuracy is None:
        return Promotion(True, "first champion")
    floor = champion_accuracy - max_regression
    if candidate_accuracy >= floor - TOLERANCE:
        return Promotion(
            True, f"accuracy {candidate_accuracy:.4f} >= champion's {champion_accuracy:.4f} minus {max_regression}"
        )
    return Promotion(
        False,
        f"accuracy {candidate_accuracy:.4f} < champion's {champion_accuracy:.4f} minus max_regression {max_regression}",
    )


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
