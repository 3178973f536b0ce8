"""The kernels of a TFLite file, read from its flatbuffer: which stored tensors are weight kernels, their values
as stored, and how many are zero.

LiteRT's interpreter hides sparse-encoded constants, so the flatbuffer is parsed directly (ai_edge_litert's
generated schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.kernels.stats import KernelStats, kernel_stats

# TFLite operators with weight kernels, and which of their inputs are kernels: the filter of convolutions and
# fully connected layers, the input and recurrent weights of a fused LSTM, the table of an embedding lookup.
KERNEL_INPUTS: dict[str, tuple[int, ...]] = {
    "CONV_2D": (1,), "CONV_3D": (1,), "DEPTHWISE_CONV_2D": (1,), "FULLY_CONNECTED": (1,), "TRANSPOSE_CONV": (1,),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9)), "GATHER": (0,),
}
# Operators the converter puts between a stored kernel and its consumer: DEQUANTIZE expands float16
# (or int8) weights to float32, DENSIFY expands a sparse-encoded kernel.
WEIGHT_EXPANDING_OPERATORS = ("DEQUANTIZE", "DENSIFY")
KERNEL_DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16}


def tflite_sparsity(tflite_path: str | Path) -> float:
    """Share of zero weights among the kernels of a TFLite model's convolution and fully connected operators.

    What counts:
      - A kernel is the stored constant behind the second input of CONV_2D, CONV_3D,
        DEPTHWISE_CONV_2D, FULLY_CONNECTED or TRANSPOSE_CONV, followed back through DEQUANTIZE
        (float16 weights) and DENSIFY (sparse-encoded weights). Biases and activations never count.
      - Each kernel counts with its dense size; the elements a sparse encoding leaves out are zeros.
      - A float weight is zero when it is exactly 0. A quantized weight is zero when its stored
        integer equals its zero point (per channel for per-channel quantization): TFLite's int8
        weights are symmetric, so that is a stored 0, which is exactly what a pruned 0.0 becomes.
        Post-training quantization also rounds weights smaller than half a quantization step to 0,
        so a dense model's int8 file shows a little sparsity of its own.

    The flatbuffer is parsed directly: LiteRT's interpreter hides sparse-encoded constants.

    Raises:
        ValueError: the file is not a TFLite model, or a kernel's storage is not understood.
    """
    content = Path(tflite_path).read_bytes()
    zeros = total = 0
    for tensor, data in tflite_kernels(content, str(tflite_path)):
        kernel_zeros, kernel_size = _count_zero_weights(tensor, data)
        zeros += kernel_zeros
        total += kernel_size
    return zeros / total if total else 0.0


def tflite_kernels(content: bytes, source: str) -> Iterator[tuple[Any, bytes]]:
    """Each stored kernel of the model's subgraphs, once: its tensor and its stored bytes."""
    from ai_edge_litert import schema_py_generated as schema

    if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
        raise ValueError(f"{source}: not a TFLite model")
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if isinstance(code, int)}
    # Old files keep the code in deprecatedBuiltinCode (capped at 127); newer ones in builtinCode.
    opcode_names = [names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) for code in model.operatorCodes]
    for subgraph in model.subgraphs:
        producers = {output: op for op in subgraph.operators for output in _as_list(op.outputs)}
        seen: set[int] = set()
        for op in subgraph.operators:
            inputs = _as_list(op.inputs)
            for position in KERNEL_INPUTS.get(opcode_names[op.opcodeIndex] or "", ()):
                if position >= len(inputs):
                    continue
                index = inputs[position]
                while index in producers and opcode_names[producers[index].opcodeIndex] in WEIGHT_EXPANDING_OPERATORS:
                    index = _as_list(producers[index].inputs)[0]
                if index < 0 or index in seen or index in producers:
                    continue  # no kernel, already counted, or computed at run time: not a stored weight
                seen.add(index)
                tensor = subgraph.tensors[index]
                data = _buffer_bytes(model.buffers[tensor.buffer], content)
                if data:
                    yield tensor, data


def _as_list(indices: Any) -> list[int]:
    """Tensor indices of a parsed operator (None when the flatbuffer stores none)."""
    return [] if indices is None else [int(index) for index in indices]


def _buffer_bytes(buffer: Any, content: bytes) -> bytes:
    """A buffer's bytes, stored inline or (in files over 2 GB) after the flatbuffer at an offset."""
    if buffer.data is not None:
        return bytes(buffer.data)
    if buffer.offset > 1:
        return content[buffer.offset : buffer.offset + buffer.size]
    return b""


def tflite_kernel_values(tensor: Any, data: bytes) -> np.ndarray:
    """A stored kernel's values as stored (quantized integers for a quantized kernel), flat.

    Raises:
        ValueError: a weight type whose storage is not understood.
    """
    from ai_edge_litert.schema_py_generated import TensorType

    type_names = {code: name for name, code in vars(TensorType).items() if isinstance(code, int)}
    type_name = type_names.get(tensor.type, f"type {tensor.type}")
    if type_name not in KERNEL_DTYPES:
        raise ValueError(f"kernel {tensor.name!r}: cannot read {type_name} weights")
    return np.frombuffer(data, dtype=KERNEL_DTYPES[type_name])


def _count_zero_weights(tensor: Any, data: bytes) -> tuple[int, int]:
    """How many of one kernel's weights are zero (see tflite_sparsity), and how many weights it has."""
    values = tflite_kernel_values(tensor, data)
    shape = tuple(int(size) for size in tensor.shape)
    dense_size = int(np.prod(shape))
    stored_zero_points = getattr(tensor.quantization, "zeroPoint", None)
    has_zero_points = stored_zero_points is not None and len(stored_zero_points) > 0
    zero_points = np.asarray(stored_zero_points) if has_zero_points else np.zeros(1, dtype=np.int64)
    if tensor.sparsity is not None:
        if np.any(zero_points != zero_points[0]):
            raise ValueError(f"kernel {tensor.name!r}: sparse-encoded with per-channel zero points")
        return dense_size - values.size + int(np.count_nonzero(values == zero_points[0])), dense_size
    if values.size != dense_size:
        raise ValueError(f"kernel {tensor.name!r}: {values.size} stored values for shape {list(shape)}")
    if len(zero_points) > 1:  # per-channel: broadcast along the quantized dimension
        axis_shape = [1] * len(shape)
        axis_shape[tensor.quantization.quantizedDimension] = len(zero_points)
        zero_points = np.broadcast_to(zero_points.reshape(axis_shape), shape).ravel()
    return int(np.count_nonzero(values == zero_points)), dense_size


def tflite_kernel_stats(path: str | Path) -> Iterator[KernelStats]:
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
