"""An MLflow pyfunc model that runs a `.tflite` file: scaled features in, class probabilities out.

MLflow logs this file as "models from code": it copies the file into the logged model and executes
it under a throw-away module name whenever the model is loaded. So the file is self-contained (numpy,
pandas, mlflow and ai_edge_litert only, never `shrinkflow`), and the logged model loads and serves
where shrinkflow is not installed. It registers its model with `mlflow.models.set_model` only when
executed that way; importing it as `shrinkflow.tracking.tflite_pyfunc` has no side effects.

The TFLite file is the model's artifact `TFLITE_ARTIFACT`. Fully int8-quantized files take and give
int8 tensors: inputs are quantized and outputs dequantized here with the tensors' own scale and zero
point, as `shrinkflow.core.evaluation` does, so callers always pass float32 and get float32.
"""

import threading
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel, PythonModelContext

TFLITE_ARTIFACT = "tflite"
BATCH_SIZE = 256


class TFLiteModel(PythonModel):
    """Class probabilities, float32 (n, num_classes), from float32 features (n, *input_shape).

    Through `mlflow.pyfunc` (and serving) the tensor signature decides what gets here: arrays of
    shape (n, *input_shape), or DataFrames with one column of flattened samples, which MLflow
    reshapes. Called directly, `predict` also takes flattened features, (n, prod(input_shape)), as
    an array or as a DataFrame with one column per feature, and reshapes them itself.
    """

    def load_context(self, context: PythonModelContext) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=context.artifacts[TFLITE_ARTIFACT])
        self._interpreter.allocate_tensors()
        detail = self._interpreter.get_input_details()[0]
        self._input_index = detail["index"]
        self._input_shape = tuple(int(d) for d in detail["shape"][1:])
        # Converters from Keras leave the batch dimension dynamic (-1): run chunks of samples at once.
        self._dynamic_batch = int(detail["shape_signature"][0]) == -1
        self._batch = int(detail["shape"][0])
        self._output_shape = tuple(int(d) for d in self._output_detail()["shape"][1:])
        # `mlflow models serve` calls predict from a thread pool; an interpreter runs one call at a time.
        self._lock = threading.Lock()

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        x = self._features(model_input)
        if len(x) == 0:
            return np.zeros((0, *self._output_shape), dtype=np.float32)
        step = BATCH_SIZE if self._dynamic_batch else 1
        with self._lock:
            outputs = [self._run(x[start : start + step]) for start in range(0, len(x), step)]
        return np.concatenate(outputs, axis=0)

    def _features(self, model_input: Any) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame):
            model_input = model_input.to_numpy()
        x = np.asarray(model_input, dtype=np.float32)
        return x.reshape((len(x), *self._input_shape))

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        if len(chunk) != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, [len(chunk), *self._input_shape])
            self._interpreter.allocate_tensors()
            self._batch = len(chunk)
        input_detail = self._interpreter.get_input_details()[0]
        self._interpreter.set_tensor(self._input_index, quantize(chunk, input_detail))
        self._interpreter.reset_all_variables()  # a recurrent model's state would carry over from the last call
        self._interpreter.invoke()
        output_detail = self._output_detail()
        return dequantize(self._interpreter.get_tensor(output_detail["index"]), output_detail)

    def _output_detail(self) -> dict[str, Any]:
        return self._interpreter.get_output_details()[0]


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float features as the input tensor's dtype: affine-quantized (and clipped) if it is an integer."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An output tensor as float32, undoing its affine quantization if it is an integer."""
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return y.astype(np.float32)


# MLflow executes this file as a top-level module (no package); `import shrinkflow.tracking.tflite_pyfunc`
# gives it the package "shrinkflow" and must not touch MLflow's global model slot.
if not __package__:
    set_model(TFLiteModel())
