"""MLflow Model Registry: the registered model's versions, their descriptions and tags, and the "champion" alias.

Every function takes the tracking URI (the registry is the tracking store's) and makes its own client, so the
Prefect tasks never hold an MLflow client. Versions are registered by shrinkflow.tracking.models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from shrinkflow.core.contract import model_outputs, raw_requests, serving_contract
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.errors import UserError
from shrinkflow.core.evaluation import describe_metrics
from shrinkflow.core.export import read_manifest
from shrinkflow.core.names import Quantization, Runtime
from shrinkflow.core.steps import ClusterStep, DistillStep, OnnxStep, PruneStep, QuantizeStep
from shrinkflow.core.variants import Variant
from shrinkflow.tracking.models import CONTRACT_METADATA
from shrinkflow.tracking.store import client_for, fluent_mlflow
from shrinkflow.tracking.ui import in_training_view, run_page

CHAMPION_ALIAS = "champion"
# A version's tag with the sha256 of its model file: a re-run that selects the very file the champion holds
# registers nothing new.
FILE_SHA256_TAG = "file_sha256"


def model_description(name: str) -> str:
    return (
        f"The models shrinkflow ships for {name}: each version is the variant a pipeline run selected (the "
        "smallest within the config's quality budget), with its metrics as tags. The alias `champion` moves to "
        "a new version only if it is not worse than the current champion on that run's test set."
    )


def version_description(variant: Variant, parent_run_id: str, run_name: str = "", experiment_id: str = "") -> str:
    """The version's description (markdown): what the file is, how it was made and from what, its test figures,
    and the pipeline run that selected it, by name (linked, with `experiment_id`) and id."""
    kind = {
        Runtime.TFLITE: "TFLite file, run in LiteRT", Runtime.ONNXRUNTIME: "ONNX file, run in ONNX Runtime",
    }.get(variant.runtime, "Keras model, run in TensorFlow")
    run = parent_run_id
    if run_name:
        named = f"[{run_name}](#/{in_training_view(run_page(experiment_id, parent_run_id))})" if experiment_id else run_name
        run = f"{named} ({parent_run_id})"
    return (
        f"{variant.name}: {kind}; {how_made(variant)}. Quantization {variant.quantization}, "
        f"sparsity {variant.sparsity:.3f}. Test: {describe_metrics(variant.metrics)}. "
        f"Selected by pipeline run {run}."
    )


# How each post-training quantization mode stores the model, in words.
QUANTIZATION_WORDS = {
    Quantization.DYNAMIC: "dynamic-range quantization (int8 weights, float activations)",
    Quantization.FLOAT16: "float16 weights",
    Quantization.INT8: "full-integer quantization (int8 weights and activations)",
}


def how_made(variant: Variant) -> str:
    """How the variant was made and from which variant (its parent), in words, by the step that made it."""
    step, parent = variant.step, variant.parent
    if isinstance(step, DistillStep):
        params = f" ({int(variant.metrics['params']):,} parameters)" if "params" in variant.metrics else ""
        if step.from_scratch:
            return f"student {step.number}'s model{params} trained from the labels alone, without a teacher"
        return f"student {step.number}{params}, distilled from {parent}'s soft targets and the labels"
    if isinstance(step, PruneStep):
        return f"a copy of {parent} pruned to {step.target_sparsity:.0%} zero weights while fine-tuning"
    if isinstance(step, ClusterStep):
        kept = ", keeping its zeros" if variant.target_sparsity > 0 else ""
        return f"a copy of {parent} with each kernel's weights clustered into {step.clusters} values{kept}"
    if isinstance(step, QuantizeStep) and step.mode is Quantization.QAT:
        kept_things = [what for what, on in (("zeros", variant.target_sparsity > 0), ("clusters", variant.clusters > 0)) if on]
        keeping = f", keeping its {' and '.join(kept_things)}" if kept_things else ""
        return f"{parent} fine-tuned with quantization-aware training{keeping}, then converted with int8 weights and activations"
    if isinstance(step, QuantizeStep):
        integer_io = " and integer input and output" if step.int8_io else ""
        return f"{parent} converted with {QUANTIZATION_WORDS[step.mode]}{integer_io}"
    if isinstance(step, OnnxStep):
        return f"{parent} converted to ONNX (opset {step.opset})"
    return f"derived from {parent}" if parent else "the baseline, trained from the labels"


def describe(tracking_uri: str, name: str, version: str, model_description: str, version_description: str) -> None:
    """Descriptions of the registered model (set once) and of the new version, as the registry UI shows them."""
    client = client_for(tracking_uri)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=model_description)
    client.update_model_version(name, version, description=version_description)


def holds_export(tracking_uri: str, name: str, folder: Path) -> bool:
    """Whether the registry's version numbered like the export `folder` is the one that folder holds."""
    client = client_for(tracking_uri)
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    try:
        run_id = client.get_model_version(name, folder.name).run_id
    except MlflowException:
        return False
    selected = manifest.get("variants", {}).get(manifest.get("selected_variant"), {})
    return bool(run_id) and run_id == selected.get("mlflow_run_id")


def champion_version(tracking_uri: str, name: str) -> ModelVersion | None:
    """The version the "champion" alias points at; None if the model or the alias doesn't exist."""
    client = client_for(tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    # Asking for a missing alias directly fails with a generic INVALID_PARAMETER_VALUE.
    version = model.aliases.get(CHAMPION_ALIAS)
    return None if version is None else client.get_model_version(name, str(version))


def delete_version(tracking_uri: str, name: str, version: str) -> None:
    """Delete a version (a shipment rolled back); the registered model too when that was its only version."""
    client = client_for(tracking_uri)
    client.delete_model_version(name, version)
    if not client.search_model_versions(f"name='{name}'", max_results=1):
        client.delete_registered_model(name)


def predict_with_version(tracking_uri: str, name: str, version: str | int, dataset: DatasetRef, x: np.ndarray) -> np.ndarray:
    """A registered version's outputs for `dataset`'s model inputs, through its pyfunc model as a client would
    call it: `x` (scaled features, token ids) goes in as the raw requests that give it, and the answers come back
    as the model outputs `dataset`'s metrics take (probabilities in its class order, matched by class name;
    standardized targets).

    A version logged before the serving contract (a tensor in, the model's outputs out) gets `x` as it is.

    Args:
        tracking_uri: The tracking server, also used as the registry.
        name: The registered model's name.
        version: The version number.
        dataset: The dataset `x` comes from (this run's), whose contract turns it into raw requests.
        x: Model inputs, shape (n, *dataset.input_shape).

    Returns:
        float32 class probabilities (n, num_classes), or standardized targets (n, targets).
    """
    with version_predictor(tracking_uri, name, version, dataset) as predict:
        return predict(x)


@contextmanager
def version_predictor(
    tracking_uri: str, name: str, version: str | int, dataset: DatasetRef
) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
    """A registered version loaded once through `mlflow.pyfunc`, as predict_with_version's function of a batch of
    `dataset`'s model inputs, for the block: a split is predicted batch by batch."""
    import tempfile

    # MLflow resolves "models:/" URIs with the global registry URI (download_artifacts'
    # registry_uri argument is not passed on), so set it for the block.
    with fluent_mlflow(tracking_uri), tempfile.TemporaryDirectory(prefix="shrinkflow-model-") as tmp:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}", dst_path=tmp)
        follows_contract = CONTRACT_METADATA in (model.metadata.metadata or {})
        contract = serving_contract(dataset) if follows_contract else None

        def predict(x: np.ndarray) -> np.ndarray:
            if contract is not None:
                return model_outputs(dataset, model.predict(raw_requests(contract, x)))
            predictions = model.predict(np.asarray(x, dtype=np.float32))
            if isinstance(predictions, dict):  # the onnx flavor answers {output name: array}; shrinkflow's had one
                [predictions] = predictions.values()
            return np.asarray(predictions, dtype=np.float32)

        yield predict


def tag_version(tracking_uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    client = client_for(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


class ModelNotFound(UserError):
    """A model reference (NAME, NAME@alias or NAME/version) that the registry does not hold."""


def resolve_version(tracking_uri: str, reference: str) -> ModelVersion:
    """The version `reference` names: NAME@alias, NAME/version, or NAME alone for its champion.

    Raises:
        ModelNotFound: naming what the registry has instead.
    """
    name, alias, number = parse_reference(reference)
    require_model(tracking_uri, name, reference)
    client = client_for(tracking_uri)
    if number is not None:
        versions = sorted(int(version.version) for version in client.search_model_versions(f"name='{name}'"))
        if number not in versions:
            raise ModelNotFound(f"{reference!r}: model {name!r} has no version {number}; its versions: {', '.join(map(str, versions))}")
        return client.get_model_version(name, str(number))
    aliases = client.get_registered_model(name).aliases
    if alias not in aliases:
        known = ", ".join(f"@{key} (version {value})" for key, value in sorted(aliases.items())) or "none"
        raise ModelNotFound(f"{reference!r}: model {name!r} has no alias {alias!r}; its aliases: {known}; or name a version, {name}/N")
    return client.get_model_version(name, str(aliases[alias]))


def require_model(tracking_uri: str, name: str, reference: str | None = None) -> RegisteredModel:
    """The registered model `name`, or ModelNotFound naming those there are (`reference`: what the user wrote, if
    more than the name)."""
    client = client_for(tracking_uri)
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        models = [model.name for model in client.search_registered_models(max_results=1000)]
        known = ", ".join(sorted(models)) or "none yet (a `shrinkflow run` that ships registers one)"
        mentioned = f"{reference!r}: " if reference else ""
        raise ModelNotFound(f"{mentioned}no registered model {name!r} in {tracking_uri}; registered models: {known}") from None


def parse_reference(reference: str) -> tuple[str, str | None, int | None]:
    """(name, alias, version) of NAME@alias, NAME/version or NAME (the champion)."""
    name, at, alias = reference.partition("@")
    if at:
        if not name or not alias:
            raise ModelNotFound(f"{reference!r}: expected NAME@alias, e.g. digits_cnn@{CHAMPION_ALIAS}")
        return name, alias, None
    name, slash, number = reference.partition("/")
    if slash:
        if not name or not number.isdigit() or int(number) < 1:
            raise ModelNotFound(f"{reference!r}: expected NAME/version with a version number from 1, e.g. digits_cnn/3")
        return name, None, int(number)
    return name, CHAMPION_ALIAS, None
