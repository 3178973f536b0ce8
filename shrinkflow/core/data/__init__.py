"""Data: read and check a source, split and scale it once into a content-addressed file, and hand stages a small
reference to it (DatasetRef)."""

from shrinkflow.core.data.dataset import DatasetRef, Splits, load_splits, load_vocabulary
from shrinkflow.core.data.prepare import prepare_dataset, source_stamp
from shrinkflow.core.data.readers import ACCEPTED_SOURCES

__all__ = ["ACCEPTED_SOURCES", "DatasetRef", "Splits", "load_splits", "load_vocabulary", "prepare_dataset", "source_stamp"]
