"""The pipeline's stages as cached Prefect tasks: each a few lines over shrinkflow.core.stages.

Every stage task takes its step (shrinkflow.core.steps, one frozen parameter object built from the config), the
variant it starts from, the dataset and the workspace; its cache key is made of exactly those (tasks.caching).
A task run is named after the variant it builds (shrinkflow.core.names).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import get_run_logger, runtime, task

from shrinkflow.core import stages
from shrinkflow.core.config import DataConfig
from shrinkflow.core.data import DatasetRef, prepare_dataset
from shrinkflow.core.names import BASELINE, clustered_name, onnx_name, pruned_name, quantized_name
from shrinkflow.core.steps import ClusterStep, DistillStep, OnnxStep, PruneStep, QuantizeStep, TrainStep
from shrinkflow.core.training import describe_epoch
from shrinkflow.core.variants import Variant
from shrinkflow.core.workspace import Workspace
from shrinkflow.tasks.caching import stage_dir
from shrinkflow.tasks.options import CACHED_TASK, retry_unless_user_error


def _built_by() -> str:
    return str(runtime.flow_run.id)


def _parameter(name: str) -> Any:
    return runtime.task_run.parameters[name]


@task(name="load-data", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error, **CACHED_TASK)
def load_data(data_cfg: DataConfig, workspace: Workspace) -> DatasetRef:
    """Read, validate, split and scale the data (content-addressed under <workspace>/datasets)."""
    dataset = prepare_dataset(data_cfg, workspace.datasets)
    return dataclasses.replace(dataset, built_by=_built_by())


@task(name="train-baseline", task_run_name=BASELINE, **CACHED_TASK)
def train(step: TrainStep, dataset: DatasetRef, workspace: Workspace) -> Variant:
    logger = get_run_logger()

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        logger.info("epoch %d/%d: %s", epoch + 1, step.train.epochs, describe_epoch(logs))

    baseline = stages.train_stage(step, dataset, stage_dir(workspace), on_epoch=on_epoch, built_by=_built_by())
    logger.info(
        "trained the baseline in %d epochs (%.1f s, %.0f samples/s)", baseline.training["epochs_run"],
        baseline.training["train_seconds"], baseline.training["train_samples_per_s"],
    )
    return baseline


@task(name="distill", task_run_name=lambda: str(_parameter("step").variant), **CACHED_TASK)
def distill(step: DistillStep, teacher: Variant, dataset: DatasetRef, workspace: Workspace) -> Variant:
    """Train a student from the teacher's soft targets (or from the labels alone); the teacher is only read."""
    student = stages.distill_stage(step, teacher, dataset, stage_dir(workspace), _built_by())
    get_run_logger().info(
        "trained %s (%s parameters) %s in %d epochs", student.name, f"{int(student.metrics['params']):,}",
        "from the labels alone" if step.from_scratch else f"from {teacher.name}'s soft targets",
        student.training["epochs_run"],
    )
    return student


@task(name="prune", task_run_name=lambda: pruned_name(_parameter("source").name), **CACHED_TASK)
def prune(step: PruneStep, source: Variant, dataset: DatasetRef, workspace: Workspace) -> Variant:
    """Prune a copy of the baseline or a student; its file is only read."""
    pruned = stages.prune_stage(step, source, dataset, stage_dir(workspace), _built_by())
    get_run_logger().info(
        "pruned a copy of %s: %.1f%% of its weights are zero (target %.1f%%)", source.name,
        100 * pruned.sparsity, 100 * step.target_sparsity,
    )
    return pruned


@task(name="cluster", task_run_name=lambda: clustered_name(_parameter("source").name), **CACHED_TASK)
def cluster(step: ClusterStep, source: Variant, dataset: DatasetRef, workspace: Workspace) -> Variant:
    """Cluster the weights of a copy of `source`; its file is only read."""
    clustered = stages.cluster_stage(step, source, dataset, stage_dir(workspace), _built_by())
    get_run_logger().info(
        "clustered a copy of %s into %d values per kernel%s: at most %d distinct values in one kernel, "
        "%.1f%% zeros", source.name, step.clusters, " channel" if step.per_channel else "",
        clustered.metrics["max_unique_weights"], 100 * clustered.sparsity,
    )
    return clustered


@task(
    name="quantize", task_run_name=lambda: quantized_name(_parameter("source").name, _parameter("step").mode),
    **CACHED_TASK,
)
def quantize(step: QuantizeStep, source: Variant, dataset: DatasetRef, workspace: Workspace) -> Variant:
    """Convert `source` to TFLite in the step's mode; its file is only read."""
    variant = stages.quantize_stage(step, source, dataset, stage_dir(workspace), _built_by())
    get_run_logger().info(
        "converted %s to TFLite (%s): %s bytes, %.1f%% of its weights are zero", source.name,
        step.mode, f"{int(variant.metrics['size_bytes']):,}", 100 * variant.sparsity,
    )
    return variant


@task(name="onnx", task_run_name=lambda: onnx_name(_parameter("source").name), **CACHED_TASK)
def to_onnx(step: OnnxStep, source: Variant, dataset: DatasetRef, workspace: Workspace) -> Variant:
    """Convert `source` to ONNX and evaluate it in onnxruntime; its file is only read."""
    variant = stages.onnx_stage(step, source, dataset, stage_dir(workspace), _built_by())
    get_run_logger().info(
        "converted %s to ONNX (opset %d): %s bytes", source.name, step.opset, f"{int(variant.metrics['size_bytes']):,}"
    )
    return variant
