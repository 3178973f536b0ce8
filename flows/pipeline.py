"""The shrinkflow pipeline: load -> train -> evaluate -> register -> export, tracked in MLflow."""

from __future__ import annotations

from typing import Any

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from prefect import flow
from prefect.artifacts import create_table_artifact

from shrinkflow.config import PipelineConfig
from shrinkflow.variants import summary_row
from shrinkflow.workspace import Workspace
from tasks.data import load_data
from tasks.evaluate import evaluate
from tasks.export import export_models, register_model
from tasks.tracking import finish_tracking, start_tracking
from tasks.train import train_baseline


@flow(name="shrinkflow", log_prints=True)
def pipeline(config: PipelineConfig, workspace: str | None = None) -> list[dict[str, Any]]:
    """Train a model from `config`, evaluate it, register it in MLflow and export it.

    Args:
        config: the validated pipeline config (the Run form in the Prefect UI).
        workspace: where datasets, runs and exports go; default $SHRINKFLOW_WORKSPACE or ./workspace.

    Returns:
        One summary row per model variant.
    """
    ws = Workspace.resolve(workspace)
    tracking_ref = start_tracking(config, ws)
    rows: list[dict[str, Any]] = []
    try:
        dataset = load_data(config.data, ws, tracking_ref)
        baseline = train_baseline(config, dataset, ws, tracking_ref)
        evaluations = {baseline.variant: evaluate(baseline, dataset, tracking_ref)}
        version = register_model(config, baseline, evaluations[baseline.variant], tracking_ref)
        export_models(config, version, baseline, evaluations, [baseline], dataset, ws, tracking_ref)
        baseline_metrics = evaluations[baseline.variant].metrics
        rows = [summary_row(baseline, baseline_metrics, baseline_metrics, version)]
        create_table_artifact(rows, key="shrinkflow-summary", description=f"Variants of {config.name}")
    except BaseException:
        finish_tracking(tracking_ref, rows, succeeded=False)
        raise
    finish_tracking(tracking_ref, rows, succeeded=True)
    return rows
