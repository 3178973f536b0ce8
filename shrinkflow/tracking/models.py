"""Logging a variant's model file to its MLflow run and registering it as a new version of the registered model.

Every variant, Keras, TFLite or ONNX, is logged the same way: as the pyfunc model of served_pyfunc.py, which
takes the data as its user has it and answers in the data's terms (the serving contract, shrinkflow.core.
contract), with an MLflow signature and an input example. It loads with
`mlflow.pyfunc.load_model("models:/<name>/<version>")` and serves with `mlflow models serve` (or
`shrinkflow serve-model`) where shrinkflow is not installed.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.entities import LoggedModelInput
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from shrinkflow.core import predictors, serving
from shrinkflow.core.contract import raw_requests, serving_contract
from shrinkflow.core.data import DatasetRef, batches
from shrinkflow.core.names import Runtime
from shrinkflow.core.variants import Variant
from shrinkflow.tracking import served_pyfunc
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.tracking.store import client_for, fluent_mlflow

SERVED_PYFUNC_CODE = Path(served_pyfunc.__file__)
# In the logged model's MLmodel metadata: this version follows the serving contract of that format.
CONTRACT_METADATA = "shrinkflow_serving_contract"
# Each runtime's packages (PyPI names) besides numpy and pandas; decoding images takes TensorFlow.
RUNTIME_PACKAGES = {
    Runtime.TFLITE: ("ai-edge-litert",), Runtime.ONNXRUNTIME: ("onnxruntime",), Runtime.TENSORFLOW: ("tensorflow", "tf-keras"),
}
EXAMPLE_ROWS = 2


def register_variant(
    tracking: TrackingRef, variant: Variant, registered_name: str, tags: dict[str, str], dataset: DatasetRef
) -> str:
    """Log the variant's file to its child run as a served pyfunc model and register it as a new version of
    `registered_name`; returns the version number."""
    # mlflow.register_model prints "Successfully registered model ..." to stderr itself; the run says it in its log.
    with contextlib.redirect_stderr(io.StringIO()):
        version = log_and_register_model(
            tracking, variant.run_id, variant.model_path, variant.runtime, dataset, registered_name, tags
        )
    return str(version.version)


def log_and_register_model(
    tracking: TrackingRef,
    run_id: str,
    model_path: str | Path,
    runtime: Runtime,
    dataset: DatasetRef,
    registered_name: str,
    tags: dict[str, str],
) -> ModelVersion:
    """Log a model file behind `dataset`'s serving contract to the run, and register it as a new version. When the
    run is a child of the pipeline run, the logged model is also an input of the parent run: the MLflow run page
    lists the versions of its input models under "Registered models", so the parent run links to the version."""
    contract = serving_contract(dataset)
    example = readable(raw_requests(contract, next(batches(dataset, "test", EXAMPLE_ROWS))[0]))
    with tempfile.TemporaryDirectory(prefix="shrinkflow-contract-") as scratch:
        contract_path = Path(scratch) / "serving_contract.json"
        contract_path.write_text(json.dumps(contract, indent=1))
        with fluent_mlflow(tracking.tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=SERVED_PYFUNC_CODE,
                artifacts={
                    served_pyfunc.MODEL_ARTIFACT: str(model_path),
                    served_pyfunc.CONTRACT_ARTIFACT: str(contract_path),
                    served_pyfunc.PREDICTORS_ARTIFACT: predictors.__file__,
                    served_pyfunc.SERVING_ARTIFACT: serving.__file__,
                },
                signature=model_signature(contract),
                # Saved as serving_input_example.json (a request to copy); MLflow also checks it serves at log time.
                input_example=example,
                # Listing requirements skips MLflow's slow inference of them in a subprocess.
                pip_requirements=requirements(runtime, contract),
                metadata={CONTRACT_METADATA: contract["format"]},
            )
    with fluent_mlflow(tracking.tracking_uri):
        version = mlflow.register_model(info.model_uri, registered_name, tags=tags)
    client = client_for(tracking.tracking_uri)
    if run_id != tracking.parent_run_id:
        client.log_inputs(tracking.parent_run_id, models=[LoggedModelInput(model_id=info.model_id)])
    return client.get_model_version(registered_name, version.version)


def readable(example: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
    """An input example with its numbers to float32's 7 significant digits: the raw values scaled back from
    float32 (13.48, not 13.48000000596179)."""
    def rounded(values: Any) -> Any:
        return np.vectorize(lambda value: float(f"{value:.7g}"), otypes=[np.float64])(values)

    if isinstance(example, np.ndarray):
        return rounded(example)
    return example.apply(lambda column: rounded(column) if pd.api.types.is_float_dtype(column) else column)


def model_signature(contract: dict[str, Any]) -> ModelSignature:
    """The contract as an MLflow signature: what the UI shows and the scoring server checks requests against."""
    request, answer = contract["input"], contract["output"]
    kind = request["kind"]
    if kind == serving.COLUMNS:
        inputs = Schema([ColSpec("double", name) for name in request["columns"]])
    elif kind == serving.TENSOR:
        inputs = Schema([TensorSpec(np.dtype(np.float64), (-1, *request["shape"]))])
    else:
        inputs = Schema([ColSpec("string" if kind == serving.TEXT else "binary", request["column"])])
    if answer["kind"] == serving.CLASSES:
        outputs = Schema(
            [ColSpec("string", answer["label_column"]), *(ColSpec("double", name) for name in answer["probability_columns"])]
        )
    else:
        outputs = Schema([ColSpec("double", name) for name in answer["columns"]])
    return ModelSignature(inputs=inputs, outputs=outputs)


def requirements(runtime: Runtime, contract: dict[str, Any]) -> list[str]:
    """The pinned packages the logged model needs to load and serve."""
    packages = {*RUNTIME_PACKAGES[runtime], "numpy", "pandas"}
    if contract["input"]["kind"] == serving.IMAGE_BYTES:
        packages.add("tensorflow")
    return [f"{package}=={installed_version(package)}" for package in sorted(packages)]
