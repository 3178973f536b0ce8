"""The pipeline's config: YAML validated by pydantic, one section per stage.

Unknown keys are errors everywhere, so a typo never silently falls back to a default. The same
model is the Prefect flow's parameter, so a deployment's Run form shows these typed fields.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shrinkflow.core.errors import ConfigError

Optimizer = Literal["adam", "sgd", "rmsprop", "adagrad"]
QuantizationMode = Literal["dynamic", "float16", "int8", "qat"]
SelectionMetric = Literal["gzip_size_bytes", "size_bytes", "latency_ms"]
Task = Literal["classification", "regression"]
QualityMetric = Literal["accuracy", "rmse", "r2"]
# The quality metrics each task can be selected on; the first is the default.
QUALITY_METRICS: dict[str, tuple[str, ...]] = {"classification": ("accuracy",), "regression": ("rmse", "r2")}
LOSSES: dict[str, tuple[str, ...]] = {"classification": ("crossentropy",), "regression": ("mse", "mae", "huber")}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    """Where the data comes from and how it is split and scaled."""

    model_config = ConfigDict(title="Data")

    source: str = Field(
        "sklearn:digits",
        title="Data source",
        description=(
            "sklearn:digits, sklearn:diabetes (regression), keras:mnist, keras:fashion_mnist, idx:DIR "
            "(MNIST-format IDX files), or a path to a .csv or .parquet file."
        ),
    )
    task: Task = Field(
        "classification", title="Task",
        description="classification: predict a class (the label column); regression: predict one or several numbers.",
    )
    label_column: str = Field(
        "label", title="Label column", description="Label column of a CSV or Parquet file (regression: the target, unless target columns are given)."
    )
    target_columns: tuple[str, ...] = Field(
        (), title="Target columns", description="regression: the numeric columns to predict; empty means the label column alone."
    )
    text_column: str | None = Field(
        None, title="Text column", description="A CSV or Parquet column of raw text to classify (model.family: text); other feature columns are ignored."
    )
    vocabulary_size: int = Field(
        5000, ge=10, le=1_000_000, title="Vocabulary size", description="text: most frequent tokens kept by the vocabulary fitted on the training split."
    )
    sequence_length: int = Field(
        32, ge=1, le=10_000, title="Tokens per text", description="text: each text is cut or padded to this many tokens."
    )
    sequence_shape: tuple[int, int] | None = Field(
        None, title="Sequence shape",
        description="Read each sample's values as [timesteps, features] for a recurrent model, e.g. [28, 28]: MNIST rows as 28 steps of 28 pixels.",
    )
    series_column: str | None = Field(
        None, title="Series column",
        description="A time series: this numeric column of a CSV or Parquet file, in time order, cut into windows (regression).",
    )
    window: int | None = Field(None, ge=1, title="Window", description="series: past values each sample sees.")
    horizon: int = Field(1, ge=1, title="Horizon", description="series: predict the value this many steps after the window's end.")
    image_shape: tuple[int, ...] | None = Field(
        None,
        title="Image shape",
        description="Reshape a table's pixel columns to this image shape, e.g. [28, 28] or [8, 8, 1].",
    )
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, title="Validation share", description="Share held out for validation.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, title="Test share", description="Share held out for the final test.")
    max_samples: int | None = Field(
        None, ge=10, title="Most samples", description="Use at most this many samples (a stratified subsample), for quick runs."
    )
    scaling: Literal["minmax", "standard", "none"] = Field(
        "minmax",
        title="Feature scaling",
        description=(
            "minmax: one range fitted on the training split (pixels); standard: per-feature mean and "
            "standard deviation fitted on the training split (tabular); none: as read."
        ),
    )
    seed: int = Field(42, title="Split seed", description="Seed of the stratified split and subsample.")

    @model_validator(mode="after")
    def _check_shape(self) -> DataConfig:
        if self.image_shape is not None and (
            not 2 <= len(self.image_shape) <= 3 or min(self.image_shape) < 1
        ):
            raise ValueError("image_shape must be [height, width] or [height, width, channels] of positive sizes")
        if self.sequence_shape is not None and min(self.sequence_shape) < 1:
            raise ValueError("sequence_shape must be [timesteps, features] of positive sizes")
        shapes = [name for name in ("image_shape", "sequence_shape", "text_column", "series_column") if getattr(self, name) is not None]
        if len(shapes) > 1:
            raise ValueError(f"{' and '.join(shapes)} exclude each other: give one way to read the samples")
        if (self.series_column is None) != (self.window is None):
            raise ValueError("series_column and window go together: name the series column and the window length")
        if self.series_column is not None and self.task != "regression":
            raise ValueError("a series (series_column) predicts future values: set task: regression")
        if self.target_columns and self.task != "regression":
            raise ValueError("target_columns are for task: regression; a classification predicts the label column")
        return self

    def targets(self) -> tuple[str, ...]:
        """regression: the columns to predict."""
        return self.target_columns or (self.label_column,)


class ModelConfig(Section):
    """The Keras model to build."""

    model_config = ConfigDict(title="Model")

    family: Literal["mlp", "cnn", "rnn", "text"] = Field(
        "cnn", title="Model family",
        description=(
            "mlp: dense layers; cnn: conv blocks then dense layers (images); rnn: recurrent layers then dense "
            "layers (sequences); text: a token embedding, recurrent or 1-D conv layers, then dense layers."
        ),
    )
    conv_filters: tuple[int, ...] = Field(
        (32, 64), title="Conv filters",
        description="cnn: filters of each conv + 2x2 max-pool block; text with the conv encoder: of each 1-D conv layer.",
    )
    kernel_size: int = Field(3, ge=1, le=7, title="Kernel size", description="cnn and text conv: conv kernel size.")
    recurrent_units: tuple[int, ...] = Field(
        (64,), title="Recurrent units", description="rnn and text with the recurrent encoder: units of each stacked recurrent layer."
    )
    cell: Literal["lstm", "gru"] = Field("lstm", title="Recurrent cell", description="rnn and text: LSTM or GRU layers.")
    bidirectional: bool = Field(False, title="Bidirectional", description="rnn and text: read each sequence both ways.")
    embedding_dim: int = Field(32, ge=1, le=4096, title="Embedding size", description="text: size of each token's embedding.")
    text_encoder: Literal["recurrent", "conv"] = Field(
        "recurrent", title="Text encoder", description="text: recurrent layers, or 1-D conv layers and global max pooling."
    )
    hidden_units: tuple[int, ...] = Field((128,), title="Hidden units", description="Units of each dense hidden layer.")
    activation: Literal["relu", "tanh", "elu", "gelu"] = Field(
        "relu", title="Activation", description="Activation of the conv and hidden layers."
    )
    dropout: float = Field(0.2, ge=0, lt=1, title="Dropout", description="Dropout rate after each dense hidden layer.")
    l1: float = Field(0.0, ge=0, title="L1 penalty", description="L1 kernel regularization.")
    l2: float = Field(0.0, ge=0, title="L2 penalty", description="L2 kernel regularization.")

    @model_validator(mode="after")
    def _check_sizes(self) -> ModelConfig:
        if any(n < 1 for n in self.conv_filters + self.recurrent_units + self.hidden_units):
            raise ValueError("conv_filters, recurrent_units and hidden_units must be positive integers")
        for name, sizes in self.layer_sizes().items():
            if name != "hidden_units" and not sizes:
                raise ValueError(f"a {self.family} model{' with the ' + self.text_encoder + ' encoder' if self.family == 'text' else ''} needs at least one entry in {name}")
        return self

    def layer_sizes(self) -> dict[str, tuple[int, ...]]:
        """The layer sizes this family uses, by field name: what a student shrinks."""
        feature_layers = {
            "mlp": (), "cnn": ("conv_filters",), "rnn": ("recurrent_units",),
            "text": ("conv_filters",) if self.text_encoder == "conv" else ("recurrent_units",),
        }[self.family]
        return {name: getattr(self, name) for name in (*feature_layers, "hidden_units")}

    @property
    def is_recurrent(self) -> bool:
        return self.family == "rnn" or (self.family == "text" and self.text_encoder == "recurrent")


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


class StudentConfig(Section):
    """A smaller model of the teacher's family, trained by distillation: by a width multiplier or explicit sizes."""

    model_config = ConfigDict(title="Student")

    width: float | None = Field(
        0.25, gt=0, lt=1, title="Width multiplier",
        description="The teacher's conv filters and hidden units times this (at least 1 each); ignored where sizes are given.",
    )
    conv_filters: tuple[int, ...] | None = Field(
        None, title="Conv filters", description="cnn and text conv: the student's filters per conv layer (as many as the teacher)."
    )
    recurrent_units: tuple[int, ...] | None = Field(
        None, title="Recurrent units", description="rnn and text: the student's units per recurrent layer (as many as the teacher)."
    )
    hidden_units: tuple[int, ...] | None = Field(None, title="Hidden units", description="The student's dense hidden layers.")
    dropout: float | None = Field(
        None, ge=0, lt=1, title="Dropout", description="Dropout after each dense hidden layer; empty: the teacher's (a small student often needs less)."
    )

    def sizes(self, teacher: ModelConfig) -> dict[str, tuple[int, ...]]:
        """The student's sizes of the layers its teacher's family uses (ModelConfig.layer_sizes): given, or the
        teacher's times the width."""
        scale = self.width or 1.0
        return {
            name: given if (given := getattr(self, name)) is not None else tuple(max(1, round(n * scale)) for n in sizes)
            for name, sizes in teacher.layer_sizes().items()
        }

    def model(self, teacher: ModelConfig) -> ModelConfig:
        """The student as a model config: the teacher's family and settings, the student's sizes."""
        dropout = teacher.dropout if self.dropout is None else self.dropout
        return teacher.model_copy(update={**self.sizes(teacher), "dropout": dropout})


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

    def for_student(self, from_scratch: bool) -> DistillConfig:
        """The section as one student's stage sees it: no list of students (changing one student retrains no
        other) and, from scratch, no soft-target settings (changing the temperature retrains no scratch student)."""
        uses: tuple[str, ...] = ("epochs", "learning_rate", "early_stopping_patience")
        uses += () if from_scratch else ("temperature", "alpha")
        return DistillConfig(**{name: getattr(self, name) for name in uses})


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

    def for_mode(self, mode: QuantizationMode) -> QuantizeConfig:
        """The section as one mode's stage sees it: that mode, the settings it uses, the others at their
        defaults. So a mode's cached stage depends only on what it uses: adding a mode, or changing the QAT
        epochs, rebuilds no other mode."""
        uses = {"int8": ("int8_io", "representative_samples"), "qat": ("qat_epochs", "qat_learning_rate")}
        return QuantizeConfig(modes=(mode,), **{name: getattr(self, name) for name in uses.get(mode, ())})


class OnnxConfig(Section):
    """ONNX Runtime as a second target: variants converted to ONNX (tf2onnx) and evaluated in onnxruntime."""

    model_config = ConfigDict(title="ONNX Runtime")

    enabled: bool = Field(False, title="Build ONNX variants", description="Convert the variants chosen in 'convert' to ONNX (<variant>-onnx).")
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
        "gzip_size_bytes", title="Ship the lowest", description="Among the variants within the quality budget, ship the one lowest on this."
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
    max_size_bytes: int | None = Field(None, ge=1, title="Largest size (bytes)", description="Only variants at most this large (size_bytes) may ship.")
    max_regression: float = Field(
        0.005, ge=0, le=1, title="Largest regression against the champion",
        description="The alias 'champion' moves only if the new version is no worse than the champion by more than this (same units as the quality drop).",
    )


class ExportConfig(Section):
    """What is exported to the workspace folder exports/NAME/VERSION (one folder per registered version)."""

    model_config = ConfigDict(title="Export")

    saved_model: bool = Field(True, title="SavedModel", description="A SavedModel with a serving_default signature (TF Serving).")
    keras: bool = Field(True, title="Keras file", description="The Keras model file.")


class SearchSpace(Section):
    """Where a sweep samples one config key: a list of choices, an integer range or a float range."""

    # `int` and `float` are the keys a user writes; the attributes cannot shadow the builtins.
    model_config = ConfigDict(title="Search space", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    choice: tuple[Any, ...] | None = Field(None, title="Choices", description="The values to try, as the key takes them (e.g. [[16], [32]] for hidden_units).")
    int_range: tuple[int, int] | None = Field(None, alias="int", title="Integer range", description="[low, high], both included.")
    float_range: tuple[float, float] | None = Field(None, alias="float", title="Float range", description="[low, high].")
    step: int | None = Field(None, ge=1, title="Step", description="int only: sample low, low + step, ...")
    log: bool = Field(False, title="Log scale", description="Sample the range on a log scale (low must be above 0).")

    @model_validator(mode="after")
    def _check_space(self) -> SearchSpace:
        given = [name for name, value in (("choice", self.choice), ("int", self.int_range), ("float", self.float_range)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, int or float (got {', '.join(given) or 'none'})")
        if self.choice is not None and not self.choice:
            raise ValueError("choice is empty: list at least one value")
        bounds = self.int_range or self.float_range
        if bounds is not None:
            if bounds[0] > bounds[1]:
                raise ValueError(f"empty range [{bounds[0]}, {bounds[1]}]: low must be at most high")
            if self.log and bounds[0] <= 0:
                raise ValueError(f"log scale needs low > 0 (got {bounds[0]})")
        if self.step is not None and self.int_range is None:
            raise ValueError("step is for int ranges")
        if self.step is not None and self.log:
            raise ValueError("step and log cannot go together (Optuna samples a log range without steps)")
        return self


class SweepConfig(Section):
    """`shrinkflow sweep`: which config keys to search, how, and what counts as best."""

    model_config = ConfigDict(title="Sweep")

    parameters: dict[str, SearchSpace] = Field(
        {}, title="Search space",
        description="Dotted config key (as for --set, e.g. model.hidden_units, prune.target_sparsity) -> its search space.",
    )
    sampler: Literal["grid", "random", "tpe"] = Field(
        "tpe", title="Sampler", description="grid: every combination of choices and int steps; random; tpe: Optuna's TPE."
    )
    objective: Literal["size", "quality_and_size"] = Field(
        "size", title="Objective",
        description="size: the smallest shipped variant that keeps the accuracy; quality_and_size: both, a Pareto front.",
    )
    trials: int = Field(12, ge=1, le=10000, title="Trials", description="Trials to reach, counting those an interrupted sweep finished.")
    seed: int = Field(42, title="Sampler seed", description="Seed of the sampler.")
    storage: str | None = Field(
        None, title="Study storage",
        description="Database URL of the Optuna study (postgresql://... for a team); empty: <workspace>/sweeps/<name>.db.",
    )
    quality_floor: float | None = Field(
        None, ge=0, le=1, title="Accuracy floor",
        description="Least accuracy of a trial's shipped variant; empty: the base config's baseline minus select.max_quality_drop.",
    )

    @model_validator(mode="after")
    def _check_grid(self) -> SweepConfig:
        if self.sampler == "grid":
            for key, space in self.parameters.items():
                if space.float_range is not None or space.log:
                    raise ValueError(
                        f"parameters.{key}: the grid sampler needs choices or int ranges; give {key} a choice list "
                        "or use sampler: random or tpe"
                    )
        return self


class PipelineConfig(Section):
    """A shrinkflow run: the model's name and one section per stage."""

    model_config = ConfigDict(title="Pipeline settings")

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        title="Model name",
        description="The model's name: MLflow experiment, registered model and export folder.",
    )
    data: DataConfig = Field(DataConfig(), title="Data")
    model: ModelConfig = Field(ModelConfig(), title="Model")
    train: TrainConfig = Field(TrainConfig(), title="Training")
    distill: DistillConfig = Field(DistillConfig(), title="Distillation")
    prune: PruneConfig = Field(PruneConfig(), title="Pruning")
    cluster: ClusterConfig = Field(ClusterConfig(), title="Clustering")
    quantize: QuantizeConfig = Field(QuantizeConfig(), title="Quantization")
    onnx: OnnxConfig = Field(OnnxConfig(), title="ONNX Runtime")
    select: SelectConfig = Field(SelectConfig(), title="Selection and champion gate")
    export: ExportConfig = Field(ExportConfig(), title="Export")
    sweep: SweepConfig = Field(SweepConfig(), title="Sweep")

    @model_validator(mode="before")
    @classmethod
    def _regression_quality_default(cls, raw: Any) -> Any:
        """A regression is selected on RMSE unless the config says otherwise."""
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict) and raw["data"].get("task") == "regression":
            select = raw.get("select") or {}
            if isinstance(select, dict) and "quality" not in select:
                raw = {**raw, "select": {**select, "quality": "rmse"}}
        return raw

    @model_validator(mode="after")
    def _check_stages(self) -> PipelineConfig:
        task, family = self.data.task, self.model.family
        if self.select.quality not in QUALITY_METRICS[task]:
            raise ValueError(f"select.quality: {self.select.quality} does not measure a {task}; use {' or '.join(QUALITY_METRICS[task])}")
        if self.train.loss not in ("auto", *LOSSES[task]):
            raise ValueError(f"train.loss: {self.train.loss} is not a {task} loss; use auto or {', '.join(LOSSES[task])}")
        if (family == "text") != (self.data.text_column is not None):
            raise ValueError(
                "model.family: text reads data.text_column; set both (a text column and family: text) or neither"
            )
        if family == "rnn" and self.data.sequence_shape is None and self.data.series_column is None:
            raise ValueError("model.family: rnn needs sequences: set data.sequence_shape [timesteps, features], or data.series_column and data.window")
        if family != "rnn" and (self.data.sequence_shape is not None or self.data.series_column is not None) and family != "mlp":
            raise ValueError(f"model.family: {family} cannot read sequences (data.sequence_shape / data.series_column); use rnn or mlp")
        for number, student in enumerate(self.distill.students, start=1):
            problem = student_problem(student, self.model)
            if problem:
                raise ValueError(f"distill.students.{number - 1} (student-{number}): {problem}")
        return self


    def config_hash(self) -> str:
        """A short, stable hash of every setting: the same config gives the same hash."""
        # The sweep section says how to search around this config, not what it trains: left out.
        canonical = json.dumps(self.model_dump(mode="json", exclude={"sweep"}), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def resolve_loss(loss: str, task: str) -> str:
    """The training loss: train.loss, with auto resolved for the task (crossentropy, or mse for regression)."""
    return LOSSES[task][0] if loss == "auto" else loss


def student_problem(student: StudentConfig, teacher: ModelConfig) -> str | None:
    """Why `student` cannot be a student of `teacher` (not smaller, or a different shape), or None."""
    sizes, teacher_sizes = student.sizes(teacher), teacher.layer_sizes()
    for name in ("conv_filters", "recurrent_units"):
        if getattr(student, name) and name not in teacher_sizes:
            return f"{name} is not a layer of this {teacher.family} teacher"
    for name, student_sizes in sizes.items():
        if any(n < 1 for n in student_sizes):
            return "layer sizes must be positive integers"
        if name != "hidden_units" and len(student_sizes) != len(teacher_sizes[name]):
            return f"{name} needs {len(teacher_sizes[name])} entries, one per layer of the teacher (got {list(student_sizes)})"
    if not sizes["hidden_units"] and teacher.hidden_units:
        return "hidden_units is empty; give at least one dense layer, like the teacher"
    flat, teacher_flat = [n for s in sizes.values() for n in s], [n for s in teacher_sizes.values() for n in s]
    wider = [mine > theirs for name in sizes for mine, theirs in zip(sizes[name], teacher_sizes[name])]
    if any(wider) or sum(flat) >= sum(teacher_flat):
        described = ", ".join(f"{name} {list(sizes[name])}" for name in sizes)
        teacher_described = ", ".join(f"{list(teacher_sizes[name])}" for name in sizes)
        return (
            f"not smaller than its teacher (student {described}; teacher {teacher_described}): no layer may be wider "
            "than the teacher's, and it needs fewer units in all"
        )
    return None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a YAML config, apply `dotted.key=value` overrides, and validate it.

    Raises:
        ConfigError: naming the file (or the --set override), the field and what is expected.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the path of a YAML config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; a config needs at least `name: <model name>`")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (name, data, model, ...), got a {type(raw).__name__} "
            f"({shorten(raw)})"
        )
    overridden = dict(_apply_override(raw, override) for override in overrides)
    return validate_config(raw, source=str(path), overridden=overridden)


def validate_config(raw: dict[str, Any], source: str = "config", overridden: dict[str, str] | None = None) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overridden or {})) from None


def format_validation_error(exc: ValidationError, source: str, overridden: dict[str, str] | None = None) -> str:
    """One line per problem, naming the field and, where a --set override gave the value, the override."""
    lines = [f"{source}: invalid config"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        culprit = next(
            (text for key, text in (overridden or {}).items() if field == key or field.startswith(f"{key}.")), None
        )
        where = f"{field} (from --set {culprit})" if culprit else field
        if error["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key; {_allowed_keys_hint(error['loc'])}")
        elif error["type"] == "missing":
            lines.append(f"  {where}: required, but missing")
        else:
            lines.append(f"  {where}: {error['msg']} (got {shorten(error['input'])})")
    return "\n".join(lines)


def shorten(value: Any, limit: int = 120) -> str:
    """A repr of `value` of at most about `limit` characters, however large or deeply nested it is
    (a YAML file of aliases expands to gigabytes)."""
    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, limit, limit
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _section(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config section (pydantic model) at `loc`, or None where `loc` is not a section."""
    model: type[BaseModel] = PipelineConfig
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _allowed_keys_hint(loc: tuple[Any, ...]) -> str:
    section = _section(loc[:-1])
    return "remove it" if section is None else "expected one of: " + ", ".join(section.model_fields)


def _apply_override(raw: dict[str, Any], override: str) -> tuple[str, str]:
    """Apply one `dotted.key=value` to the raw config; returns (dotted key, the override as given)."""
    key, sep, text = override.partition("=")
    parts = key.split(".")
    if not sep or not key or any(not part for part in parts):
        raise ConfigError(f"--set {override!r}: expected dotted.key=value, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    section = _section(tuple(parts))
    if section is not None and not isinstance(value, dict):
        fields = ", ".join(f"{key}.{name}" for name in section.model_fields)
        raise ConfigError(f"--set {override}: {key} is a section, not a value; set one of its fields: {fields}")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        parent = _section(tuple(parts[:depth]))
        child = node.setdefault(part, {})
        is_value = parent is not None and part in parent.model_fields and _section(tuple(parts[: depth + 1])) is None
        if not isinstance(child, dict) or is_value:
            raise ConfigError(
                f"--set {override}: {'.'.join(parts[: depth + 1])} is a value, not a section, so it has no field "
                f"{parts[depth + 1]!r}"
            )
        node = child
    node[parts[-1]] = value
    return key, override
