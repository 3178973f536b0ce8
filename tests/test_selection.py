"""Selection and the champion gate: on hand-made metric tables (the rules), and on constructed predictions (the
intervals and paired tests they rest on, checked against known values)."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkflow.core.comparison import paired_test
from shrinkflow.core.config import SelectConfig
from shrinkflow.core.selection import Quality, decide_promotion, pareto_front, resolution_warning, select_variant
from shrinkflow.core.statistics import mcnemar, metric_interval, paired_interval, wilson
from shrinkflow.core.summary import SummaryRow, compact_rows

POINT = {"confidence": None}


def table(reference: float = 0.99, **variants: tuple[float, float, float, float]) -> dict[str, dict[str, float]]:
    """variant=(validation accuracy, paired low, paired high, gzip size): its validation difference from the
    baseline's `reference` accuracy and that difference's paired interval; size_bytes is twice the gzip size."""
    return {
        name: {
            "val_accuracy": acc, "val_quality_delta": acc - reference, "val_quality_delta_ci_low": low,
            "val_quality_delta_ci_high": high, "accuracy": acc, "gzip_size_bytes": size, "size_bytes": 2 * size,
            "latency_ms": 1.0,
        }
        for name, (acc, low, high, size) in variants.items()
    }


def baseline_row(accuracy: float = 0.99) -> dict[str, float]:
    return {"val_accuracy": accuracy, "accuracy": accuracy}


# --- the selection rule ------------------------------------------------------------------------------------------


def test_the_smallest_variant_whose_paired_validation_drop_stays_within_the_budget_is_selected() -> None:
    metrics = table(
        baseline=(0.99, 0.0, 0.0, 1000), pruned=(0.988, -0.004, 0.0, 300), **{"pruned-int8": (0.987, -0.006, 0.0, 80)},
        **{"baseline-int8": (0.989, -0.003, 0.001, 250)},
    )
    selection = select_variant(metrics, baseline_row(), SelectConfig(max_quality_drop=0.005), validation_rows=1000)
    assert selection.selected == "baseline-int8"  # pruned-int8 is smaller, but its interval reaches -0.006
    assert "can be, by the worse end of its interval, worse than the baseline's minus 0.005" in selection.reasons["pruned-int8"]
    assert selection.reasons["pruned"].startswith("eligible: validation accuracy 0.9880 (-0.0020 against the baseline")
    assert "paired over the 1000 validation rows" in selection.rule and "95%" in selection.rule


def test_the_point_rule_decides_on_the_measured_validation_difference() -> None:
    metrics = table(baseline=(0.99, 0.0, 0.0, 1000), **{"pruned-int8": (0.986, -0.02, 0.0, 80)})
    selection = select_variant(metrics, baseline_row(), SelectConfig(max_quality_drop=0.005, **POINT), 1000)
    assert selection.selected == "pruned-int8" and selection.rule.startswith("point rule")


def test_the_selection_reads_validation_only_where_test_would_choose_otherwise() -> None:
    """On test, `b` looks best and `a` beyond the budget; on validation it is the other way round: `a` ships."""
    metrics = table(a=(0.99, -0.001, 0.0, 100), b=(0.96, -0.05, -0.02, 90))
    metrics["a"]["accuracy"], metrics["b"]["accuracy"] = 0.95, 0.995  # the test figures, deliberately reversed
    selection = select_variant(metrics, baseline_row(), SelectConfig(max_quality_drop=0.005), 1000)
    assert selection.selected == "a"


def test_size_cap_and_other_metrics() -> None:
    metrics = table(baseline=(0.99, 0, 0, 1000), mid=(0.99, 0, 0, 400), tiny=(0.99, 0, 0, 100))
    metrics["tiny"]["latency_ms"] = 5.0
    assert select_variant(metrics, baseline_row(), SelectConfig(metric="latency_ms"), 100).selected == "baseline"  # tie -> name
    assert select_variant(metrics, baseline_row(), SelectConfig(max_size_bytes=250), 100).selected == "tiny"
    # Serving batches: the fastest at 64 samples per call, which need not be the fastest at one.
    for name, batch_ms in (("baseline", 3.0), ("mid", 0.5), ("tiny", 0.9)):
        metrics[name]["batch64_latency_ms"] = batch_ms
    assert select_variant(metrics, baseline_row(), SelectConfig(metric="batch64_latency_ms"), 100).selected == "mid"
    capped = select_variant(metrics, baseline_row(), SelectConfig(max_size_bytes=100), 100)
    assert capped.selected is None
    assert capped.reasons["tiny"] == "size 200 bytes exceeds max_size_bytes 100"


def test_ties_prefer_the_more_accurate_variant_on_validation() -> None:
    metrics = table(reference=0.98, a=(0.97, -0.01, 0.0, 100), b=(0.98, 0.0, 0.0, 100))
    assert select_variant(metrics, baseline_row(0.98), SelectConfig(max_quality_drop=0.05), 100).selected == "b"


def test_a_validation_split_too_small_for_the_budget_is_said_so() -> None:
    metrics = table(baseline=(0.99, 0, 0, 1000))
    metrics["baseline"]["val_rows_changed"] = 0
    tiny = select_variant(metrics, baseline_row(), SelectConfig(max_quality_drop=0.005), validation_rows=180)
    assert tiny.note is not None and "with 180 validation rows" in tiny.note and "only the baseline" in tiny.note
    assert select_variant(metrics, baseline_row(), SelectConfig(max_quality_drop=0.005), 1000).note is not None  # only identical
    enough = table(baseline=(0.99, 0, 0, 1000), small=(0.989, -0.003, 0.001, 10))
    assert select_variant(enough, baseline_row(), SelectConfig(max_quality_drop=0.005), 1000).note is None


def test_rmse_budgets_are_shares_of_the_baseline() -> None:
    rmse = {
        "baseline": {"val_rmse": 50.0, "val_quality_delta": 0.0, "val_quality_delta_ci_low": 0.0, "val_quality_delta_ci_high": 0.0,
                     "gzip_size_bytes": 100, "size_bytes": 200},
        "small": {"val_rmse": 51.0, "val_quality_delta": 1.0, "val_quality_delta_ci_low": 0.2, "val_quality_delta_ci_high": 2.4,
                  "gzip_size_bytes": 10, "size_bytes": 20},
    }
    within = select_variant(rmse, {"val_rmse": 50.0}, SelectConfig(quality="rmse", max_quality_drop=0.05), 100)
    assert within.selected == "small"  # 2.4 <= 5 % of 50
    beyond = select_variant(rmse, {"val_rmse": 50.0}, SelectConfig(quality="rmse", max_quality_drop=0.04), 100)
    assert beyond.selected == "baseline"  # 2.4 > 2.0


# --- the intervals -----------------------------------------------------------------------------------------------


def test_wilson_matches_the_textbook_values() -> None:
    # Wilson (1927) / Newcombe (1998): 81 of 263, 95 %: 0.2553 to 0.3662.
    interval = wilson(81, 263, 0.95)
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.2553, 0.3662)
    assert wilson(0, 10, 0.95).low == 0.0
    # At 98 % on 2,000 rows the interval is about +-0.6 points, as the goal says.
    assert wilson(1960, 2000, 0.95).half_width == pytest.approx(0.0061, abs=0.0002)


def test_a_paired_difference_is_tight_where_each_accuracy_is_not() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, 2000)
    reference = truth.copy()
    reference[:40] = (reference[:40] + 1) % 10  # 98.0 % accurate
    challenger = reference.copy()
    challenger[100:103] = (challenger[100:103] + 1) % 10  # wrong on 3 more rows: 97.85 %
    own = metric_interval("accuracy", truth, challenger, 0.95)
    paired = paired_interval("accuracy", truth, challenger, reference, 0.95)
    assert own.half_width > 0.005  # about +-0.6 points on its own
    assert -0.0016 < paired.low < paired.high < 0.0005  # but the three rows are all it can have lost
    assert paired_interval("accuracy", truth, reference, reference, 0.95) == paired_interval("rmse", truth * 1.0, truth * 1.0, truth * 1.0, 0.95)
    assert paired_interval("accuracy", truth, reference, reference, 0.95).low == 0.0


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_rows() -> None:
    first = np.array([True] * 90 + [True] * 8 + [False] * 2)
    second = np.array([True] * 90 + [False] * 8 + [True] * 2)
    test = mcnemar(first, second, 0.95)
    assert (test.first_only, test.second_only, test.rows) == (8, 2, 100)
    assert test.p_value == pytest.approx(0.109375)  # 2 * P(X <= 2), X ~ Binomial(10, 1/2)
    assert test.difference.low < 0.06 < test.difference.high


def test_bootstrap_intervals_cover_the_metric_and_repeat_exactly() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(400, 2))
    predicted = truth + rng.normal(scale=0.5, size=(400, 2))
    rmse = metric_interval("rmse", truth, predicted, 0.95)
    measured = float(np.sqrt(np.mean((truth - predicted) ** 2)))
    assert rmse.low < measured < rmse.high and rmse.half_width < 0.05
    assert metric_interval("rmse", truth, predicted, 0.95) == rmse  # a fixed seed
    worse = paired_interval("rmse", truth, predicted * 1.05, predicted, 0.95)
    assert 0 < worse.low < worse.high  # scaled predictions are worse on every resample


# --- the gate ----------------------------------------------------------------------------------------------------


def test_first_champion_is_promoted() -> None:
    assert decide_promotion(0.5, None, 0.0).promote


@pytest.mark.parametrize(
    ("candidate", "champion", "allowed", "promote"),
    [(0.99, 0.98, 0.0, True), (0.975, 0.98, 0.005, True), (0.97, 0.98, 0.005, False), (0.98, 0.98, 0.0, True)],
)
def test_the_point_gate_against_an_existing_champion(candidate: float, champion: float, allowed: float, promote: bool) -> None:
    decision = decide_promotion(candidate, champion, allowed)
    assert decision.promote is promote
    assert "champion's" in decision.reason and "point rule" in decision.reason


def test_the_paired_gate_refuses_only_a_challenger_shown_worse() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 1000)
    champion = truth.copy()
    champion[:20] = (champion[:20] + 1) % 3  # 98 %
    accuracy = Quality("accuracy")

    def gate(challenger: np.ndarray) -> tuple[bool, str]:
        test = paired_test(truth, challenger, champion, accuracy, 0.95, 3)
        decision = decide_promotion(
            float(np.mean(challenger == truth)), 0.98, 0.005, accuracy, test, confidence=0.95
        )
        return decision.promote, decision.reason

    slightly_worse = champion.copy()
    slightly_worse[500:506] = (slightly_worse[500:506] + 1) % 3  # 6 more rows wrong: -0.6 pt, p = 0.03
    much_worse = champion.copy()
    much_worse[500:540] = (much_worse[500:540] + 1) % 3  # 40 more rows wrong: -4 pt
    promoted, reason = gate(slightly_worse)
    assert not promoted and "McNemar's exact test: p = 0.0312" in reason
    assert gate(much_worse)[0] is False
    noisy = champion.copy()
    noisy[500:504] = (noisy[500:504] + 1) % 3  # 4 more rows wrong, 1 fixed: p = 0.375, not shown worse
    noisy[0] = truth[0]
    promoted, reason = gate(noisy)
    assert promoted and "not shown worse" in reason and "p = 0.375" in reason


def test_the_paired_gate_on_regression_uses_the_bootstrap_interval() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(50, 10, size=(300, 1))
    champion = truth + rng.normal(scale=5, size=(300, 1))
    rmse = Quality("rmse")
    for challenger, promote in ((champion + 0.01, True), (champion + rng.normal(scale=8, size=(300, 1)), False)):
        test = paired_test(truth, challenger, champion, rmse, 0.95)
        assert test.test == "paired bootstrap" and test.p_value is None
        measured = float(np.sqrt(np.mean((truth - challenger) ** 2)))
        champion_rmse = float(np.sqrt(np.mean((truth - champion) ** 2)))
        assert decide_promotion(measured, champion_rmse, 0.05, rmse, test, 0.95).promote is promote


# --- the warning and the Pareto front ------------------------------------------------------------------------------


def test_a_test_split_too_small_for_the_budget_is_warned_about() -> None:
    baseline = {"accuracy": 0.98, "accuracy_ci_low": 0.965, "accuracy_ci_high": 0.989}
    warning = resolution_warning(baseline, "accuracy", 360, budget=0.005)
    assert warning is not None and "360 rows" in warning and "data.test_fraction" in warning
    assert resolution_warning(baseline, "accuracy", 360, budget=0.02) is None
    regression = {"rmse": 50.0, "rmse_ci_low": 45.0, "rmse_ci_high": 55.0}
    assert "10.0% of it" in (resolution_warning(regression, "rmse", 88, budget=0.05) or "")


def test_pareto_front() -> None:
    points = {"baseline": (1000, 0.99), "pruned": (300, 0.99), "int8": (80, 0.98), "bad": (400, 0.97), "tiny": (10, 0.5)}
    assert pareto_front(points) == {"pruned", "int8", "tiny"}


def test_the_compact_table_keeps_a_screen_the_shipped_variant_first_and_the_baseline_as_reference() -> None:
    rows = [SummaryRow("baseline", eligible=True, gzip_size_bytes=200_000, quality_delta=0.0)]
    rows += [SummaryRow(f"v{size}", eligible=True, gzip_size_bytes=size, quality_delta=-0.01) for size in range(1000, 31_000, 1000)]
    rows += [SummaryRow("missed", gzip_size_bytes=500, quality_delta=-0.2), SummaryRow("broken", status="failed: boom")]
    rows[5] = SummaryRow(rows[5].variant, selected=True, eligible=True, gzip_size_bytes=rows[5].gzip_size_bytes)
    shown, left_out = compact_rows(rows, most=5)
    assert [row.variant for row in shown] == ["v5000", "v1000", "v2000", "v3000", "baseline"]
    assert left_out == len(rows) - 5
    everything, none_left = compact_rows(rows, most=len(rows))
    assert none_left == 0 and [row.variant for row in everything][-2:] == ["missed", "broken"]
