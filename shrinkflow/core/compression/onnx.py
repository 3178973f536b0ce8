"""ONNX Runtime as a second target: convert a variant to ONNX with tf2onnx.

Two conversion routes work with tf2onnx 1.17 on this TensorFlow (its `from_keras` does not, on
TensorFlow >= 2.16): a Keras model through its SavedModel (the serving signature shrinkflow exports,
float weights), and an int8 or QAT TFLite file (`from_tflite`: QuantizeLinear / DequantizeLinear pairs
around int8 weights, "QDQ" ONNX, which onnxruntime runs with integer kernels). The result is checked to
run in onnxruntime before it is written.

tf2onnx writes the NHWC-to-NCHW Reshape or Transpose of an int8 graph (and a Flatten's Reshape) between a
QuantizeLinear and its DequantizeLinear, where onnxruntime's QDQ fusion does not look: those layers would run
as float kernels dequantizing their int8 weights on every call. The TFLite route therefore moves such layout
operators before the QuantizeLinear (quantize_after_layout_ops), which changes no value: quantizing element by
element with one scale commutes with moving elements. The moved graph is kept only if it gives the same
outputs as tf2onnx's; otherwise tf2onnx's file is written as it is.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.export import write_saved_model
from shrinkflow.core.files import atomic_path
from shrinkflow.core.predictors import ONNX_INPUT_TYPES, onnx_predictor

# The opsets tf2onnx 1.17 can target (tf2onnx.constants.OPSET_TO_IR_VERSION) from the first with
# per-channel QuantizeLinear / DequantizeLinear, which QDQ models need.
MIN_OPSET, MAX_OPSET = 13, 18
# How long one SavedModel conversion may take; tf2onnx needs seconds for the models shrinkflow trains.
CONVERT_TIMEOUT_S = 600
# Operators that only move elements (data is their first input, one output): they commute with a QuantizeLinear
# that has one scale and zero point for the whole tensor.
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"})
# Samples in the random batch that checks a moved graph against tf2onnx's (more than one: a Reshape may fold
# the batch dimension).
CHECK_SAMPLES = 3


class OnnxConversionError(RuntimeError):
    """A model could not be converted to ONNX, or onnxruntime cannot run the result; nothing was written."""


def convert_to_onnx(model_path: str | Path, opset: int, out_path: str | Path) -> None:
    """Convert a `.keras` file (through its SavedModel) or a `.tflite` file to an ONNX file.

    Raises:
        OnnxConversionError: tf2onnx fails, or onnxruntime cannot run what it produced.
    """
    model_path = Path(model_path)
    with atomic_path(out_path) as partial:
        if model_path.suffix == ".tflite":
            convert_tflite(model_path, opset, partial)
            _fuse_quantized_layers(partial)
        else:
            _convert_saved_model(model_path, opset, partial)
        problem = onnxruntime_problem(partial)
        if problem is not None:
            raise OnnxConversionError(f"ONNX conversion of {model_path} gave a model onnxruntime cannot run ({problem})")


def convert_tflite(model_path: str | Path, opset: int, out_path: str | Path) -> None:
    """tf2onnx's conversion of a .tflite file, as tf2onnx writes it."""
    import tf2onnx

    try:
        tf2onnx.convert.from_tflite(str(model_path), opset=opset, output_path=str(out_path))
    except Exception as exc:  # tf2onnx raises many types for an operator it cannot convert
        raise OnnxConversionError(f"ONNX conversion of {model_path} failed ({type(exc).__name__}: {exc})") from exc


def _fuse_quantized_layers(path: Path) -> None:
    """Rewrite the ONNX file at `path` with quantize_after_layout_ops, if that moves anything and the result runs
    and gives the same outputs on an all-zero and a random batch; otherwise leave it as it is."""
    import onnx

    model = onnx.load(str(path))
    if not quantize_after_layout_ops(model):
        return
    moved = path.with_name(f"moved-{path.name}")
    try:
        onnx.save(model, str(moved))
        if onnxruntime_problem(moved) is None and _same_outputs(path, moved):
            moved.replace(path)
    finally:
        moved.unlink(missing_ok=True)


def quantize_after_layout_ops(model: Any) -> int:
    """Move every QuantizeLinear with one scale (an activation's) whose output goes only through layout
    operators (LAYOUT_OPS, one consumer each) into DequantizeLinear nodes to the end of that chain, in place:
    the chain then moves floats, and each DequantizeLinear reads its QuantizeLinear directly, the pattern
    onnxruntime fuses into integer kernels. Returns how many QuantizeLinear nodes moved."""
    from onnx import numpy_helper

    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {output.name for output in graph.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    names = {name for node in graph.node for name in (*node.input, *node.output)} | set(initializers)
    moved = 0
    for quantize in [node for node in graph.node if node.op_type == "QuantizeLinear"]:
        scale = initializers.get(quantize.input[1])
        if scale is None or numpy_helper.to_array(scale).size != 1:
            continue  # per-channel (a weight's): moving an axis would change which scale applies where
        chain, tensor = [], quantize.output[0]
        while tensor not in graph_outputs and len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type in LAYOUT_OPS:
            chain.append(consumers[tensor][0])
            tensor = chain[-1].output[0]
        ends_in_dequantize = consumers.get(tensor) and all(node.op_type == "DequantizeLinear" for node in consumers[tensor])
        if not chain or tensor in graph_outputs or not ends_in_dequantize:
            continue
        float_tensor = _unused_name(f"{tensor}_float", names)
        chain[0].input[0], chain[-1].output[0] = quantize.input[0], float_tensor
        quantize.input[0], quantize.output[0] = float_tensor, tensor
        graph.node.remove(quantize)  # and back after the chain: nodes stay in topological order
        graph.node.insert(list(graph.node).index(chain[-1]) + 1, quantize)
        # The chain's tensors are float now: drop what the file recorded of their int8 type.
        retyped = {node.output[0] for node in chain}
        kept = [info for info in graph.value_info if info.name not in retyped]
        del graph.value_info[:]
        graph.value_info.extend(kept)
        moved += 1
    return moved


def _unused_name(name: str, names: set[str]) -> str:
    candidate, number = name, 0
    while candidate in names:
        number += 1
        candidate = f"{name}_{number}"
    names.add(candidate)
    return candidate


def _same_outputs(original: Path, moved: Path) -> bool:
    """Whether two ONNX files give bit-identical outputs on an all-zero and a random batch, run as the ONNX
    operators define them (onnxruntime's graph optimizations off)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = [onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for path in (original, moved)]
    model_input = sessions[0].get_inputs()[0]
    dtype = ONNX_INPUT_TYPES.get(model_input.type, np.float32)
    batch_size = model_input.shape[0] if isinstance(model_input.shape[0], int) else CHECK_SAMPLES
    shape = (batch_size, *_input_shape(original))
    rng = np.random.default_rng(0)
    batches = [np.zeros(shape, dtype), (rng.random(shape) if np.issubdtype(dtype, np.floating) else rng.integers(0, 2, shape)).astype(dtype)]
    for batch in batches:
        first, second = (session.run(None, {model_input.name: batch}) for session in sessions)
        if not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True)):
            return False
    return True


def _convert_saved_model(model_path: Path, opset: int, out_path: Path) -> None:
    """Through the SavedModel shrinkflow exports, converted by tf2onnx's command in a process of its own (its
    Python API takes only graphs and functions, and it changes global TensorFlow state)."""
    with tempfile.TemporaryDirectory(prefix="shrinkflow-onnx-") as scratch:
        saved_model = Path(scratch) / "saved_model"
        write_saved_model(model_path, saved_model)
        done = subprocess.run(
            [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--opset", str(opset),
             "--output", str(out_path)],
            capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S,
        )
    if done.returncode != 0 or not out_path.exists():
        last_lines = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise OnnxConversionError(f"ONNX conversion of {model_path} failed:\n{last_lines}")


def onnxruntime_problem(path: str | Path) -> str | None:
    """Why onnxruntime cannot run this model on an all-zero input; None if it can."""
    try:
        predict = onnx_predictor(path)
        predict(np.zeros((1, *_input_shape(path)), dtype=np.float32))
    except Exception as exc:  # onnxruntime raises its own exception types
        return f"{type(exc).__name__}: {exc}"
    return None


def _input_shape(path: str | Path) -> tuple[int, ...]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return tuple(int(size) if isinstance(size, int) else 1 for size in session.get_inputs()[0].shape[1:])
