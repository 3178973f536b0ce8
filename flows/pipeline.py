"""The shrinkflow pipeline: load -> train -> evaluate -> prune -> quantize -> select -> register -> export."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import TerminationSignal
from prefect.transactions import transaction

from mlflow.entities import RunStatus

from shrinkflow.tracking import runs as tracking
from tasks.caching import stage_key
from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.data import DatasetRef, source_stamp
from shrinkflow.core.evaluation import Evaluation
from shrinkflow.core.export import sha256_file
from shrinkflow.core.environment import check_workspace
from shrinkflow.core.selection import select_variant
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.core.variants import SummaryRow, VariantRef, failed_row, format_table, summary_row
from shrinkflow.core.workspace import Workspace
from tasks.compress import PRUNED, prune_baseline, prune_settings, quantize_settings, quantize_variant
from tasks.data import load_data, track_dataset
from tasks.evaluate import evaluate
from tasks.export import export_models, gate_champion, register_variant
from tasks.report import report_variants
from tasks.tracking import finish_tracking, record_cache_hit, start_tracking
from tasks.train import train_baseline


# The summary table in the flow run's log: the decisive columns, narrow enough for the Prefect UI's log view.
SUMMARY_LOG_COLUMNS = (
    "variant", "selected", "promoted", "version", "status", "accuracy", "accuracy_delta", "gzip_size_bytes",
    "compression_ratio",
)


@flow(name="shrinkflow", log_prints=True)
def pipeline(config: PipelineConfig, workspace: str | None = None, use_cache: bool = True) -> list[SummaryRow]:
    """Train a model from `config`, compress it into variants, and ship the best one that passes the gate.

    Args:
        config: What to train and how to compress and ship it: one section per stage of the pipeline.
        workspace: Folder for datasets, cached stages and exports; empty means $SHRINKFLOW_WORKSPACE, else ./workspace.
        use_cache: Reuse the stages an earlier run completed with the same inputs; off recomputes everything.

    Returns:
        One summary row per variant; the shipped one is marked selected, with its version and gate decision.
    """
    logger = get_run_logger()
    ws = Workspace.resolve(workspace)
    check_workspace(ws, workspace)  # deployments start here, not in the CLI that checks it first
    tracking_ref = start_tracking(config, ws)
    if links := tracking_ref.ui_links():
        create_markdown_artifact(links, key="mlflow-run", description=f"MLflow runs of {config.name}")
    stages = Stages(config, ws, tracking_ref, use_cache)
    rows: list[SummaryRow] = []
    try:
        dataset = stages.load_data()
        baseline = stages.built(stages.train(dataset))
        evaluations: dict[str, Evaluation] = {baseline.variant: evaluate(baseline, dataset, ws, tracking_ref)}
        variants, failures = [baseline], {}

        def attempt(build_state: Any, name: str) -> VariantRef | None:
            """A variant that fails to build or evaluate is recorded; the others go on."""
            if not build_state.is_completed():
                failures[name] = failure_reason(build_state)
                return None
            ref = stages.built(build_state)
            evaluation_state = evaluate(ref, dataset, ws, tracking_ref, return_state=True)
            if not evaluation_state.is_completed():
                failures[name] = failure_reason(evaluation_state)
                return None
            evaluations[name] = evaluation_state.result()
            variants.append(ref)
            return ref

        sources = [baseline]
        if config.prune.enabled:
            pruned = attempt(stages.prune(baseline, dataset), PRUNED)
            sources += [pruned] if pruned else []
        for source in sources:
            for mode in config.quantize.modes:
                attempt(stages.quantize(source, mode, dataset), f"{source.variant}-{mode}")
        for name, reason in failures.items():
            logger.error("%s failed, the other variants go on: %s", name, reason)

        baseline_metrics = evaluations[baseline.variant].metrics
        selection = select_variant(
            {ref.variant: evaluations[ref.variant].metrics for ref in variants},
            baseline_metrics["accuracy"], config.select,
        )
        for name, reason in selection.reasons.items():
            logger.info("selection: %s: %s", name, reason)
        rows = [summary_row(ref, evaluations[ref.variant].metrics, baseline_metrics) for ref in variants]
        rows += [failed_row(name, reason) for name, reason in failures.items()]
        # Shipping is all or nothing: if anything up to the end of the run fails, or the run is interrupted,
        # the tasks' rollback hooks move the alias back, remove the export and delete the version.
        with transaction():
            if selection.selected is not None:
                selected = next(ref for ref in variants if ref.variant == selection.selected)
                version = register_variant(config, selected, evaluations[selected.variant], tracking_ref)
                export_models(config, version, selected, variants, evaluations, dataset, ws, tracking_ref)
                decision = gate_champion(config, version, evaluations[selected.variant], dataset, tracking_ref)
                rows = [
                    replace(row, selected=True, version=version, promoted=decision.promote)
                    if row.variant == selected.variant else row
                    for row in rows
                ]
            else:
                logger.warning("no variant passed the selection policy (config section 'select'): nothing registered or exported")
            report_variants(rows, selection.reasons, ws, tracking_ref)
            create_table_artifact(
                [row.display() for row in rows], key="shrinkflow-summary", description=f"Variants of {config.name}"
            )
            logger.info("summary of %s:\n%s", config.name, format_table(rows, columns=SUMMARY_LOG_COLUMNS))
            finish_tracking(tracking_ref, rows)
    except BaseException as exc:
        # A plain call, not a task: it must work when Prefect's API is what failed.
        try:
            stopped = isinstance(exc, (KeyboardInterrupt, TerminationSignal))  # Ctrl-C, SIGTERM: not a failure
            tracking.finish_pipeline(tracking_ref, RunStatus.KILLED if stopped else RunStatus.FAILED)
        except Exception as closing:  # the run's own failure is the one to report
            logger.warning("could not close the MLflow runs of this run: %s", closing)
        raise
    return rows


class Stages:
    """Calls the cached stages with their keys, and reuses an earlier run's output only if it is still there."""

    def __init__(self, config: PipelineConfig, ws: Workspace, tracking_ref: TrackingRef, use_cache: bool) -> None:
        self.config, self.ws, self.tracking_ref, self.use_cache = config, ws, tracking_ref, use_cache

    def load_data(self) -> DatasetRef:
        key = stage_key("data", self.config.data, source_stamp(self.config.data), str(self.ws.root))
        state = self._run(load_data, self.config.data, self.ws, cache_key=key)
        dataset = state.result()  # a data error ends the run here, before any training
        track_dataset(self.tracking_ref, dataset, cache_hit=is_cache_hit(state))
        return dataset

    def train(self, dataset: DatasetRef) -> Any:
        config = self.config
        key = stage_key("train", config.model, config.train, dataset.fingerprint, Path(dataset.path).name, str(self.ws.root))
        return self._run(train_baseline, config, dataset, self.ws, self.tracking_ref, cache_key=key)

    def prune(self, baseline: VariantRef, dataset: DatasetRef) -> Any:
        key = stage_key(
            "prune", prune_settings(self.config), sha256_file(Path(baseline.model_path)), Path(dataset.path).name,
            str(self.ws.root),
        )
        return self._run(prune_baseline, self.config, baseline, dataset, self.ws, self.tracking_ref, cache_key=key)

    def quantize(self, source: VariantRef, mode: str, dataset: DatasetRef) -> Any:
        settings = quantize_settings(self.config, mode, preserve_sparsity=source.variant == PRUNED)
        key = stage_key(
            "quantize", source.variant, settings, sha256_file(Path(source.model_path)), Path(dataset.path).name,
            str(self.ws.root),
        )
        return self._run(quantize_variant, self.config, source, mode, dataset, self.ws, self.tracking_ref, cache_key=key)

    def built(self, state: Any) -> VariantRef:
        """The variant a completed stage returned; a cache hit gets its own child run in this parent run."""
        variant = state.result()
        return record_cache_hit(self.tracking_ref, variant) if is_cache_hit(state) else variant

    def _run(self, stage: Any, *args: Any, **kwargs: Any) -> Any:
        state = stage.with_options(refresh_cache=not self.use_cache)(*args, return_state=True, **kwargs)
        if is_cache_hit(state) and not Path(_output_path(state.result())).exists():
            # The cache remembers a file someone has since deleted: build it again.
            state = stage.with_options(refresh_cache=True)(*args, return_state=True, **kwargs)
        return state


def is_cache_hit(state: Any) -> bool:
    return state.is_completed() and state.name == "Cached"


def _output_path(result: DatasetRef | VariantRef) -> str:
    return result.path if isinstance(result, DatasetRef) else result.model_path


def failure_reason(state: Any) -> str:
    """The exception behind a failed task state, as "Type: message"."""
    error = state.result(raise_on_failure=False)
    return f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else (state.message or "failed")
