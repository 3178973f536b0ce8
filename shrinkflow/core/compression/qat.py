"""Quantization-aware training: fine-tune with simulated int8 quantization, keeping what pruning and clustering
made (PQAT, PCQAT), then convert to TFLite."""

from __future__ import annotations

from pathlib import Path

from shrinkflow.core.compression.tflite import convert_runnable, tflite_converter
from shrinkflow.core.compression.tuning import CompressionError, fine_tune, load_model
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.files import write_bytes_atomically
from shrinkflow.core.steps import QuantizeStep


def quantization_aware_train(
    keras_path: str | Path, dataset: DatasetRef, step: QuantizeStep, out_path: str | Path, preserve_sparsity: bool,
    preserve_clusters: bool = False,
) -> None:
    """Fine-tune a copy of the model with simulated int8 quantization, then convert it to TFLite.

    Fine-tunes as `step.tuning` says (the QAT epochs and learning rate) and converts with Optimize.DEFAULT to int8 weights and
    activations (float input and output). With `preserve_sparsity`, meant for a pruned model, the
    pruning-preserving scheme keeps zero weights at zero while fine-tuning ("PQAT"); plain QAT
    updates every weight, so a pruned model's zeros drift away. With `preserve_clusters`, meant for a
    clustered model, the cluster-preserving scheme keeps each kernel's distinct values (and, with
    `preserve_sparsity` too, its zeros): PCQAT, the end of the chain prune -> cluster -> quantize.

    Raises:
        CompressionError: the model cannot be read, made quantization-aware or converted, or
            LiteRT cannot run the result; out_path is then not written.
    """
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    assert step.tuning is not None, "a QAT step fine-tunes"
    tf_keras.utils.set_random_seed(step.tuning.seed)
    model = load_model(keras_path)
    try:
        if preserve_clusters:
            qat_model = tfmot.quantization.keras.quantize_apply(
                tfmot.quantization.keras.quantize_annotate_model(model),
                tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity),
            )
        elif preserve_sparsity:
            qat_model = tfmot.quantization.keras.quantize_apply(
                tfmot.quantization.keras.quantize_annotate_model(model),
                tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme(),
            )
        else:
            qat_model = tfmot.quantization.keras.quantize_model(model)
    except (ValueError, RuntimeError, TypeError) as exc:  # e.g. a layer tfmot cannot quantize
        raise CompressionError(f"{keras_path}: cannot make the model quantization-aware ({exc})") from exc
    fine_tune(qat_model, dataset, step.tuning)
    converter = tflite_converter(qat_model)
    converter.optimizations = {tf.lite.Optimize.DEFAULT}
    # int8 kernels: zeros are kept as dense zeros, not sparse-encoded (see SPARSE_ENCODING_MODES).
    write_bytes_atomically(out_path, convert_runnable(converter, f"{keras_path} (qat)", sparse_encoding=False))
