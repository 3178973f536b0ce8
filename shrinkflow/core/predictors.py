"""Running a model file: a function from a batch of model inputs to its outputs, for each file type shrinkflow
writes (Keras in TensorFlow, TFLite in LiteRT, ONNX in ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.training import load_keras_model

BatchPredictor = Callable[[np.ndarray], np.ndarray]


def load_predictor(model_path: str | Path) -> BatchPredictor:
    """A function from a batch of model inputs (scaled features, token ids) to the model's outputs (class
    probabilities, standardized regression targets), for any of the three file types."""
    path = Path(model_path)
    if path.suffix == ".tflite":
        return _tflite_predictor(path)
    if path.suffix == ".keras":
        return _keras_predictor(path)
    if path.suffix == ".onnx":
        return onnx_predictor(path)
    raise ValueError(f"cannot evaluate {path}: expected a .keras, .tflite or .onnx file")


# Samples one call of a model takes at most; a larger batch is run in slices of this many.
SLICE = 8192


def _keras_predictor(path: Path) -> BatchPredictor:
    import tensorflow as tf

    model = load_keras_model(path)
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([
            call(tf.constant(batch[start : start + SLICE], dtype=tf.float32)).numpy() for start in range(0, len(batch), SLICE)
        ])

    return predict


def _tflite_predictor(path: Path) -> BatchPredictor:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    # A model converted with a dynamic batch size runs a whole slice per call; one converted for a single sample (a
    # recurrent model, see compression.tflite_converter) runs sample by sample with its state reset before each.
    by_slices = int(input_detail["shape_signature"][0]) == -1
    allocated = [1]  # the batch size the interpreter's tensors are allocated for

    def run_slice(batch: np.ndarray) -> np.ndarray:
        if len(batch) != allocated[0]:
            interpreter.resize_tensor_input(input_detail["index"], [len(batch), *input_detail["shape"][1:]])
            interpreter.allocate_tensors()
            allocated[0] = len(batch)
        interpreter.set_tensor(input_detail["index"], _quantize(batch, input_detail))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)

    def predict(batch: np.ndarray) -> np.ndarray:
        if by_slices:
            return np.concatenate([run_slice(batch[start : start + SLICE]) for start in range(0, len(batch), SLICE)])
        outputs = []
        for sample in batch:
            interpreter.set_tensor(input_detail["index"], _quantize(sample[None, ...], input_detail))
            # A fused LSTM keeps its state in variable tensors that carry over between calls: start from zero.
            interpreter.reset_all_variables()
            interpreter.invoke()
            outputs.append(_dequantize(interpreter.get_tensor(output_detail["index"]), output_detail))
        return np.concatenate(outputs, axis=0)

    return predict


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def onnx_predictor(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a batch of scaled features to class probabilities, run by onnxruntime on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: QDQ models log a warning per node otherwise
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: batch.astype(np.float32)})[0], dtype=np.float32)

    return predict
