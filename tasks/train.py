"""Train the baseline in its own MLflow child run."""

from prefect import task

from shrinkflow import compression, tracking, training
from shrinkflow.config import PipelineConfig
from shrinkflow.data import DatasetRef
from shrinkflow.tracking import TrackingRef
from shrinkflow.variants import VariantRef
from shrinkflow.workspace import Workspace
from tasks.options import CACHED_TASK

BASELINE = "baseline"


@task(name="train-baseline", **CACHED_TASK)
def train_baseline(
    config: PipelineConfig, dataset: DatasetRef, workspace: Workspace, tracking_ref: TrackingRef, cache_key: str
) -> VariantRef:
    run_id = tracking.start_variant_run(tracking_ref, BASELINE, {"quantization": "none", "parent_variant": ""})
    client = tracking_ref.client()
    model_path = workspace.stage_dir(cache_key) / "model.keras"
    with tracking.failure_recorded(tracking_ref, run_id):
        history = training.train_baseline(
            dataset, config.model, config.train, model_path,
            on_epoch=lambda epoch, logs: tracking.log_epoch(client, run_id, epoch, logs),
        )
        for name in ("epochs_run", "train_seconds", "train_samples_per_s"):
            client.log_metric(run_id, name, history[name])
        sparsity = compression.keras_sparsity(training.load_keras_model(model_path))
        client.set_tag(run_id, "sparsity", f"{sparsity:.4f}")
    return VariantRef(variant=BASELINE, model_path=str(model_path), run_id=run_id, sparsity=sparsity)
