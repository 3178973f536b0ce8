"""Compress a trained Keras model: magnitude pruning, TFLite conversion, quantization-aware training.

Plain functions over files. Each reads a model file without changing it and writes its result to a
new file atomically (a temporary file beside it, then a rename), so a failed step leaves nothing
behind. Sparsity is measured on the written files, Keras and TFLite alike: what is reported is what
ships. TensorFlow and tensorflow-model-optimization (tfmot) are imported inside the functions that
use them, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from shrinkflow.core.config import (
    ClusterConfig, DistillConfig, ModelConfig, PruneConfig, QuantizeConfig, TrainConfig, resolve_loss,
)
from shrinkflow.core.data import DatasetRef, load_splits
from shrinkflow.core.files import write_bytes_atomically
from shrinkflow.core.training import compile_for_training, keras_loss, load_keras_model, make_dataset, save_for_inference

TFLITE_MODES = ("float32", "dynamic", "float16", "int8")

# The polynomial schedule ramps sparsity up over this share of the fine-tuning steps; the steps
# left recover accuracy at the final sparsity.
PRUNING_RAMP_SHARE = 2 / 3
# The masks are recomputed at least this many times during the ramp (tfmot's default, every 100
# steps, would never prune a small dataset's few steps), but at most every 100 steps.
MIN_MASK_UPDATES = 20
MAX_STEPS_BETWEEN_MASK_UPDATES = 100

# A model whose kernels hold at least this share of exact zeros is treated as pruned (trained
# dense weights are practically never exactly zero).
PRUNED_MIN_SPARSITY = 0.1
# Modes in which a pruned model's kernels are stored sparse-encoded (Optimize.EXPERIMENTAL_SPARSITY:
# compressed kernels that DENSIFY operators expand when the model loads). Not the int8 kernels of
# dynamic, int8 and QAT models: LiteRT's default XNNPACK delegate cannot prepare a FULLY_CONNECTED
# fed by a sparse int8 kernel, so the interpreter would fail to load the model. Their zeros stay as
# dense zeros instead, exactly: symmetric weight quantization maps 0.0 to 0. float32 is the plain
# reference conversion.
SPARSE_ENCODING_MODES = ("float16",)

# Seed of the draw of int8 calibration samples, so a conversion repeats exactly.
CALIBRATION_SEED = 0

# TFLite operators with weight kernels, and which of their inputs are kernels: the filter of convolutions and
# fully connected layers, the input and recurrent weights of a fused LSTM, the table of an embedding lookup.
KERNEL_INPUTS: dict[str, tuple[int, ...]] = {
    "CONV_2D": (1,), "CONV_3D": (1,), "DEPTHWISE_CONV_2D": (1,), "FULLY_CONNECTED": (1,), "TRANSPOSE_CONV": (1,),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9)), "GATHER": (0,),
}
# Operators the converter puts between a stored kernel and its consumer: DEQUANTIZE expands float16
# (or int8) weights to float32, DENSIFY expands a sparse-encoded kernel.
WEIGHT_EXPANDING_OPERATORS = ("DEQUANTIZE", "DENSIFY")
KERNEL_DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16}


class CompressionError(RuntimeError):
    """A model could not be read, converted, or run after conversion; no output was written."""


# --- pruning -------------------------------------------------------------------------------------


def prune(
    baseline_path: str | Path,
    dataset: DatasetRef,
    prune_cfg: PruneConfig,
    train_cfg: TrainConfig,
    out_path: str | Path,
) -> float:
    """Magnitude-prune a copy of the baseline while fine-tuning it, and save it as a plain Keras model.

    The baseline file is only read. The schedule (see pruning_schedule) reaches
    `prune_cfg.target_sparsity` within `prune_cfg.epochs` epochs of Adam at
    `prune_cfg.learning_rate`, with the baseline's batch size and seed. The pruning wrappers are
    stripped before saving, so the file holds ordinary layers whose kernels contain the zeros.

    Returns:
        The share of zeros among the saved model's kernels (see keras_sparsity).

    Raises:
        CompressionError: the baseline file is missing or unreadable.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(train_cfg.seed)
    splits = load_splits(dataset)
    model = _load_model(baseline_path)
    steps_per_epoch = int(np.ceil(len(splits.x_train) / train_cfg.batch_size))
    schedule = pruning_schedule(prune_cfg, total_steps=steps_per_epoch * prune_cfg.epochs)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    fine_tune(pruned, dataset, train_cfg, prune_cfg.learning_rate, prune_cfg.epochs, [tfmot.sparsity.keras.UpdatePruningStep()])
    save_for_inference(tfmot.sparsity.keras.strip_pruning(pruned), out_path)
    return keras_sparsity(load_keras_model(out_path))


def pruning_schedule(prune_cfg: PruneConfig, total_steps: int) -> Any:
    """The tfmot schedule that reaches the target sparsity within `total_steps` training steps.

    "polynomial" ramps from 0 to the target over the first two thirds of the steps (all of them when
    there are very few); "constant" prunes to the target from the first mask update on. The pruning
    wrappers count steps from 1 and recompute the masks every `frequency` steps; the ramp's end step
    is a multiple of it, so its last update applies exactly the target.
    """
    import tensorflow_model_optimization as tfmot

    ramp_steps = max(1, int(total_steps * PRUNING_RAMP_SHARE))
    frequency = min(MAX_STEPS_BETWEEN_MASK_UPDATES, max(1, ramp_steps // MIN_MASK_UPDATES))
    if prune_cfg.schedule == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(
            prune_cfg.target_sparsity, begin_step=0, end_step=-1, frequency=frequency
        )
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=prune_cfg.target_sparsity,
        begin_step=0,
        end_step=frequency * (ramp_steps // frequency),
        frequency=frequency,
    )


def keras_sparsity(model: Any) -> float:
    """Share of exact zeros among the kernels of a Keras model's Dense and convolution layers.

    These are the weights magnitude pruning acts on: biases and other weights are not counted.
    Layers of nested models count too. A model without such layers has sparsity 0.
    """
    zeros = total = 0
    for _, kernel in keras_kernels(model):
        zeros += int(np.count_nonzero(kernel == 0))
        total += kernel.size
    return zeros / total if total else 0.0


def keras_kernels(model: Any) -> Iterator[tuple[str, np.ndarray]]:
    """Each kernel of the model's Dense and convolution layers (nested models too), with its weight's name."""
    from tf_keras import layers

    kernel_layers = (  # transposed convolutions subclass the ConvND layers
        layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D,
        layers.DepthwiseConv1D, layers.DepthwiseConv2D, layers.SeparableConv1D, layers.SeparableConv2D,
        layers.LSTMCell, layers.GRUCell, layers.Embedding,
    )
    for layer in [model, *model.submodules]:
        if isinstance(layer, kernel_layers):
            for name in ("kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"):
                if getattr(layer, name, None) is not None:
                    weight = getattr(layer, name)
                    yield weight.name, weight.numpy()


# --- distillation --------------------------------------------------------------------------------


def distill(
    teacher_path: str | Path,
    dataset: DatasetRef,
    student_cfg: ModelConfig,
    distill_cfg: DistillConfig,
    train_cfg: TrainConfig,
    out_path: str | Path,
    from_scratch: bool = False,
) -> int:
    """Train a student (`student_cfg`) from the teacher's soft targets and the hard labels, and save it.

    Classification: the loss is alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(labels,
    student), where x_T is the softmax of log-probabilities divided by the temperature T (Hinton et al., 2015).
    Regression: alpha * MSE(teacher's predictions, student's) + (1 - alpha) * the task's loss on the targets
    (there are no probabilities to soften, so the temperature does not apply). The teacher's outputs are
    computed once, before training. With `from_scratch` the student learns from the labels alone, with the same
    settings: the comparison that measures what distillation adds. Epochs, learning rate (Adam) and early
    stopping on the validation loss as in `distill_cfg`; batch size and seed as in `train_cfg`.

    Returns:
        The student's number of parameters.
    """
    import tensorflow as tf
    import tf_keras
    from tf_keras.callbacks import EarlyStopping

    from shrinkflow.core.training import model_for

    tf_keras.utils.set_random_seed(train_cfg.seed)
    splits = load_splits(dataset)
    alpha = 0.0 if from_scratch else distill_cfg.alpha
    temperature = distill_cfg.temperature
    classification = dataset.task == "classification"
    labels_width = 1 if classification else dataset.num_outputs

    teacher = None if alpha == 0 else _load_model(teacher_path)

    def targets(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each sample's label (or targets), then the teacher's softened probabilities (or predictions)."""
        if teacher is None:
            taught = np.zeros((len(x), dataset.num_outputs), dtype=np.float32)
        elif classification:
            log_probabilities = np.log(np.clip(teacher.predict(x, batch_size=512, verbose=0), 1e-7, 1.0))
            taught = tf.nn.softmax(log_probabilities / temperature).numpy()
        else:
            taught = teacher.predict(x, batch_size=512, verbose=0)
        return np.concatenate([y.reshape(len(y), -1).astype(np.float32), taught], axis=1)

    task_loss = None if classification else keras_loss(resolve_loss(train_cfg.loss, dataset.task))

    def loss(y_true: Any, y_pred: Any) -> Any:
        truth, taught = y_true[:, :labels_width], y_true[:, labels_width:]
        if classification:
            hard = tf_keras.losses.sparse_categorical_crossentropy(tf.cast(truth[:, 0], tf.int32), y_pred)
        else:
            assert task_loss is not None
            hard = task_loss(truth, y_pred)
        if alpha == 0:
            return hard
        if not classification:
            return alpha * tf_keras.losses.mean_squared_error(taught, y_pred) + (1 - alpha) * hard
        soft_student = tf.nn.softmax(tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)) / temperature)
        soft = tf_keras.losses.kl_divergence(taught, soft_student)
        return alpha * temperature**2 * soft + (1 - alpha) * hard

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        return tf_keras.metrics.sparse_categorical_accuracy(tf.cast(y_true[:, 0], tf.int32), y_pred)

    def rmse(y_true: Any, y_pred: Any) -> Any:
        return tf.sqrt(tf_keras.losses.mean_squared_error(y_true[:, :labels_width], y_pred))

    train_targets, val_targets = targets(splits.x_train, splits.y_train), targets(splits.x_val, splits.y_val)
    student = model_for(student_cfg, dataset)
    student.compile(
        optimizer=tf_keras.optimizers.Adam(distill_cfg.learning_rate), loss=loss,
        metrics=[accuracy if classification else rmse],
    )
    callbacks: list[Any] = []
    if distill_cfg.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=distill_cfg.early_stopping_patience, restore_best_weights=True))
    student.fit(
        make_dataset(splits.x_train, train_targets, train_cfg.batch_size, shuffle_seed=train_cfg.seed),
        validation_data=make_dataset(splits.x_val, val_targets, train_cfg.batch_size),
        epochs=distill_cfg.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    save_for_inference(student, out_path)
    return int(student.count_params())


# --- weight clustering ---------------------------------------------------------------------------


def cluster(
    source_path: str | Path,
    dataset: DatasetRef,
    cluster_cfg: ClusterConfig,
    train_cfg: TrainConfig,
    out_path: str | Path,
    preserve_sparsity: bool,
) -> int:
    """Cluster a copy of the model's weights (k-means++ centroids) while fine-tuning it, and save it plain.

    Every Dense, Conv1D, Conv2D and Embedding kernel ends with at most `cluster_cfg.clusters` distinct values (per output
    channel for conv kernels when `per_channel`). With `preserve_sparsity`, for a pruned source, zeros stay
    zero (sparsity-preserving clustering). A kernel whose channels have too few weights for that many
    clusters is clustered per tensor, and one too small even so into fewer clusters (clusters_that_fit):
    every kernel is clustered, so that PCQAT, which keeps zeros only in clustered layers, keeps them all. Fine-tunes `cluster_cfg.epochs` epochs of Adam at its learning rate
    with the baseline's batch size and seed; the clustering wrappers are stripped before saving.

    Returns:
        How many kernels were clustered.

    Raises:
        CompressionError: the model cannot be read or clustered.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from tensorflow_model_optimization.python.core.clustering.keras.experimental import cluster as experimental

    tf_keras.utils.set_random_seed(train_cfg.seed)
    model = _load_model(source_path)
    clustered_layers = 0

    def clustered_copy(layer: Any) -> Any:
        nonlocal clustered_layers
        if not isinstance(layer, _clustered_layers()):
            return layer  # as tfmot's guide does: the layer itself, weights and all
        kernel = getattr(layer, "embeddings" if isinstance(layer, tf_keras.layers.Embedding) else "kernel").numpy()
        per_channel = cluster_cfg.per_channel and isinstance(layer, tf_keras.layers.Conv2D) and all(
            clusters_that_fit(kernel[..., channel], cluster_cfg.clusters, preserve_sparsity) == cluster_cfg.clusters
            for channel in range(kernel.shape[-1])
        )
        clusters = cluster_cfg.clusters if per_channel else clusters_that_fit(kernel, cluster_cfg.clusters, preserve_sparsity)
        if clusters < min_clusters(preserve_sparsity):
            return layer  # too few weights to cluster: it has at most a handful of distinct values anyway
        clustered_layers += 1
        return experimental.cluster_weights(
            layer,
            number_of_clusters=clusters,
            cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity=preserve_sparsity,
            cluster_per_channel=per_channel,
        )

    try:
        clustered = tf_keras.models.clone_model(model, clone_function=clustered_copy)
    except Exception as exc:  # tfmot raises ValueError, TypeError, InvalidArgumentError, ...
        raise CompressionError(f"{source_path}: cannot cluster the model's weights ({type(exc).__name__}: {exc})") from exc
    fine_tune(clustered, dataset, train_cfg, cluster_cfg.learning_rate, cluster_cfg.epochs)
    save_for_inference(tfmot.clustering.keras.strip_clustering(clustered), out_path)
    return clustered_layers


def _clustered_layers() -> tuple[type, ...]:
    """The layers whose kernels are clustered: those tfmot clusters (recurrent layers' kernels are left as they are)."""
    from tf_keras import layers

    return (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Embedding)


def min_clusters(preserve_sparsity: bool) -> int:
    """tfmot's least number of clusters: 2, or 3 when preserving sparsity (zero is a cluster of its own)."""
    return 3 if preserve_sparsity else 2


def clusters_that_fit(weights: np.ndarray, clusters: int, preserve_sparsity: bool) -> int:
    """The most clusters, up to `clusters`, that tfmot's k-means++ initialisation can place in `weights`:
    one per weight; sparsity-preserving, zero is a centroid of its own and the others are shared out
    between negative and positive weights in proportion, so each sign needs as many weights as clusters."""
    if not preserve_sparsity:
        return min(clusters, int(weights.size))
    return min(clusters, 1 + min(int(np.count_nonzero(weights > 0)), int(np.count_nonzero(weights < 0))))


# --- TFLite conversion ---------------------------------------------------------------------------


def convert_to_tflite(
    keras_path: str | Path, mode: str, dataset: DatasetRef, quantize_cfg: QuantizeConfig, out_path: str | Path
) -> None:
    """Convert a Keras model file to a TFLite file with one post-training quantization mode.

    Modes: "float32" converts without optimizations (the float reference); "dynamic" stores
    weights as int8 (Optimize.DEFAULT); "float16" stores weights as float16; "int8" quantizes
    weights and activations, calibrated on `quantize_cfg.representative_samples` samples drawn
    from the training split, with integer-only operators and, when `quantize_cfg.int8_io`, int8
    input and output. A pruned model keeps its zeros in every mode; in SPARSE_ENCODING_MODES its
    kernels are also stored sparse-encoded. The result is checked to run in LiteRT before it is
    written.

    Raises:
        ValueError: an unknown mode, or int8 without calibration samples.
        CompressionError: the model cannot be read or converted, or LiteRT cannot run the result;
            out_path is then not written.
    """
    import tensorflow as tf

    if mode not in TFLITE_MODES:
        raise ValueError(f"unknown TFLite mode {mode!r}; expected one of {', '.join(TFLITE_MODES)}")
    if mode == "int8" and quantize_cfg.representative_samples < 1:
        raise ValueError("int8 conversion needs quantize.representative_samples >= 1 for calibration")
    model = _load_model(keras_path)
    converter = tflite_converter(model)
    converter.optimizations = set() if mode == "float32" else {tf.lite.Optimize.DEFAULT}
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        x_train = load_splits(dataset).x_train
        converter.representative_dataset = _representative_samples(x_train, quantize_cfg.representative_samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quantize_cfg.int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    sparse_encoding = mode in SPARSE_ENCODING_MODES and keras_sparsity(model) >= PRUNED_MIN_SPARSITY
    write_bytes_atomically(out_path, _convert_runnable(converter, f"{keras_path} ({mode})", sparse_encoding))


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


def _representative_samples(x: np.ndarray, count: int) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's calibration data: `count` samples of `x` (all when fewer), drawn with a fixed seed."""
    chosen = np.random.default_rng(CALIBRATION_SEED).choice(len(x), size=min(count, len(x)), replace=False)

    def samples() -> Iterator[list[np.ndarray]]:
        for index in chosen:
            yield [x[index : index + 1].astype(np.float32)]

    return samples


# --- quantization-aware training -----------------------------------------------------------------


def quantization_aware_train(
    keras_path: str | Path,
    dataset: DatasetRef,
    quantize_cfg: QuantizeConfig,
    train_cfg: TrainConfig,
    out_path: str | Path,
    preserve_sparsity: bool,
    preserve_clusters: bool = False,
) -> None:
    """Fine-tune a copy of the model with simulated int8 quantization, then convert it to TFLite.

    Fine-tunes `quantize_cfg.qat_epochs` epochs of Adam at `quantize_cfg.qat_learning_rate`, with
    the baseline's batch size and seed, and converts with Optimize.DEFAULT to int8 weights and
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

    tf_keras.utils.set_random_seed(train_cfg.seed)
    model = _load_model(keras_path)
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
    fine_tune(qat_model, dataset, train_cfg, quantize_cfg.qat_learning_rate, quantize_cfg.qat_epochs)
    converter = tflite_converter(qat_model)
    converter.optimizations = {tf.lite.Optimize.DEFAULT}
    # int8 kernels: zeros are kept as dense zeros, not sparse-encoded (see SPARSE_ENCODING_MODES).
    write_bytes_atomically(out_path, _convert_runnable(converter, f"{keras_path} (qat)", sparse_encoding=False))


# --- TFLite sparsity -----------------------------------------------------------------------------


def tflite_sparsity(tflite_path: str | Path) -> float:
    """Share of zero weights among the kernels of a TFLite model's convolution and fully connected operators.

    What counts:
      - A kernel is the stored constant behind the second input of CONV_2D, CONV_3D,
        DEPTHWISE_CONV_2D, FULLY_CONNECTED or TRANSPOSE_CONV, followed back through DEQUANTIZE
        (float16 weights) and DENSIFY (sparse-encoded weights). Biases and activations never count.
      - Each kernel counts with its dense size; the elements a sparse encoding leaves out are zeros.
      - A float weight is zero when it is exactly 0. A quantized weight is zero when its stored
        integer equals its zero point (per channel for per-channel quantization): TFLite's int8
        weights are symmetric, so that is a stored 0, which is exactly what a pruned 0.0 becomes.
        Post-training quantization also rounds weights smaller than half a quantization step to 0,
        so a dense model's int8 file shows a little sparsity of its own.

    The flatbuffer is parsed directly: LiteRT's interpreter hides sparse-encoded constants.

    Raises:
        ValueError: the file is not a TFLite model, or a kernel's storage is not understood.
    """
    content = Path(tflite_path).read_bytes()
    zeros = total = 0
    for tensor, data in tflite_kernels(content, str(tflite_path)):
        kernel_zeros, kernel_size = _count_zero_weights(tensor, data)
        zeros += kernel_zeros
        total += kernel_size
    return zeros / total if total else 0.0


def tflite_kernels(content: bytes, source: str) -> Iterator[tuple[Any, bytes]]:
    """Each stored kernel of the model's subgraphs, once: its tensor and its stored bytes."""
    from ai_edge_litert import schema_py_generated as schema

    if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
        raise ValueError(f"{source}: not a TFLite model")
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if isinstance(code, int)}
    # Old files keep the code in deprecatedBuiltinCode (capped at 127); newer ones in builtinCode.
    opcode_names = [names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) for code in model.operatorCodes]
    for subgraph in model.subgraphs:
        producers = {output: op for op in subgraph.operators for output in _as_list(op.outputs)}
        seen: set[int] = set()
        for op in subgraph.operators:
            inputs = _as_list(op.inputs)
            for position in KERNEL_INPUTS.get(opcode_names[op.opcodeIndex] or "", ()):
                if position >= len(inputs):
                    continue
                index = inputs[position]
                while index in producers and opcode_names[producers[index].opcodeIndex] in WEIGHT_EXPANDING_OPERATORS:
                    index = _as_list(producers[index].inputs)[0]
                if index < 0 or index in seen or index in producers:
                    continue  # no kernel, already counted, or computed at run time: not a stored weight
                seen.add(index)
                tensor = subgraph.tensors[index]
                data = _buffer_bytes(model.buffers[tensor.buffer], content)
                if data:
                    yield tensor, data


def _as_list(indices: Any) -> list[int]:
    """Tensor indices of a parsed operator (None when the flatbuffer stores none)."""
    return [] if indices is None else [int(index) for index in indices]


def _buffer_bytes(buffer: Any, content: bytes) -> bytes:
    """A buffer's bytes, stored inline or (in files over 2 GB) after the flatbuffer at an offset."""
    if buffer.data is not None:
        return bytes(buffer.data)
    if buffer.offset > 1:
        return content[buffer.offset : buffer.offset + buffer.size]
    return b""


def tflite_kernel_values(tensor: Any, data: bytes) -> np.ndarray:
    """A stored kernel's values as stored (quantized integers for a quantized kernel), flat.

    Raises:
        ValueError: a weight type whose storage is not understood.
    """
    from ai_edge_litert.schema_py_generated import TensorType

    type_names = {code: name for name, code in vars(TensorType).items() if isinstance(code, int)}
    type_name = type_names.get(tensor.type, f"type {tensor.type}")
    if type_name not in KERNEL_DTYPES:
        raise ValueError(f"kernel {tensor.name!r}: cannot read {type_name} weights")
    return np.frombuffer(data, dtype=KERNEL_DTYPES[type_name])


def _count_zero_weights(tensor: Any, data: bytes) -> tuple[int, int]:
    """How many of one kernel's weights are zero (see tflite_sparsity), and how many weights it has."""
    values = tflite_kernel_values(tensor, data)
    shape = tuple(int(size) for size in tensor.shape)
    dense_size = int(np.prod(shape))
    stored_zero_points = getattr(tensor.quantization, "zeroPoint", None)
    has_zero_points = stored_zero_points is not None and len(stored_zero_points) > 0
    zero_points = np.asarray(stored_zero_points) if has_zero_points else np.zeros(1, dtype=np.int64)
    if tensor.sparsity is not None:
        if np.any(zero_points != zero_points[0]):
            raise ValueError(f"kernel {tensor.name!r}: sparse-encoded with per-channel zero points")
        return dense_size - values.size + int(np.count_nonzero(values == zero_points[0])), dense_size
    if values.size != dense_size:
        raise ValueError(f"kernel {tensor.name!r}: {values.size} stored values for shape {list(shape)}")
    if len(zero_points) > 1:  # per-channel: broadcast along the quantized dimension
        axis_shape = [1] * len(shape)
        axis_shape[tensor.quantization.quantizedDimension] = len(zero_points)
        zero_points = np.broadcast_to(zero_points.reshape(axis_shape), shape).ravel()
    return int(np.count_nonzero(values == zero_points)), dense_size


# --- files and conversion ---


def fine_tune(
    model: Any, dataset: DatasetRef, train_cfg: TrainConfig, learning_rate: float, epochs: int,
    callbacks: Sequence[Any] = (),
) -> None:
    """Fine-tune a wrapped copy (pruning, clustering, QAT) with Adam and the baseline's loss, batch size and
    shuffling seed."""
    import tf_keras

    splits = load_splits(dataset)
    compile_for_training(model, tf_keras.optimizers.Adam(learning_rate), resolve_loss(train_cfg.loss, dataset.task))
    model.fit(
        make_dataset(splits.x_train, splits.y_train, train_cfg.batch_size, shuffle_seed=train_cfg.seed),
        validation_data=make_dataset(splits.x_val, splits.y_val, train_cfg.batch_size),
        epochs=epochs,
        callbacks=list(callbacks),
        verbose=0,
    )


def _load_model(path: str | Path) -> Any:
    """The Keras model in `path`, or a CompressionError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CompressionError(f"{path}: model file not found")
    try:
        return load_keras_model(path)
    except Exception as exc:  # Keras raises many types for an unreadable file
        raise CompressionError(f"{path}: cannot load the Keras model ({type(exc).__name__}: {exc})") from exc


def _convert_runnable(converter: Any, what: str, sparse_encoding: bool) -> bytes:
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
