"""Evaluate a variant on the test split and log the result to its child run."""

from prefect import get_run_logger, task

from shrinkflow.tracking import runs as tracking
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.evaluation import Evaluation, describe_metrics, evaluate_model_file
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.core.variants import VariantRef
from shrinkflow.core.workspace import Workspace
from tasks.options import COMPUTE_TASK


@task(name="evaluate", task_run_name="evaluate-{variant.variant}", **COMPUTE_TASK)
def evaluate(variant: VariantRef, dataset: DatasetRef, workspace: Workspace, tracking_ref: TrackingRef) -> Evaluation:
    # Plots go to this run's own folder: a cached model's folder is shared by every run that reuses it.
    out_dir = workspace.run_dir(tracking_ref.parent_run_id, variant.variant)
    with tracking.failure_recorded(tracking_ref, variant.run_id):
        evaluation = evaluate_model_file(variant.model_path, dataset, out_dir)
        tracking.log_evaluation(tracking_ref, variant.run_id, evaluation, sparsity=variant.sparsity)
    get_run_logger().info("%s: %s", variant.variant, describe_metrics(evaluation.metrics))
    return evaluation
