"""Running a model file: a function from a batch of model inputs to its outputs, for each file type shrinkflow
writes (Keras in TensorFlow, TFLite in LiteRT, ONNX in ONNX Runtime).

Self-contained: numpy and the file's own runtime, imported when a file of its kind is loaded, and nothing of
shrinkflow. Every registered model carries a copy of this file (see shrinkflow.core.serving), so a served model
runs its file exactly as the pipeline evaluated it, where shrinkflow is not installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BatchPredictor = Callable[[np.ndarray], np.ndarray]
# Samples per call into a runtime: bounds the memory of the intermediate tensors whatever the batch.
CHUNK = 256
ONNX_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def load_predictor(model_path: str | Path) -> BatchPredictor:
    """A function from a batch of model inputs (scaled features, token ids) to the model's outputs (class
    probabilities, standardized regression targets), for any of the three file types."""
    path = Path(model_path)
    if path.suffix == ".tflite":
        return tflite_predictor(path)
    if path.suffix == ".keras":
        return keras_predictor(path)
    if path.suffix == ".onnx":
        return onnx_predictor(path)
    raise ValueError(f"cannot run {path}: expected a .keras, .tflite or .onnx file")


def keras_predictor(path: str | Path) -> BatchPredictor:
    import tensorflow as tf
    import tf_keras

    model = tf_keras.models.load_model(path, compile=False)
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(batch: np.ndarray) -> np.ndarray:
        if len(batch) <= 64:  # a traced call: model.predict costs milliseconds of set-up per call
            return call(tf.constant(batch, dtype=tf.float32)).numpy()
        return model.predict(batch, batch_size=CHUNK, verbose=0)

    return predict


def tflite_predictor(path: str | Path) -> BatchPredictor:
    """Batches of up to CHUNK samples per invoke when the file's batch dimension is dynamic (what converters
    from Keras write); one sample per invoke when it is fixed (recurrent models, converted for one sample)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_index = interpreter.get_output_details()[0]["index"]
    sample_shape = [int(size) for size in input_detail["shape"][1:]]
    step = CHUNK if int(input_detail["shape_signature"][0]) == -1 else int(input_detail["shape"][0])
    batch_size = [int(input_detail["shape"][0])]
    lock = threading.Lock()  # an interpreter runs one call at a time; a scoring server calls from a thread pool

    def run(chunk: np.ndarray) -> np.ndarray:
        if len(chunk) != batch_size[0]:
            interpreter.resize_tensor_input(input_detail["index"], [len(chunk), *sample_shape])
            interpreter.allocate_tensors()
            batch_size[0] = len(chunk)
        interpreter.set_tensor(input_detail["index"], quantize(chunk, input_detail))
        # A fused LSTM keeps its state in variable tensors that carry over between calls: start from zero.
        interpreter.reset_all_variables()
        interpreter.invoke()
        output_detail = interpreter.get_output_details()[0]  # its quantization is fixed, its shape follows the batch
        return dequantize(interpreter.get_tensor(output_index), output_detail)

    def predict(batch: np.ndarray) -> np.ndarray:
        with lock:
            if len(batch) <= step:
                return run(batch)
            return np.concatenate([run(batch[start : start + step]) for start in range(0, len(batch), step)], axis=0)

    return predict


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float inputs as the input tensor's dtype: affine-quantized (and clipped) if it is an integer."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An output tensor as float32, undoing its affine quantization if it is an integer."""
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return y.astype(np.float32)


def onnx_session_options() -> Any:
    """ONNX Runtime settings for shrinkflow's small models (measured in bench/onnx_latency.py).

    One intra-op thread: a sample takes microseconds, less than handing work to a thread pool, and a pool's
    threads take the cores from the caller (64 samples per call ran 2x faster on the MNIST teacher). With one
    thread there is no pool to spin, and sequential execution uses no inter-op threads, so neither is set.
    QDQ fusion stays on (the default): the int8 files shrinkflow writes have every QuantizeLinear next to its
    DequantizeLinear (see shrinkflow.core.compression.onnx), so ONNX Runtime runs every layer with integer kernels.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: QDQ models log a warning per node otherwise
    options.intra_op_num_threads = 1
    return options


def onnx_predictor(path: str | Path, options: Any = None) -> BatchPredictor:
    """A function from a batch of model inputs to the model's first output, run by onnxruntime on the CPU
    (`options`: onnx_session_options() unless given)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(path), options or onnx_session_options(), providers=["CPUExecutionProvider"]
    )
    model_input = session.get_inputs()[0]
    dtype = ONNX_INPUT_TYPES.get(model_input.type, np.float32)
    output_names = [session.get_outputs()[0].name]
    fixed_batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else None
    step = fixed_batch or CHUNK

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=dtype)
        if len(batch) <= step:
            return np.asarray(session.run(output_names, {model_input.name: batch})[0], dtype=np.float32)
        outputs = [session.run(output_names, {model_input.name: batch[start : start + step]})[0] for start in range(0, len(batch), step)]
        return np.asarray(np.concatenate(outputs, axis=0), dtype=np.float32)

    return predict


def describe_io(model_path: str | Path) -> dict[str, Any]:
    """What a .tflite or .onnx file's first input and output tensors are, for its clients: name, dtype, shape
    (-1: any size) and, for an integer TFLite tensor, its quantization (real value = (q - zero_point) * scale)."""
    path = Path(model_path)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), onnx_session_options(), providers=["CPUExecutionProvider"])
        return {
            side: {"name": tensor.name, "dtype": tensor.type, "shape": [size if isinstance(size, int) else -1 for size in tensor.shape]}
            for side, tensor in (("input", session.get_inputs()[0]), ("output", session.get_outputs()[0]))
        }
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    described = {}
    for side, detail in (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0])):
        described[side] = {
            "name": detail["name"], "dtype": np.dtype(detail["dtype"]).name, "shape": [int(size) for size in detail["shape_signature"]],
        }
        scale, zero_point = detail["quantization"]
        if scale:  # token ids are integers too, but not quantized
            described[side]["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return described
