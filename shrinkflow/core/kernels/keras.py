"""The kernels of a Keras model: the weights pruning and clustering act on, and how many of them are zero."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.kernels.stats import KernelStats, kernel_stats
from shrinkflow.core.training import load_keras_model


def keras_sparsity(model: Any) -> float:
    """Share of exact zeros among the kernels of a Keras model's Dense and convolution layers.

    These are the weights magnitude pruning acts on: biases and other weights are not counted.
    Layers of nested models count too. A model without such layers has sparsity 0.
    """
    zeros = total = 0
    for _, kernel in keras_kernels(model):
        zeros += int(np.count_nonzero(kernel == 0))
        total += kernel.size
    return zeros / total if total else 0.0


def keras_kernels(model: Any) -> Iterator[tuple[str, np.ndarray]]:
    """Each kernel of the model's Dense and convolution layers (nested models too), with its weight's name."""
    from tf_keras import layers

    kernel_layers = (  # transposed convolutions subclass the ConvND layers
        layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D,
        layers.DepthwiseConv1D, layers.DepthwiseConv2D, layers.SeparableConv1D, layers.SeparableConv2D,
        layers.LSTMCell, layers.GRUCell, layers.Embedding,
    )
    for layer in [model, *model.submodules]:
        if isinstance(layer, kernel_layers):
            for name in ("kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"):
                if getattr(layer, name, None) is not None:
                    weight = getattr(layer, name)
                    yield weight.name, weight.numpy()


def keras_kernel_stats(path: str | Path) -> Iterator[KernelStats]:
    for name, kernel in keras_kernels(load_keras_model(path)):
        yield kernel_stats(name, kernel, 32, channel_axis=kernel.ndim - 1)  # Keras kernels end in the output axis
