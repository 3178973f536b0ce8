"""Load, validate, split and scale the dataset."""

from prefect import task

from shrinkflow.tracking import runs as tracking
from shrinkflow.core.config import DataConfig
from shrinkflow.core.data import DatasetRef, prepare_dataset
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.core.workspace import Workspace
from tasks.options import CACHED_TASK, IO_TASK, retry_unless_user_error


@task(name="load-data", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error, **CACHED_TASK)
def load_data(data_cfg: DataConfig, workspace: Workspace, cache_key: str) -> DatasetRef:
    return prepare_dataset(data_cfg, workspace.datasets)


@task(name="track-dataset", **IO_TASK)
def track_dataset(tracking_ref: TrackingRef, dataset: DatasetRef, cache_hit: bool) -> None:
    tracking.log_dataset(tracking_ref, dataset, cache_hit)
