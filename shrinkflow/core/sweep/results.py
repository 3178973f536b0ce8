"""What a sweep found: the quality floor, the trials that keep it, the best one, the trials table and the Pareto
plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.report import label_points, size_axis
from shrinkflow.core.selection import Quality, pareto_front
from shrinkflow.core.sweep.outcome import TrialOutcome
from shrinkflow.core.sweep.spec import value_text
from shrinkflow.core.tables import markdown_table, text_table

TABLE_COLUMNS = (
    "trial", "status", "variant", "val_quality", "test_quality", "gzip_size_bytes", "worker", "seconds", "params", "reason",
)


def quality_floor_for(outcomes: Sequence[TrialOutcome], config: PipelineConfig) -> float | None:
    """The worst validation quality a trial's shipped variant may have: sweep.quality_floor, else the base trial's
    baseline validation quality within select.max_quality_drop (None while the base trial has not completed)."""
    if config.sweep.quality_floor is not None:
        return config.sweep.quality_floor
    base = next((o for o in outcomes if not o.params and o.ok and o.baseline_quality is not None), None)
    if base is None or base.baseline_quality is None:
        return None
    return Quality(config.select.quality).worst_allowed(base.baseline_quality, config.select.max_quality_drop)


def keeps_quality(outcome: TrialOutcome, floor: float | None, quality: Quality) -> bool:
    return outcome.ok and floor is not None and outcome.quality is not None and quality.meets(outcome.quality, floor)


def pareto_trials(outcomes: Sequence[TrialOutcome], quality: Quality) -> set[int]:
    """Complete trials not dominated on (gzip size, quality)."""
    points = {
        str(o.number): (float(o.gzip_size_bytes), -quality.better_first(o.quality)) for o in outcomes
        if o.ok and o.gzip_size_bytes is not None and o.quality is not None
    }
    return {int(number) for number in pareto_front(points)}


def best_trial(outcomes: Sequence[TrialOutcome], floor: float | None, quality: Quality) -> TrialOutcome | None:
    """The smallest shipped variant among the trials that keep the quality floor (ties: the better, then the
    earlier trial). With two objectives it is the same point: the smallest member of the Pareto front that
    keeps the floor, the one that ships."""
    eligible = [o for o in outcomes if keeps_quality(o, floor, quality)]
    if not eligible:
        return None
    return min(eligible, key=lambda o: (o.gzip_size_bytes or 0, quality.better_first(o.quality or 0.0), o.number))


def table_rows(
    outcomes: Sequence[TrialOutcome], floor: float | None, best: TrialOutcome | None, quality: Quality
) -> list[dict[str, Any]]:
    """One row per trial, in trial order: what it sampled, what it would ship, where it ran."""
    front = pareto_trials(outcomes, quality)
    rows = []
    for o in sorted(outcomes, key=lambda o: o.number):
        marks = [mark for mark, on in (("best", best is not None and o.number == best.number),
                                       ("pareto", o.number in front),
                                       ("below floor", o.ok and not keeps_quality(o, floor, quality))) if on]
        rows.append({
            "trial": o.number,
            "status": o.status + (f" ({', '.join(marks)})" if marks else ""),
            "variant": o.variant,
            "val_quality": None if o.quality is None else round(o.quality, 4),
            "test_quality": None if o.test_quality is None else round(o.test_quality, 4),
            "gzip_size_bytes": o.gzip_size_bytes,
            "worker": o.worker,
            "seconds": round(o.seconds, 1),
            "params": "base config" if not o.params else ", ".join(f"{k}={_shown(v)}" for k, v in o.params.items()),
            "reason": o.reason[:120],
        })
    return rows


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else value_text(value)


def format_trials(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    cells = [[row[column] for column in TABLE_COLUMNS] for row in rows]
    return markdown_table(TABLE_COLUMNS, cells) if markdown else text_table(TABLE_COLUMNS, cells)


# The Prefect artifact's table: what fits its markdown view whole (about 800 px of a 1,400 px window, which does
# not wrap cells); each trial's sampled values, time and failure follow as a list, which wraps. Every column is in
# trials.md on the MLflow run.
ARTIFACT_COLUMNS = ("trial", "status", "variant", "val_quality", "test_quality", "gzip_size_bytes")


def trials_markdown(rows: Sequence[Mapping[str, Any]], quality: Quality, lines: Sequence[str] = ()) -> str:
    """The sweep-trials artifact: `lines` (links, a note; empty ones left out), the trials table (quality columns
    named after the metric), then per trial its sampled values, seconds and why it failed."""
    names = {"val_quality": f"val {quality.metric}", "test_quality": f"test {quality.metric}", "gzip_size_bytes": "gzip bytes"}
    table = markdown_table([names.get(column, column) for column in ARTIFACT_COLUMNS],
                           [[row[column] for column in ARTIFACT_COLUMNS] for row in rows])
    trials = "".join(
        f"- trial {row['trial']} ({row['seconds']} s): {row['params']}{f'; failed: {reason}' if (reason := row['reason']) else ''}\n"
        for row in rows
    )
    return "".join(f"{line}\n\n" for line in lines if line) + table + "\n" + trials


def pareto_plot(
    outcomes: Sequence[TrialOutcome], floor: float | None, best: TrialOutcome | None, path: Path, quality: Quality
) -> Path:
    """Gzipped size against quality, one point per complete trial; the Pareto front joined and labelled with its
    trial numbers, the quality floor drawn, the best trial circled; the other trials unlabelled grey dots. Written to
    `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (size, quality, trial number) of every complete trial
    points = [(float(o.gzip_size_bytes), o.quality, o.number) for o in outcomes
              if o.ok and o.gzip_size_bytes is not None and o.quality is not None]
    front = pareto_trials(outcomes, quality)
    figure, axes = plt.subplots(figsize=(10, 6))
    others = [p for p in points if p[2] not in front]
    if others:
        axes.scatter([p[0] for p in others], [p[1] for p in others], color="0.65", s=18, label="other trials")
    on_front = sorted(p for p in points if p[2] in front)
    axes.plot([p[0] for p in on_front], [p[1] for p in on_front], "o-", color="tab:blue", label="Pareto front")
    chosen = [p for p in points if best is not None and p[2] == best.number]
    if floor is not None:
        axes.axhline(floor, color="tab:red", linestyle="--", linewidth=1, label=f"{quality.metric} floor {floor:.4f}")
    if chosen:
        axes.scatter([chosen[0][0]], [chosen[0][1]], s=200, facecolors="none", edgecolors="tab:green",
                     linewidths=2, label=f"chosen: trial {chosen[0][2]}")
    if points:
        size_axis(axes, [p[0] for p in points])
    axes.set_xlabel("gzipped size of the shipped variant (log scale)")
    axes.set_ylabel(f"validation {quality.metric}")
    axes.set_title(f"Sweep: size against {quality.metric}, one point per trial")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    labelled = on_front + [p for p in chosen if p[2] not in front]
    label_points(axes, [(f"trial {number}", (size, value)) for size, value, number in labelled])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
