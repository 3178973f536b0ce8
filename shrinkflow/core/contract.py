"""The serving contract of a prepared dataset: what a registered model takes (the data as its user has it) and
returns (labels and probabilities by class, targets in their units), built from the DatasetRef's statistics
and applied by shrinkflow.core.serving inside every registered model.

Also the way back, for shrinkflow's own checks: a model's stored inputs (scaled features, token ids) as the raw
requests a client would send, and the answers as the model outputs the metrics take.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shrinkflow.core.data import DatasetRef, load_vocabulary
from shrinkflow.core.serving import (
    CLASSES, COLUMNS, CONTRACT_FORMAT, IMAGE_BYTES, PAD, TARGETS, TENSOR, TEXT, ServedModel,
)

LABEL_COLUMN = "label"
IMAGE_COLUMN = "image"


def serving_contract(dataset: DatasetRef) -> dict[str, Any]:
    """The contract (JSON-able) of every model trained on `dataset`."""
    model_shape = [int(size) for size in dataset.input_shape]
    settings = dict(dataset.preprocessing)
    return {
        "format": CONTRACT_FORMAT,
        "task": dataset.task,
        "input": _input(dataset, model_shape, settings),
        "model_input_shape": model_shape,
        "scaling": {key: settings[key] for key in ("kind", "offset", "scale") if key in settings},
        "output": _output(dataset),
    }


def _input(dataset: DatasetRef, model_shape: list[int], settings: dict[str, Any]) -> dict[str, Any]:
    if dataset.vocabulary_size:
        return {
            "kind": TEXT, "column": (dataset.feature_names or ("text",))[0],
            "sequence_length": int(settings["sequence_length"]), "vocabulary": load_vocabulary(dataset),
        }
    image_size = getattr(dataset, "image_size", None)  # image folders (data.source images:DIR)
    if image_size:
        return {"kind": IMAGE_BYTES, "column": IMAGE_COLUMN, "image_size": list(image_size), "color_mode": getattr(dataset, "color_mode")}
    if dataset.feature_names and len(dataset.feature_names) == int(np.prod(model_shape)):
        return {"kind": COLUMNS, "columns": list(dataset.feature_names)}
    # Arrays: samples as their source holds them, a grayscale image without its channel axis of one.
    shape = model_shape[:-1] if len(model_shape) > 1 and model_shape[-1] == 1 else model_shape
    return {"kind": TENSOR, "shape": shape}


def _output(dataset: DatasetRef) -> dict[str, Any]:
    if dataset.task == "regression":
        scaling = dict(dataset.target_scaling)
        return {"kind": TARGETS, "columns": list(dataset.target_names), "mean": list(scaling["mean"]), "std": list(scaling["std"])}
    classes = list(dataset.class_names)
    return {
        "kind": CLASSES,
        # A class named like the label column would collide with it: then the label column is renamed.
        "label_column": LABEL_COLUMN if LABEL_COLUMN not in classes else f"predicted_{LABEL_COLUMN}",
        "classes": classes,
        "probability_columns": classes,
    }


def raw_requests(contract: dict[str, Any], x: np.ndarray) -> pd.DataFrame | np.ndarray:
    """Model inputs (scaled features, token ids) as the raw requests that give them: a DataFrame of named
    columns, or an array of samples. Texts come back as their known tokens joined by spaces (an unknown word as
    the unknown token), which vectorize to the same ids."""
    kind = contract["input"]["kind"]
    if kind == TEXT:
        vocabulary = contract["input"]["vocabulary"]
        texts = [" ".join(vocabulary[token] for token in row if token != PAD) for row in np.asarray(x, dtype=np.int64)]
        return pd.DataFrame({contract["input"]["column"]: texts})
    if kind == IMAGE_BYTES:
        raise ValueError("the raw requests of an image-bytes model are encoded images; encode the pixels first")
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    scaling = contract["scaling"]
    if scaling["kind"] in ("minmax", "standard"):
        flat = flat / np.asarray(scaling["scale"]) + np.asarray(scaling["offset"])
    if kind == COLUMNS:
        return pd.DataFrame(flat, columns=contract["input"]["columns"])
    return flat.reshape((len(flat), *contract["input"]["shape"]))


def model_outputs(dataset: DatasetRef, answers: pd.DataFrame) -> np.ndarray:
    """A served model's answers as `dataset`'s model outputs, for its metrics: probabilities in its class
    order (taken by class name), or targets standardized with its scaling.

    Raises:
        ValueError: the answers lack one of the dataset's classes or targets.
    """
    if dataset.task == "regression":
        missing = [name for name in dataset.target_names if name not in answers.columns]
        if missing:
            raise ValueError(f"the model answers no {missing}; it predicts {list(answers.columns)}")
        scaling = dict(dataset.target_scaling)
        values = answers[list(dataset.target_names)].to_numpy(dtype=np.float64)
        return ((values - np.asarray(scaling["mean"])) / np.asarray(scaling["std"])).astype(np.float32)
    missing = [name for name in dataset.class_names if name not in answers.columns]
    if missing:
        raise ValueError(f"the model answers no probability for the classes {missing}; it answers {list(answers.columns)}")
    return answers[list(dataset.class_names)].to_numpy(dtype=np.float32)


def served_model(predict: Any, dataset: DatasetRef) -> ServedModel:
    """A model file's predict function behind `dataset`'s contract, as a registered model runs it."""
    return ServedModel(predict, serving_contract(dataset))
