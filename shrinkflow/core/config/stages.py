"""The sections of the pipeline's stages: training, distillation, pruning, clustering, quantization, ONNX,
selection and the champion gate, export."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from shrinkflow.core.config.base import Section
from shrinkflow.core.config.model import StudentConfig

Optimizer = Literal["adam", "sgd", "rmsprop", "adagrad"]
QuantizationMode = Literal["dynamic", "float16", "int8", "qat"]
# latency_ms: one sample per call (serving single requests); batch64_latency_ms: 64 per call (scoring batches).
SelectionMetric = Literal["gzip_size_bytes", "size_bytes", "latency_ms", "batch64_latency_ms"]
QualityMetric = Literal["accuracy", "rmse", "r2"]
# The quality metrics each task can be selected on; the first is the default.
QUALITY_METRICS: dict[str, tuple[str, ...]] = {"classification": ("accuracy",), "regression": ("rmse", "r2")}
LOSSES: dict[str, tuple[str, ...]] = {"classification": ("crossentropy",), "regression": ("mse", "mae", "huber")}


class TrainConfig(Section):
    """How the baseline is trained."""

    model_config = ConfigDict(title="Training")

    epochs: int = Field(10, ge=1, le=1000, title="Epochs", description="Maximum training epochs (early stopping may end sooner).")
    batch_size: int = Field(128, ge=1, title="Batch size", description="Samples per gradient step.")
    loss: Literal["auto", "crossentropy", "mse", "mae", "huber"] = Field(
        "auto", title="Loss",
        description="auto: crossentropy for classification, mse for regression; regression may use mae or huber instead.",
    )
    optimizer: Optimizer = Field("adam", title="Optimizer", description="The Keras optimizer.")
    learning_rate: float = Field(1e-3, gt=0, le=10, title="Learning rate", description="Initial learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, title="Momentum", description="Momentum of the sgd optimizer (sgd only).")
    lr_schedule: Literal["constant", "exponential"] = Field(
        "constant", title="Learning-rate schedule", description="constant, or exponential: multiplied by decay_rate after every epoch."
    )
    decay_rate: float = Field(0.9, gt=0, le=1, title="Decay per epoch", description="exponential: factor applied every epoch.")
    early_stopping_patience: int | None = Field(
        3, ge=1, title="Early-stopping patience", description="Stop after this many epochs without a better validation loss; null disables."
    )
    seed: int = Field(42, title="Training seed", description="Seed of weight initialisation and shuffling.")


class PruneConfig(Section):
    """Magnitude pruning of a copy of the baseline (tensorflow-model-optimization)."""

    model_config = ConfigDict(title="Pruning")

    enabled: bool = Field(False, title="Build a pruned variant", description="Build the pruned variant (and its quantized variants).")
    target_sparsity: float = Field(0.8, ge=0, lt=1, title="Target sparsity", description="Share of weights set to zero, in [0, 1).")
    schedule: Literal["polynomial", "constant"] = Field(
        "polynomial", title="Pruning schedule", description="polynomial: sparsity ramps from 0 to the target while fine-tuning; constant: at once."
    )
    epochs: int = Field(2, ge=1, title="Fine-tuning epochs", description="Fine-tuning epochs while pruning.")
    learning_rate: float = Field(1e-4, gt=0, le=1, title="Fine-tuning learning rate", description="Fine-tuning learning rate (Adam).")


class DistillConfig(Section):
    """Knowledge distillation: smaller students learn from the trained baseline (the teacher)."""

    model_config = ConfigDict(title="Distillation")

    students: tuple[StudentConfig, ...] = Field(
        (), title="Students", description="Student models, variants student-1, student-2, ...; none disables distillation."
    )
    temperature: float = Field(4.0, gt=0, le=100, title="Temperature", description="Softens the teacher's and the student's outputs in the soft-target loss.")
    alpha: float = Field(
        0.7, ge=0, le=1, title="Soft-target weight",
        description="Weight of the soft-target loss (times temperature squared); the hard-label loss gets 1 - alpha.",
    )
    epochs: int = Field(20, ge=1, le=1000, title="Epochs", description="Training epochs of each student.")
    early_stopping_patience: int | None = Field(
        None, ge=1, title="Early-stopping patience",
        description="Stop a student after this many epochs without a better validation loss; null trains every epoch.",
    )
    learning_rate: float = Field(2e-3, gt=0, le=10, title="Learning rate", description="Learning rate of each student (Adam).")
    from_scratch: bool = Field(
        True, title="Also train from scratch",
        description="Also train each student on the hard labels alone (student-K-scratch), so the gain of distillation is measured.",
    )


class ClusterConfig(Section):
    """Weight clustering (tensorflow-model-optimization): each kernel keeps at most `clusters` distinct values."""

    model_config = ConfigDict(title="Clustering")

    enabled: bool = Field(False, title="Build clustered variants", description="Cluster the weights of the sources chosen in 'apply to'.")
    clusters: int = Field(16, ge=2, le=256, title="Clusters", description="Distinct weight values per kernel (per channel for conv kernels with per-channel).")
    per_channel: bool = Field(True, title="Per channel", description="Conv kernels get their own clusters per output channel.")
    apply_to: tuple[Literal["pruned", "unpruned"], ...] = Field(
        ("pruned",), title="Apply to",
        description=(
            "pruned: sparsity-preserving clustering of each pruned model (the chain prune -> cluster -> PCQAT; "
            "nothing while pruning is off); unpruned: clustering of the baseline and each student directly."
        ),
    )
    epochs: int = Field(2, ge=1, le=1000, title="Fine-tuning epochs", description="Fine-tuning epochs while clustering.")
    learning_rate: float = Field(1e-4, gt=0, le=1, title="Fine-tuning learning rate", description="Fine-tuning learning rate (Adam).")

    @model_validator(mode="after")
    def _check_apply_to(self) -> ClusterConfig:
        if self.enabled and not self.apply_to:
            raise ValueError("apply_to is empty: list pruned and/or unpruned, or set enabled: false")
        if len(set(self.apply_to)) != len(self.apply_to):
            raise ValueError("apply_to lists a source twice")
        if "pruned" in self.apply_to and self.clusters < 3:
            raise ValueError(
                "clusters: sparsity-preserving clustering of pruned models (apply_to: pruned) needs at least 3 "
                "clusters, zero being one of them"
            )
        return self


class QuantizeConfig(Section):
    """Post-training and quantization-aware conversion to TFLite, of the baseline and the pruned model."""

    model_config = ConfigDict(title="Quantization")

    modes: tuple[QuantizationMode, ...] = Field(
        (),
        title="Quantization modes",
        description=(
            "TFLite variants to build: dynamic (dynamic-range), float16, int8 (full integer, calibrated "
            "on training data), qat (quantization-aware training, then conversion)."
        ),
    )
    int8_io: bool = Field(False, title="Integer input and output", description="int8: integer input and output tensors too (for integer-only accelerators).")
    representative_samples: int = Field(
        200, ge=0, title="Calibration samples", description="int8: calibration samples drawn from the training split."
    )
    qat_epochs: int = Field(1, ge=1, title="QAT epochs", description="qat: quantization-aware fine-tuning epochs.")
    qat_learning_rate: float = Field(1e-4, gt=0, le=1, title="QAT learning rate", description="qat: fine-tuning learning rate (Adam).")

    @model_validator(mode="after")
    def _check_calibration(self) -> QuantizeConfig:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError("modes lists a mode twice")
        if "int8" in self.modes and self.representative_samples == 0:
            raise ValueError(
                "int8 needs calibration data: set representative_samples to at least 1, or drop int8 from modes"
            )
        return self


class OnnxConfig(Section):
    """ONNX Runtime as a second target: variants converted to ONNX (tf2onnx) and evaluated in onnxruntime."""

    model_config = ConfigDict(title="ONNX Runtime")

    enabled: bool = Field(False, title="Build ONNX variants", description="Convert the variants chosen in 'convert' to ONNX (variants named VARIANT-onnx).")
    opset: int = Field(15, ge=13, le=18, title="ONNX opset", description="The ONNX opset to target: 13 to 18 (what tf2onnx 1.17 supports with QDQ).")
    convert: tuple[Literal["float", "int8", "qat"], ...] = Field(
        ("int8", "qat"), title="Convert",
        description=(
            "float: every Keras variant (through its SavedModel, float weights); int8, qat: every TFLite variant "
            "of that quantization mode, if quantize.modes builds it (int8 weights, QDQ ONNX)."
        ),
    )

    @model_validator(mode="after")
    def _check_convert(self) -> OnnxConfig:
        if self.enabled and not self.convert:
            raise ValueError("convert is empty: list float, int8 and/or qat, or set enabled: false")
        if len(set(self.convert)) != len(self.convert):
            raise ValueError("convert lists a kind twice")
        return self


class SelectConfig(Section):
    """Which variant ships, and when it may replace the registry's champion."""

    model_config = ConfigDict(title="Selection and champion gate")

    metric: SelectionMetric = Field(
        "gzip_size_bytes", title="Ship the lowest", description=(
            "Among the variants within the quality budget, ship the one lowest on this: gzipped or plain file size, "
            "latency of one sample per call (latency_ms) or of 64 per call (batch64_latency_ms)."
        ),
    )
    quality: QualityMetric = Field(
        "accuracy", title="Quality metric",
        description="What the budget and the champion gate measure: accuracy (classification), rmse or r2 (regression; rmse unless set).",
    )
    max_quality_drop: float = Field(
        0.005, ge=0, le=1, title="Largest quality drop",
        description=(
            "How much worse than the baseline a variant may be: accuracy or r2 points as a fraction (0.005 = half a "
            "point); rmse: a share of the baseline's RMSE (0.05 = 5 % higher)."
        ),
    )
    confidence: float | None = Field(
        0.95, ge=0.5, lt=1, title="Confidence",
        description=(
            "Decide on intervals at this confidence: a variant is eligible when the worse end of the interval of its "
            "drop against the baseline, paired over the validation rows, stays within the largest quality drop; the "
            "champion gate refuses a version only when a paired test shows it worse than the champion beyond the "
            "largest regression. none: decide on the measured values alone (point rule)."
        ),
    )
    max_size_bytes: int | None = Field(None, ge=1, title="Largest size (bytes)", description="Only variants at most this large (size_bytes) may ship.")
    max_regression: float = Field(
        0.005, ge=0, le=1, title="Largest regression against the champion",
        description="The alias 'champion' moves only if the new version is no worse than the champion by more than this (same units as the quality drop).",
    )

    @field_validator("confidence", mode="before")
    @classmethod
    def _none_means_point_rule(cls, value: Any) -> Any:
        """`none` (as YAML and --set write it) turns the intervals off."""
        return None if isinstance(value, str) and value.strip().lower() == "none" else value


class ExportConfig(Section):
    """What is exported to the workspace folder exports/NAME/VERSION (one folder per registered version)."""

    model_config = ConfigDict(title="Export")

    saved_model: bool = Field(True, title="SavedModel", description="A SavedModel with a serving_default signature (TF Serving).")
    keras: bool = Field(True, title="Keras file", description="The Keras model file.")


def resolve_loss(loss: str, task: str) -> str:
    """The training loss: train.loss, with auto resolved for the task (crossentropy, or mse for regression)."""
    return LOSSES[task][0] if loss == "auto" else loss
