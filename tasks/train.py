"""Train the baseline in its own MLflow child run."""

from prefect import task

from shrinkflow import tracking, training
from shrinkflow.config import PipelineConfig
from shrinkflow.data import DatasetRef
from shrinkflow.tracking import TrackingRef
from shrinkflow.variants import VariantRef
from shrinkflow.workspace import Workspace
from tasks.options import COMPUTE_TASK

BASELINE = "baseline"


@task(name="train-baseline", **COMPUTE_TASK)
def train_baseline(
    config: PipelineConfig, dataset: DatasetRef, workspace: Workspace, tracking_ref: TrackingRef
) -> VariantRef:
    run_id = tracking.start_variant_run(tracking_ref, BASELINE, {"quantization": "none", "sparsity": "0"})
    client = tracking_ref.client()
    model_path = workspace.run_dir(tracking_ref.parent_run_id, BASELINE) / "model.keras"
    history = training.train_baseline(
        dataset, config.model, config.train, model_path,
        on_epoch=lambda epoch, logs: tracking.log_epoch(client, run_id, epoch, logs),
    )
    client.log_metric(run_id, "epochs_run", history["epochs_run"])
    return VariantRef(variant=BASELINE, model_path=str(model_path), run_id=run_id)
