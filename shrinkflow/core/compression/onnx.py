"""ONNX Runtime as a second target: convert a variant to ONNX with tf2onnx.

Two conversion routes work with tf2onnx 1.17 on this TensorFlow (its `from_keras` does not, on
TensorFlow >= 2.16): a Keras model through its SavedModel (the serving signature shrinkflow exports,
float weights), and an int8 or QAT TFLite file (`from_tflite`: QuantizeLinear / DequantizeLinear pairs
around int8 weights, "QDQ" ONNX, which onnxruntime runs with integer kernels). The result is checked to
run in onnxruntime before it is written.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from shrinkflow.core.export import write_saved_model
from shrinkflow.core.files import atomic_path
from shrinkflow.core.predictors import onnx_predictor

# The opsets tf2onnx 1.17 can target (tf2onnx.constants.OPSET_TO_IR_VERSION) from the first with
# per-channel QuantizeLinear / DequantizeLinear, which QDQ models need.
MIN_OPSET, MAX_OPSET = 13, 18
# How long one SavedModel conversion may take; tf2onnx needs seconds for the models shrinkflow trains.
CONVERT_TIMEOUT_S = 600


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
            _convert_tflite(model_path, opset, partial)
        else:
            _convert_saved_model(model_path, opset, partial)
        problem = onnxruntime_problem(partial)
        if problem is not None:
            raise OnnxConversionError(f"ONNX conversion of {model_path} gave a model onnxruntime cannot run ({problem})")


def _convert_tflite(model_path: Path, opset: int, out_path: Path) -> None:
    import tf2onnx

    try:
        tf2onnx.convert.from_tflite(str(model_path), opset=opset, output_path=str(out_path))
    except Exception as exc:  # tf2onnx raises many types for an operator it cannot convert
        raise OnnxConversionError(f"ONNX conversion of {model_path} failed ({type(exc).__name__}: {exc})") from exc


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
