"""One frozen parameter object per stage, built once from the config: what the stage's function takes, what its
Prefect task takes, and what its cache key is made of (so changing a setting rebuilds exactly the stages that
use it, and nothing else). A variant keeps the step that made it as its lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from shrinkflow.core.config import DataConfig, ModelConfig, PipelineConfig, TrainConfig, resolve_loss
from shrinkflow.core.names import Quantization, student_name


@dataclass(frozen=True)
class FineTuning:
    """How a stage trains a model or a wrapped copy of one: Adam at `learning_rate` for `epochs`, on the task's
    `loss`, in batches of `batch_size` shuffled with `seed` (the baseline's batch size, loss and seed)."""

    epochs: int
    learning_rate: float
    batch_size: int
    seed: int
    loss: str  # resolved: crossentropy, mse, mae or huber (config.resolve_loss)
    early_stopping_patience: int | None = None  # distillation only: epochs without a better validation loss


@dataclass(frozen=True)
class TrainStep:
    """Train the baseline: the model section as written, and the training section (every field is used)."""

    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class DistillStep:
    """Train student `number` of the teacher's family from its soft targets (or, `from_scratch`, from the labels
    alone: no temperature or alpha, so changing them retrains no scratch student)."""

    number: int
    from_scratch: bool
    student: ModelConfig
    tuning: FineTuning
    temperature: float | None = None
    alpha: float | None = None

    @property
    def variant(self) -> str:
        return student_name(self.number, self.from_scratch)


@dataclass(frozen=True)
class PruneStep:
    """Magnitude-prune a copy to `target_sparsity` while fine-tuning."""

    target_sparsity: float
    schedule: Literal["polynomial", "constant"]
    tuning: FineTuning


@dataclass(frozen=True)
class ClusterStep:
    """Cluster a copy's kernels into `clusters` values (per output channel for conv kernels with `per_channel`)
    while fine-tuning; sparsity-preserving when the source is pruned."""

    clusters: int
    per_channel: bool
    tuning: FineTuning


@dataclass(frozen=True)
class QuantizeStep:
    """Convert to TFLite in one mode: int8 is calibrated on `representative_samples` training samples (with integer
    input and output if `int8_io`); QAT fine-tunes first (`tuning`). Each mode carries only what it uses."""

    mode: Quantization
    representative_samples: int = 0
    int8_io: bool = False
    tuning: FineTuning | None = None


@dataclass(frozen=True)
class OnnxStep:
    """Convert to ONNX (tf2onnx) for this opset."""

    opset: int


Step = TrainStep | DistillStep | PruneStep | ClusterStep | QuantizeStep | OnnxStep


@dataclass(frozen=True)
class Judging:
    """How every variant is compared with the baseline (shrinkflow.core.comparison): on the quality metric
    (select.quality), with intervals at the selection's confidence (None: the point rule)."""

    metric: str
    confidence: float | None
    budget: float  # select.max_quality_drop


@dataclass(frozen=True)
class Steps:
    """Every stage's parameters, and which sources the clustering and ONNX stages take: the pipeline's plan.

    `prune`, `cluster` and `onnx` are None when the config turns them off; `quantize` has one step per mode.
    """

    data: DataConfig
    train: TrainStep
    students: tuple[DistillStep, ...]
    prune: PruneStep | None
    cluster: ClusterStep | None
    cluster_sources: tuple[Literal["pruned", "unpruned"], ...]
    quantize: tuple[QuantizeStep, ...]
    onnx: OnnxStep | None
    onnx_sources: tuple[Literal["float", "int8", "qat"], ...]
    judging: Judging

    @classmethod
    def from_config(cls, config: PipelineConfig) -> Steps:
        train = config.train
        loss = resolve_loss(train.loss, config.data.task)

        def tuning(epochs: int, learning_rate: float, patience: int | None = None) -> FineTuning:
            return FineTuning(epochs, learning_rate, train.batch_size, train.seed, loss, patience)

        distill = config.distill
        students = tuple(
            DistillStep(
                number, scratch, student.model(config.model),
                tuning(distill.epochs, distill.learning_rate, distill.early_stopping_patience),
                temperature=None if scratch else distill.temperature, alpha=None if scratch else distill.alpha,
            )
            for number, student in enumerate(distill.students, start=1)
            for scratch in ((False, True) if distill.from_scratch else (False,))
        )
        quantize = config.quantize
        return cls(
            data=config.data,
            train=TrainStep(config.model, train),
            students=students,
            prune=PruneStep(
                config.prune.target_sparsity, config.prune.schedule, tuning(config.prune.epochs, config.prune.learning_rate)
            ) if config.prune.enabled else None,
            cluster=ClusterStep(
                config.cluster.clusters, config.cluster.per_channel,
                tuning(config.cluster.epochs, config.cluster.learning_rate),
            ) if config.cluster.enabled else None,
            cluster_sources=config.cluster.apply_to,
            quantize=tuple(
                QuantizeStep(
                    Quantization(mode),
                    representative_samples=quantize.representative_samples if mode == "int8" else 0,
                    int8_io=quantize.int8_io if mode == "int8" else False,
                    tuning=tuning(quantize.qat_epochs, quantize.qat_learning_rate) if mode == "qat" else None,
                )
                for mode in quantize.modes
            ),
            onnx=OnnxStep(config.onnx.opset) if config.onnx.enabled else None,
            onnx_sources=config.onnx.convert,
            judging=Judging(config.select.quality, config.select.confidence, config.select.max_quality_drop),
        )


def step_settings(step: Step | None) -> dict[str, Any]:
    """A step's settings as flat name -> value pairs (a nested FineTuning's fields among them; the student's model
    as its layer sizes): the lineage MLflow and the manifest record."""
    if step is None or isinstance(step, TrainStep):
        return {}  # the baseline's settings are the config's, on the parent run
    settings: dict[str, Any] = {}
    for field in fields(step):
        value = getattr(step, field.name)
        if isinstance(value, FineTuning):
            settings |= {name: getattr(value, name) for name in (f.name for f in fields(value))}
        elif isinstance(value, ModelConfig):
            settings |= {name: list(sizes) for name, sizes in value.layer_sizes().items()} | {"dropout": value.dropout}
        elif value is not None:
            settings[field.name] = str(value) if isinstance(value, Quantization) else value
    return settings
