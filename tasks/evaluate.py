"""Evaluate a variant on the test split and log the result to its child run."""

from pathlib import Path

from prefect import get_run_logger, task

from shrinkflow import tracking
from shrinkflow.data import DatasetRef
from shrinkflow.evaluation import Evaluation, describe_metrics, evaluate_model_file
from shrinkflow.tracking import TrackingRef
from shrinkflow.variants import VariantRef
from tasks.options import COMPUTE_TASK


@task(name="evaluate", task_run_name="evaluate-{variant.variant}", **COMPUTE_TASK)
def evaluate(variant: VariantRef, dataset: DatasetRef, tracking_ref: TrackingRef) -> Evaluation:
    with tracking.failure_recorded(tracking_ref, variant.run_id):
        evaluation = evaluate_model_file(variant.model_path, dataset, Path(variant.model_path).parent)
        tracking.log_evaluation(tracking_ref, variant.run_id, evaluation, sparsity=variant.sparsity)
    get_run_logger().info("%s: %s", variant.variant, describe_metrics(evaluation.metrics))
    return evaluation
