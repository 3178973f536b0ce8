"""Train the baseline in its own MLflow child run."""

from prefect import get_run_logger, task

from shrinkflow.core import compression
from shrinkflow.tracking import runs as tracking
from shrinkflow.core import training
from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.core.variants import VariantRef
from shrinkflow.core.workspace import Workspace
from tasks.options import CACHED_TASK

BASELINE = "baseline"


@task(name="train-baseline", **CACHED_TASK)
def train_baseline(
    config: PipelineConfig, dataset: DatasetRef, workspace: Workspace, tracking_ref: TrackingRef, cache_key: str
) -> VariantRef:
    logger = get_run_logger()
    run_id = tracking.start_variant_run(tracking_ref, BASELINE)
    client = tracking_ref.client()
    model_path = workspace.stage_dir(cache_key) / "model.keras"

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        tracking.log_epoch(client, run_id, epoch, logs)
        logger.info("epoch %d/%d: %s", epoch + 1, config.train.epochs, training.describe_epoch(logs))

    with tracking.failure_recorded(tracking_ref, run_id):
        history = training.train_baseline(dataset, config.model, config.train, model_path, on_epoch=on_epoch)
        for name in ("epochs_run", "train_seconds", "train_samples_per_s"):
            client.log_metric(run_id, name, history[name])
        sparsity = compression.keras_sparsity(training.load_keras_model(model_path))
        baseline = VariantRef(variant=BASELINE, model_path=str(model_path), run_id=run_id, sparsity=sparsity)
        tracking.log_variant_params(tracking_ref, baseline)
    logger.info(
        "trained the baseline in %d epochs (%.1f s, %.0f samples/s)",
        history["epochs_run"], history["train_seconds"], history["train_samples_per_s"],
    )
    return baseline
