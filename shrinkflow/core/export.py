"""Deployable exports in the TF Serving layout, written atomically.

<exports>/<name>/<version>/ is a SavedModel (serving_default signature, and image_bytes for an image model) with,
beside it, the Keras
file, any extra variant files and a manifest.json that lists every file with its size and sha256.
The folder is assembled under a hidden staging name and renamed into place at the end, so a failed
or killed run never leaves a half-written version folder behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.config import ExportConfig
from shrinkflow.core.contract import serving_contract
from shrinkflow.core.files import atomic_path, sha256_file, write_bytes_atomically
from shrinkflow.core.data import DatasetRef, load_vocabulary
from shrinkflow.core.names import BASELINE, PRUNED
from shrinkflow.core.predictors import describe_io
from shrinkflow.core.serving import COLUMNS, IMAGE_BYTES, TENSOR, TEXT
from shrinkflow.core.variants import Variant

MANIFEST_NAME = "manifest.json"
# <exports>/<name>/models.config: TF Serving's model config, serving the version the alias `champion` names.
SERVING_CONFIG_NAME = "models.config"
KERAS_FILE_NAME = "model.keras"
VOCABULARY_FILE_NAME = "vocabulary.txt"
CONTRACT_FILE_NAME = "serving_contract.json"
SERVING_INPUT = "inputs"
# The second signature of an image model: a batch of encoded images (PNG, JPEG, BMP, GIF), as TF Serving's image
# models take them, decoded, resized and scaled inside.
IMAGE_BYTES_SIGNATURE = "image_bytes"
IMAGE_BYTES_INPUT = "images"
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


def write_serving_config(model_dir: Path, name: str, version: str) -> Path:
    """Point <exports>/<name>/models.config at the champion, `version` (replaced in one step).

    TF Serving alone serves the highest version folder, which need not be the champion (a version the gate refused,
    or the one a rollback left); given this file (--model_config_file, with --model_config_file_poll_wait_seconds
    to follow its changes) it serves exactly the champion."""
    text = (
        f"# The champion of {name}: version {version}. shrinkflow rewrites this file whenever the alias `champion`\n"
        "# moves (a pipeline run's gate, `shrinkflow promote`, `shrinkflow rollback`).\n"
        "model_config_list {\n  config {\n"
        f"    name: {json.dumps(name, ensure_ascii=False)}\n"
        f"    base_path: {json.dumps(str(model_dir), ensure_ascii=False)}\n"
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ specific {{ versions: {int(version)} }} }}\n"
        "  }\n}\n"
    )
    path = model_dir / SERVING_CONFIG_NAME
    write_bytes_atomically(path, text.encode())
    return path


def served_version(model_dir: Path) -> str | None:
    """The version <exports>/<name>/models.config serves, or None without one."""
    try:
        found = re.search(r"versions:\s*(\d+)", (model_dir / SERVING_CONFIG_NAME).read_text())
    except OSError:
        return None
    return found.group(1) if found else None


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
    """What a client of the export needs besides the model (manifest.json): what each kind of file takes and returns
    (`serving`), the serving signatures, what a client applies to its raw inputs before serving_default (the same
    scaling the model files need), and the target scaling (regression) or the vocabulary (text) that the model files,
    unlike the registered model and the SavedModel, leave to the client."""
    output = SERVING_OUTPUTS[dataset.task]
    text = bool(dataset.vocabulary_size)
    answer = "class probabilities" if dataset.task == "classification" else "targets in original units"
    fields: dict[str, Any] = {
        "serving_signature": {
            "inputs": "raw texts, string [n]" if text else f"scaled features, float32 [n, {', '.join(map(str, dataset.input_shape))}]",
            output: answer,
        },
        "serving": serving_description(dataset),
        "serving_contract_file": CONTRACT_FILE_NAME,
        "client_preprocessing": "the SavedModel vectorizes raw text itself" if text else client_preprocessing(dataset),
    }
    if dataset.encoded_images:
        height, width, channels = dataset.input_shape
        fields["image_bytes_signature"] = {
            "signature": IMAGE_BYTES_SIGNATURE,
            IMAGE_BYTES_INPUT: (
                f"encoded images (PNG, JPEG, BMP or GIF), string [n]; each is decoded to {channels} channel(s) "
                f"({'grayscale' if channels == 1 else 'rgb'}), resized bilinearly to {height} x {width} and scaled "
                "inside: send the image files' bytes as they are"
            ),
            output: answer,
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


def client_preprocessing(dataset: DatasetRef) -> str:
    """What a client applies to raw features (pixels) before serving_default, or a TFLite or ONNX file, in words."""
    settings = dict(dataset.preprocessing)
    kind = settings.get("kind")
    if kind == "minmax":
        return f"x = (raw - {settings['offset']:g}) * {settings['scale']:.10g}, as float32 (preprocessing: minmax)"
    if kind == "standard":
        return "x = (raw - offset[i]) * scale[i] for each feature i, as float32 (preprocessing: standard, offset and scale)"
    return "none: the raw features as float32"


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

    signatures: dict[str, Any] = {}
    if dataset is not None and dataset.encoded_images:
        signatures[IMAGE_BYTES_SIGNATURE] = image_bytes_signature(dataset, predict)

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
    signatures["serving_default"] = serve
    tf.saved_model.save(module if vectorizer is not None else model, str(out_dir), signatures=signatures)


def image_bytes_signature(dataset: DatasetRef, predict: Callable[[Any], dict[str, Any]]) -> Any:
    """The image model's second serving signature: encoded images (tf.string [n]) decoded and resized as the
    preparation did (data.images.decode_image), scaled as the training data was, then predicted."""
    import tensorflow as tf

    from shrinkflow.core.data.images import decode_image

    height, width, channels = dataset.input_shape
    settings = dict(dataset.preprocessing)
    offset = scale = None
    if settings.get("kind") in ("minmax", "standard"):
        shape = dataset.input_shape if isinstance(settings["offset"], tuple) else ()
        offset = tf.constant(np.reshape(settings["offset"], shape), tf.float32)
        scale = tf.constant(np.reshape(settings["scale"], shape), tf.float32)
    pixels_spec = tf.TensorSpec([height, width, channels], tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)])
    def serve_image_bytes(images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.map_fn(lambda image: decode_image(image, channels, (height, width)), images, fn_output_signature=pixels_spec)
        features = tf.cast(pixels, tf.float32)
        return predict(features if offset is None else (features - offset) * scale)

    return serve_image_bytes


def describe_files(folder: Path) -> list[dict[str, Any]]:
    """Every file under `folder`: relative path, size and sha256, in a stable order."""
    return [
        {"path": path.relative_to(folder).as_posix(), "size_bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
