"""Reading a model file's weight kernels, for every format shrinkflow writes: Keras, TFLite and ONNX."""

from __future__ import annotations

from pathlib import Path

from shrinkflow.core.kernels.keras import keras_kernel_stats
from shrinkflow.core.kernels.onnx import onnx_kernel_stats
from shrinkflow.core.kernels.stats import KernelStats, WeightStats, kernel_stats
from shrinkflow.core.kernels.tflite import tflite_kernel_stats

__all__ = ["KernelStats", "WeightStats", "kernel_stats", "weight_stats"]


def weight_stats(path: str | Path) -> WeightStats:
    """The kernels of a `.keras`, `.tflite` or `.onnx` file."""
    suffix = Path(path).suffix
    if suffix == ".tflite":
        return WeightStats(tuple(tflite_kernel_stats(path)))
    if suffix == ".onnx":
        return WeightStats(tuple(onnx_kernel_stats(path)))
    return WeightStats(tuple(keras_kernel_stats(path)))
