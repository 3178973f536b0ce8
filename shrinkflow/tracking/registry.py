"""MLflow Model Registry: TFLite variants as pyfunc model versions, and the "champion" alias.

Keras variants are logged with `shrinkflow.tracking.runs.log_and_register_keras_model`; TFLite variants
are logged here as pyfunc models running `shrinkflow/tracking/tflite_pyfunc.py` (see that module). Either
kind loads with `mlflow.pyfunc.load_model("models:/<name>/<version>")` and predicts float32 class
probabilities of shape (n, num_classes) from float32 scaled features of shape (n, *input_shape).
"""

from __future__ import annotations

from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.types import Schema, TensorSpec

from shrinkflow.core.evaluation import describe_metrics
from shrinkflow.core.export import read_manifest
from shrinkflow.tracking import tflite_pyfunc
from shrinkflow.tracking.runs import TrackingRef, fluent_mlflow
from shrinkflow.core.variants import Variant

CHAMPION_ALIAS = "champion"
# A version's tag with the sha256 of its model file: a re-run that selects the very file the champion holds
# registers nothing new.
FILE_SHA256_TAG = "file_sha256"
TFLITE_PYFUNC_CODE = Path(tflite_pyfunc.__file__)


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
    return tracking.client().get_model_version(registered_name, version.version)


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
    return tracking.client().get_model_version(registered_name, version.version)


def model_description(name: str) -> str:
    return (
        f"The models shrinkflow ships for {name}: each version is the variant a pipeline run selected (the "
        "smallest within the config's quality budget), with its metrics as tags. The alias `champion` moves to "
        "a new version only if it is not worse than the current champion on that run's test set."
    )


def version_description(variant: Variant, parent_run_id: str) -> str:
    kind = "TFLite file (pyfunc, runs in LiteRT)" if variant.is_tflite else "Keras model (tensorflow flavor)"
    lineage = f"derived from {variant.parent}" if variant.parent else "the trained baseline"
    return (
        f"{variant.name}: {kind}, {lineage}; quantization {variant.quantization}, "
        f"sparsity {variant.sparsity:.3f}. Test: {describe_metrics(variant.metrics)}. "
        f"Selected by pipeline run {parent_run_id}."
    )


def describe(
    client: MlflowClient, name: str, version: str, model_description: str, version_description: str
) -> None:
    """Descriptions of the registered model (set once) and of the new version, as the registry UI shows them."""
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=model_description)
    client.update_model_version(name, version, description=version_description)


def holds_export(client: MlflowClient, name: str, folder: Path) -> bool:
    """Whether the registry's version numbered like the export `folder` is the one that folder holds."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    try:
        run_id = client.get_model_version(name, folder.name).run_id
    except MlflowException:
        return False
    selected = manifest.get("variants", {}).get(manifest.get("selected_variant"), {})
    return bool(run_id) and run_id == selected.get("mlflow_run_id")


def tflite_io_shapes(tflite_path: str | Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The per-sample input and output shapes of a TFLite file (batch dimension dropped)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    input_shape = tuple(int(d) for d in interpreter.get_input_details()[0]["shape"][1:])
    output_shape = tuple(int(d) for d in interpreter.get_output_details()[0]["shape"][1:])
    return input_shape, output_shape


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version the "champion" alias points at; None if the model or the alias doesn't exist."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    # Asking for a missing alias directly fails with a generic INVALID_PARAMETER_VALUE.
    version = model.aliases.get(CHAMPION_ALIAS)
    return None if version is None else client.get_model_version(name, str(version))


def delete_version(client: MlflowClient, name: str, version: str) -> None:
    """Delete a version (a shipment rolled back); the registered model too when that was its only version."""
    client.delete_model_version(name, version)
    if not client.search_model_versions(f"name='{name}'", max_results=1):
        client.delete_registered_model(name)


def restore_champion(client: MlflowClient, name: str, previous: str | None) -> None:
    """Point the alias back where it was before a rolled-back shipment moved it (or remove it, if it was new)."""
    if previous is not None:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, previous)
        return
    try:
        client.delete_registered_model_alias(name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise


def predict_with_version(tracking_uri: str, name: str, version: str | int, x: np.ndarray) -> np.ndarray:
    """Class probabilities from a registered version, loaded through `mlflow.pyfunc` (any flavor).

    Args:
        tracking_uri: The tracking server, also used as the registry.
        name: The registered model's name.
        version: The version number.
        x: float32 scaled features, shape (n, *input_shape).

    Returns:
        float32 probabilities, shape (n, num_classes).
    """
    import tempfile

    # MLflow resolves "models:/" URIs with the global registry URI (download_artifacts'
    # registry_uri argument is not passed on), so set it for the block.
    with fluent_mlflow(tracking_uri), tempfile.TemporaryDirectory(prefix="shrinkflow-model-") as tmp:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}", dst_path=tmp)
        predictions = model.predict(np.asarray(x, dtype=np.float32))
    if isinstance(predictions, dict):  # the onnx flavor answers {output name: array}; shrinkflow's have one
        [predictions] = predictions.values()
    return np.asarray(predictions, dtype=np.float32)
