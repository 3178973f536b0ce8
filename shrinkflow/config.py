"""The pipeline's config: YAML validated by pydantic, one section per stage.

Unknown keys are errors everywhere, so a typo never silently falls back to a default. The same
model is the Prefect flow's parameter, so a deployment's Run form shows these typed fields.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shrinkflow.errors import ConfigError

Optimizer = Literal["adam", "sgd", "rmsprop", "adagrad"]
QuantizationMode = Literal["dynamic", "float16", "int8", "qat"]
SelectionMetric = Literal["gzip_size_bytes", "size_bytes", "latency_ms", "loss"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    """Where the data comes from and how it is split and scaled."""

    source: str = Field(
        "sklearn:digits",
        description=(
            "sklearn:digits, keras:mnist, keras:fashion_mnist, idx:DIR (MNIST-format IDX files), "
            "or a path to a .csv or .parquet file."
        ),
    )
    label_column: str = Field("label", description="Label column of a CSV or Parquet file.")
    image_shape: tuple[int, ...] | None = Field(
        None,
        description="Reshape a table's pixel columns to this image shape, e.g. [28, 28] or [8, 8, 1].",
    )
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share held out for validation.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Share held out for the final test.")
    max_samples: int | None = Field(
        None, ge=10, description="Use at most this many samples (a stratified subsample), for quick runs."
    )
    scaling: Literal["minmax", "standard", "none"] = Field(
        "minmax",
        description=(
            "minmax: one range fitted on the training split (pixels); standard: per-feature mean and "
            "standard deviation fitted on the training split (tabular); none: as read."
        ),
    )
    seed: int = Field(42, description="Seed of the stratified split and subsample.")

    @model_validator(mode="after")
    def _check_shape(self) -> DataConfig:
        if self.image_shape is not None and (
            not 2 <= len(self.image_shape) <= 3 or min(self.image_shape) < 1
        ):
            raise ValueError("image_shape must be [height, width] or [height, width, channels] of positive sizes")
        return self


class ModelConfig(Section):
    """The Keras model to build."""

    family: Literal["mlp", "cnn"] = Field("cnn", description="mlp: dense layers; cnn: conv blocks then dense layers.")
    conv_filters: tuple[int, ...] = Field(
        (32, 64), description="cnn only: filters of each 3x3 conv + 2x2 max-pool block."
    )
    kernel_size: int = Field(3, ge=1, le=7, description="cnn only: conv kernel size.")
    hidden_units: tuple[int, ...] = Field((128,), description="Units of each dense hidden layer.")
    activation: Literal["relu", "tanh", "elu", "gelu"] = Field(
        "relu", description="Activation of the conv and hidden layers."
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout rate after each dense hidden layer.")
    l1: float = Field(0.0, ge=0, description="L1 kernel regularization.")
    l2: float = Field(0.0, ge=0, description="L2 kernel regularization.")

    @model_validator(mode="after")
    def _check_sizes(self) -> ModelConfig:
        if any(n < 1 for n in self.conv_filters + self.hidden_units):
            raise ValueError("conv_filters and hidden_units must be positive integers")
        if self.family == "cnn" and not self.conv_filters:
            raise ValueError("a cnn needs at least one entry in conv_filters")
        return self


class TrainConfig(Section):
    """How the baseline is trained."""

    epochs: int = Field(10, ge=1, le=1000, description="Maximum training epochs (early stopping may end sooner).")
    batch_size: int = Field(128, ge=1, description="Samples per gradient step.")
    optimizer: Optimizer = Field("adam", description="The Keras optimizer.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Initial learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only.")
    lr_schedule: Literal["constant", "exponential"] = Field(
        "constant", description="constant, or exponential: multiplied by decay_rate after every epoch."
    )
    decay_rate: float = Field(0.9, gt=0, le=1, description="exponential: factor applied every epoch.")
    early_stopping_patience: int | None = Field(
        3, ge=1, description="Stop after this many epochs without a better validation loss; null disables."
    )
    seed: int = Field(42, description="Seed of weight initialisation and shuffling.")


class PruneConfig(Section):
    """Magnitude pruning of a copy of the baseline (tensorflow-model-optimization)."""

    enabled: bool = Field(False, description="Build the pruned variant (and its quantized variants).")
    target_sparsity: float = Field(0.8, ge=0, lt=1, description="Share of weights set to zero, in [0, 1).")
    schedule: Literal["polynomial", "constant"] = Field(
        "polynomial", description="polynomial: sparsity ramps from 0 to the target while fine-tuning; constant: at once."
    )
    epochs: int = Field(2, ge=1, description="Fine-tuning epochs while pruning.")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Fine-tuning learning rate (Adam).")


class QuantizeConfig(Section):
    """Post-training and quantization-aware conversion to TFLite, of the baseline and the pruned model."""

    modes: tuple[QuantizationMode, ...] = Field(
        (),
        description=(
            "TFLite variants to build: dynamic (dynamic-range), float16, int8 (full integer, calibrated "
            "on training data), qat (quantization-aware training, then conversion)."
        ),
    )
    int8_io: bool = Field(False, description="int8: integer input and output tensors too (for integer-only accelerators).")
    representative_samples: int = Field(
        200, ge=0, description="int8: calibration samples drawn from the training split."
    )
    qat_epochs: int = Field(1, ge=1, description="qat: quantization-aware fine-tuning epochs.")
    qat_learning_rate: float = Field(1e-4, gt=0, le=1, description="qat: fine-tuning learning rate (Adam).")

    @model_validator(mode="after")
    def _check_calibration(self) -> QuantizeConfig:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError("modes lists a mode twice")
        if "int8" in self.modes and self.representative_samples == 0:
            raise ValueError(
                "int8 needs calibration data: set representative_samples to at least 1, or drop int8 from modes"
            )
        return self


class SelectConfig(Section):
    """Which variant ships, and when it may replace the registry's champion."""

    metric: SelectionMetric = Field(
        "gzip_size_bytes", description="Among the variants within the allowed accuracy drop, ship the one lowest on this."
    )
    max_accuracy_drop: float = Field(
        0.005, ge=0, le=1, description="Largest accuracy loss against the baseline, as a fraction (0.005 = half a point)."
    )
    max_size_bytes: int | None = Field(None, ge=1, description="Only variants at most this large (size_bytes) may ship.")
    max_regression: float = Field(
        0.005, ge=0, le=1,
        description="The alias 'champion' moves only if the new version's accuracy is at least the champion's minus this.",
    )


class ExportConfig(Section):
    """What is exported under <workspace>/exports/<name>/<version>/."""

    saved_model: bool = Field(True, description="A SavedModel with a serving_default signature (TF Serving).")
    keras: bool = Field(True, description="The Keras model file.")


class PipelineConfig(Section):
    """A shrinkflow run: the model's name and one section per stage."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="The model's name: MLflow experiment, registered model and export folder.",
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    select: SelectConfig = SelectConfig()
    export: ExportConfig = ExportConfig()

    def config_hash(self) -> str:
        """A short, stable hash of every setting: the same config gives the same hash."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a YAML config, apply `dotted.key=value` overrides, and validate it.

    Raises:
        ConfigError: naming the file, the field and what is expected.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (name, data, model, ...), got {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override, path)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict[str, Any], source: str = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown key; {_allowed_keys_hint(error['loc'])}")
        elif error["type"] == "missing":
            lines.append(f"  {field}: required, but missing")
        else:
            lines.append(f"  {field}: {error['msg']} (got {error['input']!r})")
    return "\n".join(lines)


def _allowed_keys_hint(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = PipelineConfig
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return "remove it"
        model = annotation
    return "expected one of: " + ", ".join(model.model_fields)


def _apply_override(raw: dict[str, Any], override: str, path: Path) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {override!r}: expected dotted.key=value, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part} in {path} is not a section")
        node = child
    node[leaf] = value
