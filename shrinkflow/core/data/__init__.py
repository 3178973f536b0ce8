"""Data: read and check a source, split it once into a content-addressed folder of shards, hand stages a small
reference to it (DatasetRef), and read its splits back in batches (numpy or tf.data), never whole."""

from shrinkflow.core.data.dataset import (
    DatasetRef, batches, feature_scaler, load_vocabulary, sample_features, split_rows, split_targets, tf_dataset,
    write_targets,
)
from shrinkflow.core.data.prepare import prepare_dataset, source_stamp
from shrinkflow.core.data.readers import ACCEPTED_SOURCES

__all__ = [
    "ACCEPTED_SOURCES", "DatasetRef", "batches", "feature_scaler", "load_vocabulary", "prepare_dataset",
    "sample_features", "source_stamp", "split_rows", "split_targets", "tf_dataset", "write_targets",
]
