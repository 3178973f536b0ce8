"""The shrinkflow pipeline: load -> train -> evaluate -> prune -> quantize -> select -> register -> export."""

from __future__ import annotations

from typing import Any

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from prefect import flow
from prefect.artifacts import create_table_artifact

from shrinkflow.config import PipelineConfig
from shrinkflow.evaluation import Evaluation
from shrinkflow.selection import select_variant
from shrinkflow.variants import VariantRef, failed_row, summary_row
from shrinkflow.workspace import Workspace
from tasks.compress import prune_baseline, quantize_variant
from tasks.data import load_data
from tasks.evaluate import evaluate
from tasks.export import export_models, gate_champion, register_variant
from tasks.report import report_variants
from tasks.tracking import finish_tracking, start_tracking
from tasks.train import train_baseline


@flow(name="shrinkflow", log_prints=True)
def pipeline(config: PipelineConfig, workspace: str | None = None) -> list[dict[str, Any]]:
    """Train a model from `config`, compress it into variants, and ship the best one that passes the gate.

    Args:
        config: the validated pipeline config (the Run form in the Prefect UI).
        workspace: where datasets, runs and exports go; default $SHRINKFLOW_WORKSPACE or ./workspace.

    Returns:
        One summary row per variant, with selected / promoted marks.
    """
    ws = Workspace.resolve(workspace)
    tracking_ref = start_tracking(config, ws)
    rows: list[dict[str, Any]] = []
    try:
        dataset = load_data(config.data, ws, tracking_ref)
        baseline = train_baseline(config, dataset, ws, tracking_ref)
        evaluations: dict[str, Evaluation] = {baseline.variant: evaluate(baseline, dataset, tracking_ref)}
        variants, failures = [baseline], {}

        def attempt(build_state: Any, name: str) -> VariantRef | None:
            """A variant that fails to build or evaluate is recorded; the others go on."""
            if not build_state.is_completed():
                failures[name] = failure_reason(build_state)
                return None
            ref = build_state.result()
            evaluation_state = evaluate(ref, dataset, tracking_ref, return_state=True)
            if not evaluation_state.is_completed():
                failures[name] = failure_reason(evaluation_state)
                return None
            evaluations[name] = evaluation_state.result()
            variants.append(ref)
            return ref

        sources = [baseline]
        if config.prune.enabled:
            pruned = attempt(prune_baseline(config, baseline, dataset, ws, tracking_ref, return_state=True), "pruned")
            sources += [pruned] if pruned else []
        for source in sources:
            for mode in config.quantize.modes:
                name = f"{source.variant}-{mode}"
                attempt(quantize_variant(config, source, mode, dataset, ws, tracking_ref, return_state=True), name)

        baseline_metrics = evaluations[baseline.variant].metrics
        selection = select_variant(
            {ref.variant: evaluations[ref.variant].metrics for ref in variants},
            baseline_metrics["accuracy"], config.select,
        )
        rows = [summary_row(ref, evaluations[ref.variant].metrics, baseline_metrics) for ref in variants]
        rows += [failed_row(name, reason) for name, reason in failures.items()]
        if selection.selected is not None:
            selected = next(ref for ref in variants if ref.variant == selection.selected)
            version = register_variant(config, selected, evaluations[selected.variant], tracking_ref)
            export_models(config, version, selected, variants, evaluations, dataset, ws, tracking_ref)
            decision = gate_champion(config, version, evaluations[selected.variant], dataset, tracking_ref)
            for row in rows:
                if row["variant"] == selected.variant:
                    row.update(selected="yes", version=version, promoted="yes" if decision.promote else "no")
        else:
            print(f"No variant passed the selection policy; nothing registered or exported: {selection.reasons}")
        report_variants(rows, selection.reasons, ws, tracking_ref)
        create_table_artifact(rows, key="shrinkflow-summary", description=f"Variants of {config.name}")
    except BaseException:
        finish_tracking(tracking_ref, rows, succeeded=False)
        raise
    finish_tracking(tracking_ref, rows, succeeded=True)
    return rows


def failure_reason(state: Any) -> str:
    """The exception behind a failed task state, as "Type: message"."""
    error = state.result(raise_on_failure=False)
    return f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else (state.message or "failed")
