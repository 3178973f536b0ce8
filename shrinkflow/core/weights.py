"""What a model file stores for its weights: per kernel, how many are non-zero and how many distinct values
they take, and `param_bits`, the storage the literature's compression tables count.

param_bits of a kernel is the cheapest of three encodings of its non-zero weights: each weight at its
stored width (32 bits for float32, 16 for float16, 8 for int8); or an index of ceil(log2(k)) bits into a
codebook of its k distinct values (the codebook counted at the stored width), with one codebook for the
whole kernel or one per output channel. Zeros cost nothing and the positions of the non-zeros are not
counted, as in "non-zero weights x bits per weight + codebooks". Biases and other small tensors are left
out: only kernels count, the weights pruning and clustering act on (see compression.keras_sparsity).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class KernelStats:
    """One kernel as stored: its weights, the non-zero ones, the most distinct values in one output channel
    and in the whole kernel, the stored bits per weight, and its param_bits."""

    name: str
    weights: int
    nonzero: int
    unique_per_channel: int
    unique: int
    stored_bits: int
    param_bits: int


@dataclass(frozen=True)
class WeightStats:
    """A model file's kernels, and their totals."""

    kernels: tuple[KernelStats, ...]

    @property
    def param_bits(self) -> int:
        return sum(kernel.param_bits for kernel in self.kernels)

    @property
    def sparsity(self) -> float:
        """Share of zeros among the kernels' weights (compression.keras_sparsity and tflite_sparsity count
        the same kernels the same way)."""
        weights = sum(kernel.weights for kernel in self.kernels)
        return 1 - sum(kernel.nonzero for kernel in self.kernels) / weights if weights else 0.0

    @property
    def max_unique(self) -> int:
        """The most distinct non-zero values in any one kernel: at most k after clustering into k (per tensor)."""
        return max((kernel.unique for kernel in self.kernels), default=0)

    def as_table(self) -> dict[str, list[Any]]:
        """Per-kernel columns, for an MLflow table artifact."""
        return {name: [getattr(kernel, name) for kernel in self.kernels] for name in KernelStats.__dataclass_fields__}


def kernel_stats(
    name: str, values: np.ndarray, stored_bits: int, zero: Any = 0, channel_axis: int | None = None,
    weights: int | None = None,
) -> KernelStats:
    """The stats of one kernel from its stored values (quantized integers as stored, with their `zero`
    point); `channel_axis` is the axis of its output channels (None: a flat list of stored values, such as
    the non-zeros of a sparse-encoded kernel of `weights` weights)."""
    nonzero_mask = values != zero
    nonzero = int(np.count_nonzero(nonzero_mask))
    whole = int(np.unique(values[nonzero_mask]).size)
    encodings = [nonzero * stored_bits, _codebook_bits(nonzero, [whole], stored_bits)]
    per_channel = whole
    if channel_axis is not None and values.ndim > 1:
        channels = np.moveaxis(values, channel_axis, 0).reshape(values.shape[channel_axis], -1)
        uniques = [int(np.unique(channel[channel != zero]).size) for channel in channels]
        per_channel = max(uniques, default=0)
        encodings.append(_codebook_bits(nonzero, uniques, stored_bits))
    return KernelStats(name, int(values.size if weights is None else weights), nonzero, per_channel, whole, stored_bits, min(encodings))


def _codebook_bits(nonzero: int, uniques: Iterable[int], stored_bits: int) -> int:
    uniques = list(uniques)
    most = max(uniques, default=0)
    index_bits = math.ceil(math.log2(most)) if most > 1 else (1 if most else 0)
    return nonzero * index_bits + sum(uniques) * stored_bits


def weight_stats(path: str | Path) -> WeightStats:
    """The kernels of a `.keras`, `.tflite` or `.onnx` file."""
    suffix = Path(path).suffix
    if suffix == ".tflite":
        return WeightStats(tuple(_tflite_kernel_stats(path)))
    if suffix == ".onnx":
        from shrinkflow.core.onnx_models import onnx_kernel_stats

        return WeightStats(tuple(onnx_kernel_stats(path)))
    return WeightStats(tuple(_keras_kernel_stats(path)))


def _keras_kernel_stats(path: str | Path) -> Iterator[KernelStats]:
    from shrinkflow.core.compression import keras_kernels
    from shrinkflow.core.training import load_keras_model

    for name, kernel in keras_kernels(load_keras_model(path)):
        yield kernel_stats(name, kernel, 32, channel_axis=kernel.ndim - 1)  # Keras kernels end in the output axis


def _tflite_kernel_stats(path: str | Path) -> Iterator[KernelStats]:
    from shrinkflow.core.compression import tflite_kernel_values, tflite_kernels

    content = Path(path).read_bytes()
    for tensor, data in tflite_kernels(content, str(path)):
        values = tflite_kernel_values(tensor, data)
        shape = tuple(int(size) for size in tensor.shape)
        zero_points = getattr(tensor.quantization, "zeroPoint", None)
        # TFLite's int8 weights are symmetric (zero point 0, per channel too); one zero point serves.
        zero = int(zero_points[0]) if zero_points is not None and len(zero_points) else 0
        dense = tensor.sparsity is None and values.size == int(np.prod(shape))
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        # TFLite kernels start with the output channels (OHWI, and [out, in] for FULLY_CONNECTED).
        yield kernel_stats(
            name, values.reshape(shape) if dense else values, values.itemsize * 8, zero,
            channel_axis=0 if dense else None, weights=int(np.prod(shape)),
        )
