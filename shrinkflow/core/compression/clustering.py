"""Weight clustering of a copy of a model (tensorflow-model-optimization), fine-tuned while it clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.compression.tuning import CompressionError, fine_tune, load_model
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.steps import ClusterStep
from shrinkflow.core.training import save_for_inference


def cluster(source_path: str | Path, dataset: DatasetRef, step: ClusterStep, out_path: str | Path, preserve_sparsity: bool) -> int:
    """Cluster a copy of the model's weights (k-means++ centroids) while fine-tuning it, and save it plain.

    Every Dense, Conv1D, Conv2D and Embedding kernel ends with at most `step.clusters` distinct values (per output
    channel for conv kernels when `per_channel`). With `preserve_sparsity`, for a pruned source, zeros stay
    zero (sparsity-preserving clustering). A kernel whose channels have too few weights for that many
    clusters is clustered per tensor, and one too small even so into fewer clusters (clusters_that_fit):
    every kernel is clustered, so that PCQAT, which keeps zeros only in clustered layers, keeps them all. Fine-tunes as `step.tuning` says; the clustering wrappers are stripped before saving.

    Returns:
        How many kernels were clustered.

    Raises:
        CompressionError: the model cannot be read or clustered.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from tensorflow_model_optimization.python.core.clustering.keras.experimental import cluster as experimental

    tf_keras.utils.set_random_seed(step.tuning.seed)
    model = load_model(source_path)
    clustered_layers = 0

    def clustered_copy(layer: Any) -> Any:
        nonlocal clustered_layers
        if not isinstance(layer, _clustered_layers()):
            return layer  # as tfmot's guide does: the layer itself, weights and all
        kernel = getattr(layer, "embeddings" if isinstance(layer, tf_keras.layers.Embedding) else "kernel").numpy()
        per_channel = step.per_channel and isinstance(layer, tf_keras.layers.Conv2D) and all(
            clusters_that_fit(kernel[..., channel], step.clusters, preserve_sparsity) == step.clusters
            for channel in range(kernel.shape[-1])
        )
        clusters = step.clusters if per_channel else clusters_that_fit(kernel, step.clusters, preserve_sparsity)
        if clusters < min_clusters(preserve_sparsity):
            return layer  # too few weights to cluster: it has at most a handful of distinct values anyway
        clustered_layers += 1
        return experimental.cluster_weights(
            layer,
            number_of_clusters=clusters,
            cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity=preserve_sparsity,
            cluster_per_channel=per_channel,
        )

    try:
        clustered = tf_keras.models.clone_model(model, clone_function=clustered_copy)
    except Exception as exc:  # tfmot raises ValueError, TypeError, InvalidArgumentError, ...
        raise CompressionError(f"{source_path}: cannot cluster the model's weights ({type(exc).__name__}: {exc})") from exc
    fine_tune(clustered, dataset, step.tuning)
    save_for_inference(tfmot.clustering.keras.strip_clustering(clustered), out_path)
    return clustered_layers


def _clustered_layers() -> tuple[type, ...]:
    """The layers whose kernels are clustered: those tfmot clusters (recurrent layers' kernels are left as they are)."""
    from tf_keras import layers

    return (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Embedding)


def min_clusters(preserve_sparsity: bool) -> int:
    """tfmot's least number of clusters: 2, or 3 when preserving sparsity (zero is a cluster of its own)."""
    return 3 if preserve_sparsity else 2


def clusters_that_fit(weights: np.ndarray, clusters: int, preserve_sparsity: bool) -> int:
    """The most clusters, up to `clusters`, that tfmot's k-means++ initialisation can place in `weights`:
    one per weight; sparsity-preserving, zero is a centroid of its own and the others are shared out
    between negative and positive weights in proportion, so each sign needs as many weights as clusters."""
    if not preserve_sparsity:
        return min(clusters, int(weights.size))
    return min(clusters, 1 + min(int(np.count_nonzero(weights > 0)), int(np.count_nonzero(weights < 0))))
