"""The pipeline's stages as cached Prefect tasks: each a few lines over shrinkflow.core.stages."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, runtime, task

from shrinkflow.core import stages
from shrinkflow.core.config import (
    ClusterConfig, DataConfig, DistillConfig, ModelConfig, OnnxConfig, PruneConfig, QuantizeConfig, TrainConfig,
)
from shrinkflow.core.data import DatasetRef, prepare_dataset
from shrinkflow.core.training import describe_epoch
from shrinkflow.core.variants import Failure, Variant, student_name
from shrinkflow.core.workspace import Workspace
from tasks.caching import stage_dir
from tasks.options import CACHED_TASK, retry_unless_user_error


@task(name="load-data", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error, **CACHED_TASK)
def load_data(data_cfg: DataConfig, workspace: Workspace) -> DatasetRef:
    """Read, validate, split and scale the data (content-addressed under <workspace>/datasets)."""
    dataset = prepare_dataset(data_cfg, workspace.datasets)
    return dataclasses.replace(dataset, built_by=str(runtime.flow_run.id))


@task(name="train-baseline", **CACHED_TASK)
def train(dataset: DatasetRef, model_cfg: ModelConfig, train_cfg: TrainConfig, workspace: Workspace) -> Variant:
    logger = get_run_logger()

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        logger.info("epoch %d/%d: %s", epoch + 1, train_cfg.epochs, describe_epoch(logs))

    baseline = stages.train_stage(
        dataset, model_cfg, train_cfg, stage_dir(workspace), on_epoch=on_epoch, built_by=str(runtime.flow_run.id)
    )
    logger.info(
        "trained the baseline in %d epochs (%.1f s, %.0f samples/s)", baseline.training["epochs_run"],
        baseline.training["train_seconds"], baseline.training["train_samples_per_s"],
    )
    return baseline


def _student_run_name() -> str:
    parameters = runtime.task_run.parameters
    return f"distill-{student_name(parameters['number'], parameters['from_scratch'])}"


@task(name="distill", task_run_name=_student_run_name, **CACHED_TASK)
def distill(
    number: int, teacher: Variant, dataset: DatasetRef, student_model: ModelConfig, distill_cfg: DistillConfig,
    train_cfg: TrainConfig, from_scratch: bool, workspace: Workspace,
) -> Variant:
    """Train student `number` from the teacher's soft targets (or from the labels alone); the teacher is only read."""
    student = stages.distill_stage(
        teacher, number, dataset, student_model, distill_cfg, train_cfg, stage_dir(workspace), from_scratch,
        str(runtime.flow_run.id),
    )
    get_run_logger().info(
        "trained %s (%s parameters) %s", student.name, f"{dict(student.settings)['params']:,}",
        "from the labels alone" if from_scratch else f"from {teacher.name}'s soft targets",
    )
    return student


@task(name="prune", task_run_name="prune-{source.name}", **CACHED_TASK)
def prune(
    source: Variant, dataset: DatasetRef, prune_cfg: PruneConfig, train_cfg: TrainConfig, workspace: Workspace
) -> Variant:
    """Prune a copy of the baseline or a student; its file is only read."""
    pruned = stages.prune_stage(source, dataset, prune_cfg, train_cfg, stage_dir(workspace), str(runtime.flow_run.id))
    get_run_logger().info(
        "pruned a copy of %s: %.1f%% of its weights are zero (target %.1f%%)", source.name,
        100 * pruned.sparsity, 100 * prune_cfg.target_sparsity,
    )
    return pruned


@task(name="cluster", task_run_name="cluster-{source.name}", **CACHED_TASK)
def cluster(
    source: Variant, dataset: DatasetRef, cluster_cfg: ClusterConfig, train_cfg: TrainConfig, workspace: Workspace
) -> Variant:
    """Cluster the weights of a copy of `source`; its file is only read."""
    clustered = stages.cluster_stage(source, dataset, cluster_cfg, train_cfg, stage_dir(workspace), str(runtime.flow_run.id))
    get_run_logger().info(
        "clustered a copy of %s into %d values per kernel%s: at most %d distinct values in one kernel, "
        "%.1f%% zeros", source.name, cluster_cfg.clusters, " channel" if cluster_cfg.per_channel else "",
        clustered.metrics["max_unique_weights"], 100 * clustered.sparsity,
    )
    return clustered


@task(name="quantize", task_run_name="quantize-{source.name}-{quantize_cfg.modes[0]}", **CACHED_TASK)
def quantize(
    source: Variant, quantize_cfg: QuantizeConfig, dataset: DatasetRef, train_cfg: TrainConfig, workspace: Workspace
) -> Variant:
    """Convert `source` to TFLite in the one mode of `quantize_cfg` (QuantizeConfig.for_mode)."""
    variant = stages.quantize_stage(
        source, quantize_cfg, dataset, train_cfg, stage_dir(workspace), str(runtime.flow_run.id)
    )
    get_run_logger().info(
        "converted %s to TFLite (%s): %s bytes, %.1f%% of its weights are zero", source.name,
        quantize_cfg.modes[0], f"{int(variant.metrics['size_bytes']):,}", 100 * variant.sparsity,
    )
    return variant


@task(name="onnx", task_run_name="onnx-{source.name}", **CACHED_TASK)
def to_onnx(source: Variant, onnx_cfg: OnnxConfig, dataset: DatasetRef, workspace: Workspace) -> Variant | Failure:
    """Convert `source` to ONNX and evaluate it in onnxruntime; its file is only read."""
    variant = stages.onnx_stage(source, onnx_cfg, dataset, stage_dir(workspace), str(runtime.flow_run.id))
    if isinstance(variant, Failure):
        get_run_logger().info("%s: not applicable: %s", variant.name, variant.reason)
        return variant
    get_run_logger().info(
        "converted %s to ONNX (opset %d): %s bytes", source.name, onnx_cfg.opset, f"{int(variant.metrics['size_bytes']):,}"
    )
    return variant


def attempt(name: str, stage: Callable[..., Any], *args: Any, not_applicable: str | None = None) -> Variant | Failure:
    """Run a stage that builds variant `name`; if it fails, the run goes on without that variant.

    The task run stays Failed in Prefect (with its traceback in the logs); the flow gets a Failure. With
    `not_applicable` (why the stage cannot apply to this model) the stage is not run: a "not applicable" row.
    """
    if not_applicable:
        get_run_logger().info("%s: not applicable: %s", name, not_applicable)
        return Failure(name, not_applicable, not_applicable=True)
    state = stage(*args, return_state=True)
    if state.is_completed():
        result: Variant | Failure = state.result()  # a Failure here: the stage does not apply
        return result
    error = state.result(raise_on_failure=False)
    reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else (state.message or "failed")
    get_run_logger().error("%s failed, the other variants go on: %s", name, reason)
    return Failure(name, reason)
