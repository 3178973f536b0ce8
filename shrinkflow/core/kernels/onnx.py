"""The kernels of an ONNX file: the stored initializers behind the weight inputs of its operators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from shrinkflow.core.kernels.stats import KernelStats, kernel_stats

# ONNX operators whose second input is a weight kernel, and the axis of its output channels there.
KERNEL_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": -1, "Gemm": -1, "LSTM": 1, "GRU": 1, "Gather": -1}
# Which inputs of those nodes are kernels: the weights of a Conv, MatMul or Gemm; the input and recurrent
# weights (W, R) of an LSTM or GRU; the table of a Gather (an embedding lookup).
KERNEL_INPUTS = {"LSTM": (1, 2), "GRU": (1, 2), "Gather": (0,)}
# onnx.TensorProto data types of stored weights, with their width in bits.
STORED_BITS = {1: 32, 3: 8, 2: 8, 10: 16, 11: 64}


def onnx_kernel_stats(path: str | Path) -> Iterator[KernelStats]:
    """The weight kernels of an ONNX file: the stored initializers behind the kernel inputs of Conv, MatMul,
    Gemm, LSTM, GRU and Gather nodes (KERNEL_INPUTS), followed back through DequantizeLinear (int8 weights of
    a QDQ model)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    seen: set[str] = set()
    kernel_inputs = [
        (node, position) for node in graph.node if node.op_type in KERNEL_CHANNEL_AXIS
        for position in KERNEL_INPUTS.get(node.op_type, (1,)) if position < len(node.input)
    ]
    for node, position in kernel_inputs:
        name, zero_point = node.input[position], None
        while name in producers and producers[name].op_type in ("DequantizeLinear", "Transpose", "Identity"):
            producer = producers[name]
            if producer.op_type == "DequantizeLinear" and len(producer.input) > 2:
                zero_point = producer.input[2]
            name = producer.input[0]
        if name not in initializers or name in seen:
            continue
        seen.add(name)
        tensor = initializers[name]
        values = numpy_helper.to_array(tensor)
        zero = 0
        if zero_point in initializers:
            zero_points = numpy_helper.to_array(initializers[zero_point]).ravel()
            zero = int(zero_points[0]) if zero_points.size else 0  # symmetric int8 weights: all zero
        axis = KERNEL_CHANNEL_AXIS[node.op_type] % max(values.ndim, 1)
        yield kernel_stats(name, values, STORED_BITS.get(tensor.data_type, 32), zero, channel_axis=axis)
