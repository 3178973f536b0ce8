"""Deployable exports in the TF Serving layout, written atomically.

<exports>/<name>/<version>/ is a SavedModel (serving_default signature) with, beside it, the Keras
file, any extra variant files and a manifest.json that lists every file with its size and sha256.
The folder is assembled under a hidden staging name and renamed into place at the end, so a failed
or killed run never leaves a half-written version folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shrinkflow.core.config import ExportConfig
from shrinkflow.core.contract import serving_contract
from shrinkflow.core.files import atomic_path, sha256_file
from shrinkflow.core.data import DatasetRef, load_vocabulary
from shrinkflow.core.names import BASELINE, PRUNED
from shrinkflow.core.predictors import describe_io
from shrinkflow.core.serving import COLUMNS, IMAGE_BYTES, TENSOR, TEXT
from shrinkflow.core.variants import Variant

MANIFEST_NAME = "manifest.json"
KERAS_FILE_NAME = "model.keras"
VOCABULARY_FILE_NAME = "vocabulary.txt"
CONTRACT_FILE_NAME = "serving_contract.json"
SERVING_INPUT = "inputs"
SERVING_OUTPUTS = {"classification": "probabilities", "regression": "predictions"}


def export_version(
    target: str | Path,
    keras_path: str | Path,
    export_cfg: ExportConfig,
    manifest: Mapping[str, Any],
    extra_files: Mapping[str, str | Path] | None = None,
    extra_saved_models: Mapping[str, str | Path] | None = None,
    dataset: DatasetRef | None = None,
) -> Path:
    """Write one export version folder and return its path.

    Args:
        target: the version folder, e.g. exports/digits/3; it must not exist yet.
        keras_path: the model to export as a SavedModel and a Keras file.
        manifest: fields for manifest.json (metrics, run ids, config hash, ...); `files` is added.
        extra_files: more files to include, as {relative name in the export: source path}.
        extra_saved_models: more Keras models to include as SavedModels, as {relative folder: .keras path}.
        dataset: what the SavedModels' serving signature needs to take raw text or return regression targets in
            original units (see write_saved_model), and a text model's vocabulary, written as vocabulary.txt.
    """
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"export {target} already exists; refusing to overwrite a shipped version")
    with atomic_path(target) as staging:
        if export_cfg.saved_model:
            write_saved_model(keras_path, staging, dataset)
        staging.mkdir(exist_ok=True)
        if export_cfg.keras:
            shutil.copy2(keras_path, staging / KERAS_FILE_NAME)
        for folder, source in (extra_saved_models or {}).items():
            write_saved_model(source, staging / folder, dataset)
        if dataset is not None and dataset.vocabulary_size:
            (staging / VOCABULARY_FILE_NAME).write_text("\n".join(load_vocabulary(dataset)) + "\n")
        if dataset is not None:
            (staging / CONTRACT_FILE_NAME).write_text(json.dumps(serving_contract(dataset), indent=1))
        for name, source in (extra_files or {}).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staging / name)
        full_manifest = {
            **manifest,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "files": describe_files(staging),
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(full_manifest, indent=2, sort_keys=True))
    return target


def export_variants(
    target: str | Path, variants: Sequence[Variant], export_cfg: ExportConfig, manifest: Mapping[str, Any],
    dataset: DatasetRef | None = None,
) -> Path:
    """A run's version folder: the baseline (the first variant) as a SavedModel and Keras file at the root,
    every other variant's file under variants/, the pruned model also as a SavedModel."""
    baseline, others = variants[0], variants[1:]
    pruned = next((variant for variant in others if variant.name == PRUNED), None)
    return export_version(
        target, baseline.model_path, export_cfg, manifest,
        {export_file_name(variant): variant.model_path for variant in others},
        extra_saved_models={f"variants/{PRUNED}": pruned.model_path} if pruned and export_cfg.saved_model else None,
        dataset=dataset,
    )


def build_manifest(
    name: str,
    version: str,
    selected: Variant,
    variants: Sequence[Variant],
    dataset: DatasetRef,
    config_hash: str,
    provenance: Mapping[str, str],
) -> dict[str, Any]:
    """manifest.json of a version folder (files are added when it is written): what shipped, every variant's
    lineage and metrics, the preprocessing a client applies to raw inputs, and where the run is tracked."""
    return {
        "name": name,
        "version": version,
        "selected_variant": selected.name,
        "selected_file": export_file_name(selected),
        "config_hash": config_hash,
        **provenance,
        "data_fingerprint": dataset.fingerprint,
        "task": dataset.task,
        "preprocessing": dict(dataset.preprocessing),
        "class_names": list(dataset.class_names),
        "input_shape": list(dataset.input_shape),
        "split_sizes": dict(dataset.split_sizes),  # how many rows each reported figure rests on
        **serving_fields(dataset),
        "metrics": selected.metrics,
        "variants": {
            variant.name: {
                "file": export_file_name(variant),
                "mlflow_run_id": variant.run_id,
                "parent_variant": variant.parent,
                "quantization": str(variant.quantization),
                "sparsity": variant.sparsity,
                "settings": variant.lineage()["step"],
                "metrics": variant.metrics,
                **({"io": describe_io(variant.model_path)} if Path(variant.model_path).suffix in (".tflite", ".onnx") else {}),
            }
            for variant in variants
        },
    }


def export_file_name(variant: Variant) -> str:
    """Where a variant's file goes in a version folder: the baseline at the root, the others under variants/."""
    if variant.name == BASELINE:
        return KERAS_FILE_NAME
    return f"variants/{variant.name}{Path(variant.model_path).suffix}"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """An export folder's manifest, or None if it has none that can be read."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def set_aside_versions(model_dir: Path, belongs: Callable[[Path], bool]) -> list[tuple[Path, Path]]:
    """Move the version folders of `model_dir` that do not `belong` to model_dir/.superseded/<time>/.

    TF Serving serves the highest numbered folder and ignores hidden ones, so what is moved aside is
    never served. Returns the moves, as (original, new place), for `restore_moved`.
    """
    if not model_dir.is_dir():
        return []
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    moves = []
    for folder in sorted(model_dir.iterdir()):
        if folder.is_dir() and folder.name.isdigit() and not belongs(folder):
            aside = model_dir / ".superseded" / stamp / folder.name
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder, aside)
            moves.append((folder, aside))
    return moves


def restore_moved(moves: list[tuple[Path, Path]]) -> None:
    """Undo `set_aside_versions`."""
    for original, aside in reversed(moves):
        if aside.exists() and not original.exists():
            os.rename(aside, original)


def serving_fields(dataset: DatasetRef) -> dict[str, Any]:
    """What a client of the export needs besides the model (manifest.json): what each kind of file takes and
    returns (`serving`), the serving signature, and the target scaling (regression) or the vocabulary (text)
    that the model files, unlike the registered model and the SavedModel, leave to the client."""
    output = SERVING_OUTPUTS[dataset.task]
    text = bool(dataset.vocabulary_size)
    fields: dict[str, Any] = {
        "serving_signature": {
            "inputs": "raw texts, string [n]" if text else f"scaled features, float32 [n, {', '.join(map(str, dataset.input_shape))}]",
            output: "class probabilities" if dataset.task == "classification" else "targets in original units",
        },
        "serving": serving_description(dataset),
        "serving_contract_file": CONTRACT_FILE_NAME,
    }
    if dataset.task == "regression":
        fields["target_names"] = list(dataset.target_names)
        fields["target_scaling"] = {
            "note": "model files (Keras, TFLite, ONNX) output standardized targets: multiply by std, add mean",
            **{name: list(values) for name, values in dataset.target_scaling},
        }
    if text:
        fields["vocabulary_file"] = VOCABULARY_FILE_NAME
    return fields


def serving_description(dataset: DatasetRef) -> dict[str, Any]:
    """In words, what the registered model, the SavedModel's serving_default and the model files take and return."""
    contract = serving_contract(dataset)
    request, shape = contract["input"], ", ".join(map(str, dataset.input_shape))
    raw = {
        TEXT: f"raw text in the column {request.get('column')!r}",
        COLUMNS: f"the table's feature columns by name, unscaled: {', '.join(request.get('columns', []))}",
        TENSOR: f"samples as the source holds them (e.g. pixels 0-255), float64 [n, {', '.join(map(str, request.get('shape', [])))}]",
        IMAGE_BYTES: f"encoded images (PNG, JPEG, BMP, GIF) in the column {request.get('column')!r}, base64 in JSON",
    }[request["kind"]]
    if dataset.task == "classification":
        answers = f"{contract['output']['label_column']!r} (the predicted class, as the data names it) and one probability column per class, named by class"
        model_output = f"float32 [n, {dataset.num_classes}]: class probabilities in class_names order"
    else:
        answers = "one column per target (target_names), in the target's own units"
        model_output = f"float32 [n, {len(dataset.target_names)}]: standardized targets, y = output * std + mean (target_scaling)"
    model_input = (
        f"int32 [n, {shape}] token ids: lower-case, strip punctuation, split on whitespace, look each word up in "
        f"{VOCABULARY_FILE_NAME} (id = line number; 1 if unknown), cut or pad with 0" if request["kind"] == TEXT
        else f"float32 [n, {shape}]: the raw values flattened, scaled as `preprocessing` says ((x - offset) * scale), reshaped"
    )
    return {
        "registered_model": {
            "takes": raw, "returns": answers,
            "use": "mlflow.pyfunc.load_model('models:/NAME/VERSION'), or `shrinkflow serve-model NAME/VERSION` and POST "
                   "/invocations with {\"dataframe_split\": ...} or {\"inputs\": ...}; its signature and serving_input_example.json "
                   f"show the request ({CONTRACT_FILE_NAME} holds the statistics it applies)",
        },
        "saved_model": {
            "signature": "serving_default", "input": SERVING_INPUT,
            "takes": "raw texts, string [n]" if request["kind"] == TEXT else model_input,
            "returns": {SERVING_OUTPUTS[dataset.task]: "class probabilities in class_names order" if dataset.task == "classification"
                        else "targets in their own units"},
            "tf_serving_request": "POST /v1/models/NAME:predict {\"instances\": [sample, ...]}" + (
                "; encoded images to an image-bytes signature as {\"instances\": [{\"b64\": \"<base64 of the file>\"}, ...]}"
                if request["kind"] == IMAGE_BYTES else ""
            ),
        },
        "model_files": {
            "takes": model_input, "returns": model_output,
            "tensors": "variants.<name>.io: each TFLite and ONNX file's input and output tensor (a quantized tensor: q = x / scale + zero_point)",
        },
    }


def write_saved_model(keras_path: str | Path, out_dir: str | Path, dataset: DatasetRef | None = None) -> None:
    """A SavedModel whose serving_default maps `inputs` to `probabilities` (classification) or `predictions`
    (regression, in the targets' original units).

    `inputs` are scaled features, or, for a text model, raw strings: the SavedModel carries the vocabulary and
    the text vectorization in front of the model, the same as the one fitted on the training split. Without
    `dataset` (or for plain classification), the model's own inputs and outputs.
    """
    import tensorflow as tf
    import tf_keras

    from shrinkflow.core.training import load_keras_model

    model = load_keras_model(keras_path)
    output = SERVING_OUTPUTS[dataset.task if dataset else "classification"]
    vectorizer = None
    if dataset is not None and dataset.vocabulary_size:
        settings = dict(dataset.preprocessing)
        vectorizer = tf_keras.layers.TextVectorization(
            vocabulary=load_vocabulary(dataset)[2:],  # without the padding and unknown tokens, which it adds back
            output_sequence_length=settings["sequence_length"],
        )
    mean = std = None
    if dataset is not None and dataset.task == "regression":
        scaling = dict(dataset.target_scaling)
        mean, std = tf.constant(scaling["mean"], tf.float32), tf.constant(scaling["std"], tf.float32)

    def predict(features: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = model(features, training=False)
        return {output: outputs if mean is None else outputs * std + mean}

    if vectorizer is not None:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
        def serve(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return predict(vectorizer(inputs))
    else:
        @tf.function(input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=SERVING_INPUT)])
        def serve(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return predict(inputs)

    module = tf.Module()
    module.model, module.vectorizer, module.serve = model, vectorizer, serve
    tf.saved_model.save(module if vectorizer is not None else model, str(out_dir), signatures={"serving_default": serve})


def describe_files(folder: Path) -> list[dict[str, Any]]:
    """Every file under `folder`: relative path, size and sha256, in a stable order."""
    return [
        {"path": path.relative_to(folder).as_posix(), "size_bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
