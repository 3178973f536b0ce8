"""Logging a variant's model file to its MLflow run and registering it as a new version of the registered model:
Keras files with the `mlflow.tensorflow` flavor, TFLite files as a self-contained pyfunc model (tflite_pyfunc.py),
ONNX files with the `onnx` flavor. Each loads with `mlflow.pyfunc.load_model("models:/<name>/<version>")`.
"""

from __future__ import annotations

import contextlib
import io
from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from shrinkflow.core.names import Runtime
from shrinkflow.core.variants import Variant
from shrinkflow.tracking import tflite_pyfunc
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.tracking.store import client_for, fluent_mlflow

TFLITE_PYFUNC_CODE = Path(tflite_pyfunc.__file__)


def register_variant(tracking: TrackingRef, variant: Variant, registered_name: str, tags: dict[str, str]) -> str:
    """Log the variant's file to its child run and register it as a new version of `registered_name`; returns the
    version number."""
    register = {
        Runtime.TFLITE: log_and_register_tflite_model, Runtime.ONNXRUNTIME: log_and_register_onnx_model,
    }.get(variant.runtime, log_and_register_keras_model)
    # mlflow.register_model prints "Successfully registered model ..." to stderr itself; the run says it in its log.
    with contextlib.redirect_stderr(io.StringIO()):
        return str(register(tracking, variant.run_id, variant.model_path, registered_name, tags).version)


def log_and_register_keras_model(
    tracking: TrackingRef, run_id: str, keras_path: str, registered_name: str, tags: dict[str, str]
) -> ModelVersion:
    """Log the Keras model with the `mlflow.tensorflow` flavor and register it as a new version."""
    import mlflow
    import mlflow.tensorflow
    import numpy as np
    import tensorflow as tf
    import tf_keras
    from mlflow.models import infer_signature

    from shrinkflow.core.training import load_keras_model

    model = load_keras_model(keras_path)
    example = np.zeros((1, *model.input_shape[1:]), dtype=np.float32)
    signature = infer_signature(example, model(example, training=False).numpy())
    with fluent_mlflow(tracking.tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.tensorflow.log_model(
            model,
            name="model",
            signature=signature,
            # Listing requirements skips MLflow's slow inference of them in a subprocess.
            pip_requirements=[f"tensorflow=={tf.__version__}", f"tf-keras=={tf_keras.__version__}"],
        )
    with fluent_mlflow(tracking.tracking_uri):
        version = mlflow.register_model(info.model_uri, registered_name, tags=tags)
    return client_for(tracking.tracking_uri).get_model_version(registered_name, version.version)


def log_and_register_tflite_model(
    tracking: TrackingRef, run_id: str, tflite_path: str, registered_name: str, tags: dict[str, str]
) -> ModelVersion:
    """Log the TFLite file as a pyfunc model on the run and register it as a new version.

    The model is MLflow "models from code" (`tflite_pyfunc.py` is copied into it, the TFLite file
    is its artifact), with a tensor signature float32 (-1, *input_shape) -> (-1, num_classes) so
    that `mlflow models serve` validates and reshapes requests.
    """
    input_shape, output_shape = tflite_io_shapes(tflite_path)
    float32 = np.dtype(np.float32)
    # Float32 whatever the tensors' own dtypes: the pyfunc model quantizes int8 tensors itself.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(float32, (-1, *input_shape))]),
        outputs=Schema([TensorSpec(float32, (-1, *output_shape))]),
    )
    with fluent_mlflow(tracking.tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TFLITE_PYFUNC_CODE,
            artifacts={tflite_pyfunc.TFLITE_ARTIFACT: str(tflite_path)},
            signature=signature,
            # Saved as serving_input_example.json; MLflow also checks the example serves at log time.
            input_example=np.zeros((1, *input_shape), dtype=np.float32),
            # Listing requirements skips MLflow's slow inference of them in a subprocess.
            pip_requirements=[
                f"ai-edge-litert=={installed_version('ai-edge-litert')}",
                f"numpy=={np.__version__}",
                f"pandas=={installed_version('pandas')}",
            ],
        )
    with fluent_mlflow(tracking.tracking_uri):
        version = mlflow.register_model(info.model_uri, registered_name, tags=tags)
    return client_for(tracking.tracking_uri).get_model_version(registered_name, version.version)


def log_and_register_onnx_model(
    tracking: TrackingRef, run_id: str, onnx_path: str, registered_name: str, tags: dict[str, str]
) -> ModelVersion:
    """Log the ONNX file with MLflow's `onnx` flavor (served by onnxruntime) and register it as a new version."""
    import mlflow.onnx
    import onnx
    import onnxruntime

    model = onnx.load(onnx_path)
    with fluent_mlflow(tracking.tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            model,
            name="model",
            # The file as converted: MLflow would otherwise store its weights beside it as external data.
            save_as_external_data=False,
            pip_requirements=[
                f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}", f"numpy=={np.__version__}",
            ],
        )
    with fluent_mlflow(tracking.tracking_uri):
        version = mlflow.register_model(info.model_uri, registered_name, tags=tags)
    return client_for(tracking.tracking_uri).get_model_version(registered_name, version.version)


def tflite_io_shapes(tflite_path: str | Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The per-sample input and output shapes of a TFLite file (batch dimension dropped)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    input_shape = tuple(int(d) for d in interpreter.get_input_details()[0]["shape"][1:])
    output_shape = tuple(int(d) for d in interpreter.get_output_details()[0]["shape"][1:])
    return input_shape, output_shape
