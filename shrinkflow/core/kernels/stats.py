"""What a model file stores for its weights: per kernel, how many are non-zero and how many distinct values
they take, and `param_bits`, the storage the literature's compression tables count.

param_bits of a kernel is the cheapest of three encodings of its non-zero weights: each weight at its
stored width (32 bits for float32, 16 for float16, 8 for int8); or an index of ceil(log2(k)) bits into a
codebook of its k distinct values (the codebook counted at the stored width), with one codebook for the
whole kernel or one per output channel. Zeros cost nothing and the positions of the non-zeros are not
counted, as in "non-zero weights x bits per weight + codebooks". Biases and other small tensors are left
out: only kernels count, the weights pruning and clustering act on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
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
        """Share of zeros among the kernels' weights (keras_sparsity and tflite_sparsity count
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
