"""Opening and closing the MLflow parent run."""

from collections.abc import Sequence

from mlflow.entities import RunStatus
from prefect import runtime, task

from shrinkflow.tracking import runs as tracking
from shrinkflow.core.config import PipelineConfig
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.core.variants import SummaryRow, VariantRef
from shrinkflow.core.workspace import Workspace
from tasks.options import IO_TASK, SHIPPING_TASK


@task(name="start-tracking", **IO_TASK)
def start_tracking(config: PipelineConfig, workspace: Workspace) -> TrackingRef:
    uri = workspace.tracking_uri()
    # Only the embedded SQLite store keeps artifacts in the workspace; a server decides for itself.
    artifact_root = workspace.mlartifacts if uri.startswith("sqlite:") else None
    # The parent run takes the flow run's name: distinct, readable, and the same in both UIs.
    return tracking.start_parent_run(
        uri, config, artifact_root, workspace.runs, runtime.flow_run.name, runtime.flow_run.id
    )


@task(name="finish-tracking", **SHIPPING_TASK)
def finish_tracking(tracking_ref: TrackingRef, rows: Sequence[SummaryRow]) -> None:
    """The summary and headline metrics on the parent run, then close it and its children as FINISHED."""
    tracking.log_summary(tracking_ref, rows)
    tracking.finish_pipeline(tracking_ref, RunStatus.FINISHED)


@task(name="record-cache-hit", task_run_name="record-cache-hit-{variant.variant}", **IO_TASK)
def record_cache_hit(tracking_ref: TrackingRef, variant: VariantRef) -> VariantRef:
    return tracking.record_cache_hit(tracking_ref, variant)
