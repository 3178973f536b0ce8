"""Selection and the champion gate on hand-made metric tables."""

import pytest

from shrinkflow.core.config import SelectConfig
from shrinkflow.core.selection import decide_promotion, pareto_front, select_variant


def table(**variants: tuple[float, float]) -> dict[str, dict[str, float]]:
    """variant=(accuracy, gzip size); size_bytes is twice the gzip size, latency is 1 ms."""
    return {
        name: {"accuracy": acc, "gzip_size_bytes": size, "size_bytes": 2 * size, "latency_ms": 1.0, "loss": 0.1}
        for name, (acc, size) in variants.items()
    }


def test_the_smallest_variant_within_the_allowed_drop_is_selected() -> None:
    metrics = table(baseline=(0.990, 1000), pruned=(0.988, 300), **{"pruned-int8": (0.986, 80), "baseline-int8": (0.970, 250)})
    selection = select_variant(metrics, {"accuracy": 0.990}, SelectConfig(max_quality_drop=0.005))
    assert selection.selected == "pruned-int8"
    assert selection.reasons["baseline-int8"].startswith("accuracy 0.9700 is worse than the baseline")
    assert selection.reasons["pruned"] == "eligible"
    assert selection.reasons["pruned-int8"].startswith("selected")


def test_a_drop_exactly_at_the_limit_is_allowed() -> None:
    selection = select_variant(table(baseline=(0.99, 1000), small=(0.985, 10)), {"accuracy": 0.99}, SelectConfig(max_quality_drop=0.005))
    assert selection.selected == "small"


def test_size_cap_and_other_metrics() -> None:
    metrics = table(baseline=(0.99, 1000), mid=(0.99, 400), tiny=(0.99, 100))
    metrics["tiny"]["latency_ms"] = 5.0
    assert select_variant(metrics, {"accuracy": 0.99}, SelectConfig(metric="latency_ms")).selected == "baseline"  # tie -> name order
    assert select_variant(metrics, {"accuracy": 0.99}, SelectConfig(max_size_bytes=250)).selected == "tiny"
    # Serving batches: the fastest at 64 samples per call, which need not be the fastest at one.
    for name, batch_ms in (("baseline", 3.0), ("mid", 0.5), ("tiny", 0.9)):
        metrics[name]["batch64_latency_ms"] = batch_ms
    assert select_variant(metrics, {"accuracy": 0.99}, SelectConfig(metric="batch64_latency_ms")).selected == "mid"
    capped = select_variant(metrics, {"accuracy": 0.99}, SelectConfig(max_size_bytes=100))
    assert capped.selected is None
    assert capped.reasons["tiny"] == "size 200 bytes exceeds max_size_bytes 100"


def test_ties_prefer_the_more_accurate_variant() -> None:
    metrics = table(a=(0.97, 100), b=(0.98, 100))
    assert select_variant(metrics, {"accuracy": 0.98}, SelectConfig(max_quality_drop=0.05)).selected == "b"


def test_first_champion_is_promoted() -> None:
    assert decide_promotion(0.5, None, 0.0).promote


@pytest.mark.parametrize(
    ("candidate", "champion", "allowed", "promote"),
    [(0.99, 0.98, 0.0, True), (0.975, 0.98, 0.005, True), (0.97, 0.98, 0.005, False), (0.98, 0.98, 0.0, True)],
)
def test_the_gate_against_an_existing_champion(candidate: float, champion: float, allowed: float, promote: bool) -> None:
    decision = decide_promotion(candidate, champion, allowed)
    assert decision.promote is promote
    assert ("champion's" in decision.reason) and (("worse" in decision.reason) is not promote)


def test_pareto_front() -> None:
    points = {"baseline": (1000, 0.99), "pruned": (300, 0.99), "int8": (80, 0.98), "bad": (400, 0.97), "tiny": (10, 0.5)}
    assert pareto_front(points) == {"pruned", "int8", "tiny"}
