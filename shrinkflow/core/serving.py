"""What a registered model does with a request: the data as its user has it in, answers in the data's own
terms out, around a model file that takes scaled features or token ids and gives probabilities or standardized
targets.

The serving contract (a JSON document logged with the model, built by shrinkflow.core.contract) holds what
this needs: the input's kind and names, the scaling statistics, the vocabulary, the class and target names.

- input `columns`: a table's named feature columns, unscaled (scaled here, then shaped as the model takes them);
- input `text`: one column of raw strings (vectorized here as the training split's TextVectorization did);
- input `tensor`: arrays of raw values, e.g. images' pixels as the images hold them (n, height, width);
- input `image_bytes`: one column of encoded images (PNG, JPEG, BMP, GIF; decoded and resized here);
- output `classes`: the predicted label and one probability column per class, named by class;
- output `targets`: one column per regression target, in the target's own units.

Self-contained: numpy and pandas (TensorFlow only to decode images), nothing of shrinkflow. Every registered
model carries a copy of this file beside predictors.py, so it serves where shrinkflow is not installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

CONTRACT_FORMAT = 1
COLUMNS, TEXT, TENSOR, IMAGE_BYTES = "columns", "text", "tensor", "image_bytes"
CLASSES, TARGETS = "classes", "targets"
# tf_keras TextVectorization's standardize="lower_and_strip_punctuation" and split="whitespace": TensorFlow
# lower-cases ASCII letters only, strips these characters and splits on ASCII whitespace.
STRIP_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
ASCII_WHITESPACE = re.compile(r"[ \t\n\r\x0b\x0c]+")
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
PAD, UNKNOWN = 0, 1


class RequestError(ValueError):
    """A request the contract refuses, in words that name the column and what it should hold."""


class ServedModel:
    """A model file's predict function behind its serving contract."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], contract: dict[str, Any]) -> None:
        if contract.get("format") != CONTRACT_FORMAT:
            raise ValueError(f"serving contract format {contract.get('format')!r}; this code reads {CONTRACT_FORMAT}")
        self._predict = predict
        self.contract = contract
        self._input, self._output = contract["input"], contract["output"]
        vocabulary = self._input.get("vocabulary") or []
        self._token_ids = {token: index for index, token in enumerate(vocabulary) if index not in (PAD, UNKNOWN)}

    def predict(self, request: Any) -> pd.DataFrame:
        """Answers for a batch of requests: a DataFrame (columns by name), a dict of columns or, for tensor input,
        an array of samples."""
        x = self.model_inputs(request)
        outputs = self._predict(x) if len(x) else np.zeros((0, self._output_width()), dtype=np.float32)
        return self.answers(np.asarray(outputs))

    def model_inputs(self, request: Any) -> np.ndarray:
        """The model file's inputs for a batch of raw requests."""
        kind = self._input["kind"]
        if kind == TEXT:
            return self.token_ids(self._column(request, self._input["column"]))
        if kind == COLUMNS:
            frame = as_frame(request)
            values = np.stack([self._numbers(frame, name) for name in self._input["columns"]], axis=1)
        elif kind == IMAGE_BYTES:
            values = self.decode_images(self._column(request, self._input["column"]))
        else:
            values = self._tensor(request)
        return self._scaled(values).reshape((len(values), *self.contract["model_input_shape"]))

    def answers(self, outputs: np.ndarray) -> pd.DataFrame:
        """The model's outputs in the data's terms: labels and probabilities by class, or targets in their units."""
        out = self._output
        if out["kind"] == CLASSES:
            probabilities = outputs.reshape(len(outputs), -1).astype(np.float64)
            labels = np.asarray(out["classes"], dtype=object)[probabilities.argmax(axis=1)] if len(outputs) else []
            return pd.DataFrame(
                {out["label_column"]: pd.Series(labels, dtype=object),
                 **{column: probabilities[:, index] for index, column in enumerate(out["probability_columns"])}}
            )
        values = outputs.reshape(len(outputs), -1).astype(np.float64) * np.asarray(out["std"]) + np.asarray(out["mean"])
        return pd.DataFrame({column: values[:, index] for index, column in enumerate(out["columns"])})

    def token_ids(self, texts: Sequence[Any]) -> np.ndarray:
        """Token ids (int32, n x sequence_length) of raw texts: lower-cased, punctuation stripped, split on
        whitespace, looked up in the vocabulary (unknown: 1), cut or padded with 0."""
        length = int(self._input["sequence_length"])
        ids = np.full((len(texts), length), PAD, dtype=np.int32)
        for row, text in enumerate(texts):
            words = ASCII_WHITESPACE.split(STRIP_PUNCTUATION.sub("", text.translate(ASCII_LOWER)))
            tokens = [self._token_ids.get(word, UNKNOWN) for word in words if word][:length]
            ids[row, : len(tokens)] = tokens
        return ids

    def decode_images(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded images as pixels (float64, n x height x width x channels) of the training data's size and
        colour mode, decoded and resized as the input pipeline did (tf.io.decode_image, tf.image.resize)."""
        import tensorflow as tf

        height, width = self._input["image_size"]
        channels = 1 if self._input["color_mode"] == "grayscale" else 3
        pixels = []
        for row, encoded in enumerate(images):
            try:
                image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
            except (tf.errors.InvalidArgumentError, ValueError):
                raise RequestError(
                    f"column {self._input['column']!r}, row {row}: not an image TensorFlow can decode "
                    "(PNG, JPEG, BMP or GIF bytes; base64-encoded in JSON)"
                ) from None
            if tuple(image.shape[:2]) != (height, width):
                image = tf.image.resize(image, (height, width))
            pixels.append(tf.cast(image, tf.float64).numpy())
        return np.stack(pixels) if pixels else np.zeros((0, height, width, channels))

    def _scaled(self, values: np.ndarray) -> np.ndarray:
        scaling = self.contract["scaling"]
        if scaling["kind"] in ("minmax", "standard"):
            flat = values.reshape(len(values), -1)
            values = (flat - np.asarray(scaling["offset"])) * np.asarray(scaling["scale"])
        return values.astype(np.float32)

    def _column(self, request: Any, name: str) -> list[Any]:
        frame = as_frame(request)
        if name not in frame.columns:
            raise RequestError(f"missing input column {name!r}; the model takes {self._names()}")
        values = list(frame[name])
        text = self._input["kind"] == TEXT
        for row, value in enumerate(values):
            if text and isinstance(value, (bytes, np.bytes_)):
                values[row] = value = bytes(value).decode("utf-8", errors="replace")
            if not isinstance(value, str if text else (bytes, np.bytes_)):
                raise RequestError(
                    f"column {name!r}, row {row}: {type(value).__name__} {str(value)[:40]!r}; "
                    f"expected {'text' if text else 'encoded image bytes'}"
                )
        return values

    def _numbers(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        if name not in frame.columns:
            raise RequestError(f"missing input column {name!r}; the model takes {self._names()}")
        column = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(column))
        if len(bad):
            value = frame[name].iloc[bad[0]]
            problem = "no value" if pd.isna(value) else f"{value!r} is not a finite number"
            raise RequestError(f"column {name!r}, row {bad[0]}: {problem}")
        return column

    def _tensor(self, request: Any) -> np.ndarray:
        shape = tuple(self._input["shape"])
        if isinstance(request, pd.DataFrame):  # one flattened sample per row, in one column or in many
            rows = request.iloc[:, 0] if request.shape[1] == 1 else request.to_numpy()
            request = [np.asarray(row, dtype=np.float64).reshape(-1) for row in rows]
        values = np.asarray(request, dtype=np.float64) if len(request) else np.zeros((0, *shape))
        if values.ndim < 2 or values[0].size != int(np.prod(shape)):
            raise RequestError(f"input of shape {list(values.shape)}; the model takes samples of shape {list(shape)}")
        if not np.isfinite(values).all():
            raise RequestError("the input holds values that are not finite numbers")
        return values.reshape((len(values), *shape))

    def _names(self) -> list[str]:
        return list(self._input.get("columns") or [self._input.get("column")])

    def _output_width(self) -> int:
        return len(self._output["classes"] if self._output["kind"] == CLASSES else self._output["columns"])


def as_frame(request: Any) -> pd.DataFrame:
    """A request as a DataFrame: as it is, or from a dict of columns."""
    if isinstance(request, pd.DataFrame):
        return request
    if isinstance(request, dict):
        return pd.DataFrame({name: list(np.atleast_1d(values)) for name, values in request.items()})
    raise RequestError(f"expected a table of named columns, got {type(request).__name__}")
