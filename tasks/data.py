"""Load, validate, split and scale the dataset."""

from prefect import task

from shrinkflow import tracking
from shrinkflow.config import DataConfig
from shrinkflow.data import DatasetRef, prepare_dataset
from shrinkflow.tracking import TrackingRef
from shrinkflow.workspace import Workspace
from tasks.options import IO_TASK


@task(name="load-data", **IO_TASK)
def load_data(data_cfg: DataConfig, workspace: Workspace, tracking_ref: TrackingRef) -> DatasetRef:
    dataset = prepare_dataset(data_cfg, workspace.datasets)
    tracking.log_dataset(tracking_ref, dataset)
    return dataset
