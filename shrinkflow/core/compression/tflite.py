"""TFLite conversion with post-training quantization, and the check that LiteRT runs what the converter wrote."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shrinkflow.core.compression.tuning import CompressionError, load_model
from shrinkflow.core.data import DatasetRef, sample_features
from shrinkflow.core.files import write_bytes_atomically
from shrinkflow.core.kernels.keras import keras_sparsity
from shrinkflow.core.names import Quantization
from shrinkflow.core.steps import QuantizeStep

# The post-training modes; Quantization.NONE converts without optimizations (the float32 reference).
POST_TRAINING_MODES = (Quantization.NONE, Quantization.DYNAMIC, Quantization.FLOAT16, Quantization.INT8)

# A model whose kernels hold at least this share of exact zeros is treated as pruned (trained
# dense weights are practically never exactly zero).
PRUNED_MIN_SPARSITY = 0.1
# Modes in which a pruned model's kernels are stored sparse-encoded (Optimize.EXPERIMENTAL_SPARSITY:
# compressed kernels that DENSIFY operators expand when the model loads). Not the int8 kernels of
# dynamic, int8 and QAT models: LiteRT's default XNNPACK delegate cannot prepare a FULLY_CONNECTED
# fed by a sparse int8 kernel, so the interpreter would fail to load the model. Their zeros stay as
# dense zeros instead, exactly: symmetric weight quantization maps 0.0 to 0. float32 is the plain
# reference conversion.
SPARSE_ENCODING_MODES = (Quantization.FLOAT16,)

# Seed of the draw of int8 calibration samples, so a conversion repeats exactly.
CALIBRATION_SEED = 0


def convert_to_tflite(keras_path: str | Path, step: QuantizeStep, dataset: DatasetRef, out_path: str | Path) -> None:
    """Convert a Keras model file to a TFLite file with the step's post-training quantization mode.

    Modes: none converts without optimizations (the float32 reference); "dynamic" stores
    weights as int8 (Optimize.DEFAULT); "float16" stores weights as float16; "int8" quantizes
    weights and activations, calibrated on `step.representative_samples` samples drawn
    from the training split (read from its shards, not the whole split), with integer-only operators and, when `step.int8_io`, int8
    input and output. A pruned model keeps its zeros in every mode; in SPARSE_ENCODING_MODES its
    kernels are also stored sparse-encoded. The result is checked to run in LiteRT before it is
    written.

    Raises:
        ValueError: not a post-training mode, or int8 without calibration samples.
        CompressionError: the model cannot be read or converted, or LiteRT cannot run the result;
            out_path is then not written.
    """
    import tensorflow as tf

    mode = step.mode
    if mode not in POST_TRAINING_MODES:
        raise ValueError(f"{mode} is not a post-training mode; expected one of {', '.join(POST_TRAINING_MODES)}")
    if mode is Quantization.INT8 and step.representative_samples < 1:
        raise ValueError("int8 conversion needs quantize.representative_samples >= 1 for calibration")
    model = load_model(keras_path)
    converter = tflite_converter(model)
    converter.optimizations = set() if mode is Quantization.NONE else {tf.lite.Optimize.DEFAULT}
    if mode is Quantization.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if mode is Quantization.INT8:
        calibration = sample_features(dataset, "train", step.representative_samples, CALIBRATION_SEED)
        converter.representative_dataset = _representative_samples(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if step.int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    sparse_encoding = mode in SPARSE_ENCODING_MODES and keras_sparsity(model) >= PRUNED_MIN_SPARSITY
    write_bytes_atomically(out_path, convert_runnable(converter, f"{keras_path} ({mode})", sparse_encoding))


def tflite_converter(model: Any) -> Any:
    """The TFLite converter of a Keras model. A recurrent model is converted for one sample at a time (a
    static batch size of 1, which is how shrinkflow runs TFLite files): the converter fuses an LSTM into
    TFLite's own operator only when every shape but the time steps is static, and otherwise fails."""
    import tensorflow as tf
    import tf_keras

    if not any(isinstance(layer, tf_keras.layers.RNN) for layer in [model, *model.submodules]):
        return tf.lite.TFLiteConverter.from_keras_model(model)
    single = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    )
    return tf.lite.TFLiteConverter.from_concrete_functions([single], model)


def _representative_samples(samples: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's calibration data: the samples one at a time."""

    def one_at_a_time() -> Iterator[list[np.ndarray]]:
        for index in range(len(samples)):
            yield [samples[index : index + 1]]

    return one_at_a_time


def convert_runnable(converter: Any, what: str, sparse_encoding: bool) -> bytes:
    """Convert, and check that LiteRT's default interpreter can load and run the result.

    With `sparse_encoding` the converter also gets Optimize.EXPERIMENTAL_SPARSITY; should LiteRT
    not run that model, it is converted again without it, keeping its zeros as dense zeros.

    Raises:
        CompressionError: the converter fails, or LiteRT cannot run what it produced.
    """
    import tensorflow as tf

    if sparse_encoding:
        converter.optimizations = set(converter.optimizations) | {tf.lite.Optimize.EXPERIMENTAL_SPARSITY}
        content = _run_converter(converter, what)
        if _litert_problem(content) is None:
            return content
        converter.optimizations = set(converter.optimizations) - {tf.lite.Optimize.EXPERIMENTAL_SPARSITY}
    content = _run_converter(converter, what)
    problem = _litert_problem(content)
    if problem is not None:
        raise CompressionError(f"TFLite conversion of {what} gave a model LiteRT cannot run ({problem})")
    return content


def _run_converter(converter: Any, what: str) -> bytes:
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError, ...
        raise CompressionError(f"TFLite conversion of {what} failed ({type(exc).__name__}: {exc})") from exc


def _litert_problem(content: bytes) -> str | None:
    """Why LiteRT's default interpreter cannot run this model on an all-zero input; None if it can."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
