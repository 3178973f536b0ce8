"""The shrinkflow pipeline: load -> train -> distill -> prune -> cluster -> quantize -> ONNX (each variant
evaluated and recorded) -> select -> register -> export -> gate."""

from __future__ import annotations

import logging
from dataclasses import replace

from mlflow.entities import RunStatus
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import TerminationSignal
from prefect.transactions import transaction

from shrinkflow.core.config import PipelineConfig, PipelineSettings
from shrinkflow.core.environment import check_workspace
from shrinkflow.core.selection import select_variant
from shrinkflow.core.steps import Steps
from shrinkflow.core.summary import (
    DECISIVE_COLUMNS, SummaryRow, compact_rows, format_table, headline, progress_line, summary_rows, table_cells,
)
from shrinkflow.core.variants import Failure, Variant
from shrinkflow.core.workspace import Workspace
from shrinkflow.flows.variants import build_variants
from shrinkflow.tasks.caching import keep_results_in
from shrinkflow.tasks.report import report_variants
from shrinkflow.tasks.shipping import export_models, gate_champion, register_variant
from shrinkflow.tasks.tracking import finish_tracking, record, record_dataset, start_tracking
from shrinkflow.tracking import runs

# One line per variant as the run goes, for the terminal (the command shows this logger; the flow run's own log in
# the Prefect UI has the details).
PROGRESS = logging.getLogger("shrinkflow.progress")


@flow(name="shrinkflow", log_prints=True)
def pipeline(config: PipelineSettings, workspace: str | None = None, use_cache: bool = True) -> list[SummaryRow]:
    """Train a model from `config`, compress it into variants, and ship the best one that passes the gate.

    Args:
        config: What to train and how to compress and ship it: one section per stage of the pipeline.
        workspace: Folder for datasets, cached stages and exports; empty means $SHRINKFLOW_WORKSPACE, else ./workspace.
        use_cache: Reuse the stages an earlier run completed with the same inputs; off recomputes everything.

    Returns:
        One summary row per variant; the shipped one is marked selected, with its version and gate decision.
    """
    logger = get_run_logger()
    config = PipelineConfig.of(config)  # the Run form has no sweep section: the pipeline reads none
    ws = Workspace.resolve(workspace)
    check_workspace(ws, workspace)  # deployments start here, not in the CLI that checks it first
    keep_results_in(ws)
    run = start_tracking(config, ws)
    if links := run.ui_links():
        create_markdown_artifact(links, key="mlflow-run", description=f"MLflow runs of {config.name}")
    try:
        def recorded(built: Variant | Failure) -> Variant | Failure:
            built = record(run, built)
            PROGRESS.info(progress_line(built, config.select.quality))
            return built

        stages = build_variants(
            Steps.from_config(config), config.model, ws, on_dataset=lambda dataset: record_dataset(run, dataset),
            on_built=recorded,
        )
        dataset, baseline, built, variants = stages.dataset, stages.baseline, stages.built, stages.variants

        selection = select_variant(
            {v.name: v.metrics for v in variants}, baseline.metrics, config.select, dataset.split_size("validation")
        )
        logger.info("selection rule: %s", selection.rule)
        for name, reason in selection.reasons.items():
            logger.info("selection: %s: %s", name, reason)
        if selection.note:
            logger.warning("selection: %s", selection.note)
        rows = summary_rows(built, config.select.quality, selection.eligible)
        # Shipping is all or nothing: if anything up to the end of the run fails, or the run is interrupted,
        # the tasks' rollback hooks move the alias back, remove the export and delete the version.
        with transaction():
            if selection.selected is not None:
                selected = next(variant for variant in variants if variant.name == selection.selected)
                registration = register_variant(config.name, config.config_hash(), selected, dataset, run)
                promoted: bool | None = None  # the selected file is the champion already: no gate decision
                if registration.new:
                    export_models(
                        config.name, config.export, registration.version, selected, variants, dataset,
                        config.config_hash(), ws, run,
                    )
                    promoted = gate_champion(config.name, config.select, registration.version, selected, dataset, run).promote
                rows = [
                    replace(row, selected=True, version=registration.version, promoted=promoted)
                    if row.variant == selected.name else row
                    for row in rows
                ]
            else:
                logger.warning("no variant passed the selection policy (config section 'select'): nothing registered or exported")
            report_variants(rows, selection.reasons, ws, run)
            # The decisive columns, every variant, shipped and eligible first: what fits the Prefect UI at a glance;
            # every column is in comparison.md on the MLflow parent run.
            ordered, _ = compact_rows(rows, most=len(rows))
            create_table_artifact(
                table_cells(ordered, DECISIVE_COLUMNS), key="shrinkflow-summary",
                description=f"{headline(rows, config.name)}. Every column: comparison/comparison.md on the MLflow run.",
            )
            shown, left_out = compact_rows(rows)
            more = f"\n({left_out} more in comparison/comparison.md on the MLflow run)" if left_out else ""
            logger.info("%s\n%s%s", headline(rows, config.name), format_table(shown, DECISIVE_COLUMNS), more)
            finish_tracking(run, rows)
    except BaseException as exc:
        # A plain call, not a task: it must work when Prefect's API is what failed.
        try:
            stopped = isinstance(exc, (KeyboardInterrupt, TerminationSignal))  # Ctrl-C, SIGTERM: not a failure
            runs.finish_pipeline(
                run, RunStatus.KILLED if stopped else RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}"
            )
        except Exception as closing:  # the run's own failure is the one to report
            logger.warning("could not close the MLflow runs of this run: %s", closing)
        raise
    return rows
