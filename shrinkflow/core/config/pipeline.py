"""The whole config: the model's name and one section per stage, checked together (a regression is judged on
RMSE or R2, a text model reads a text column, a student is smaller than its teacher).

Two models, so that each Prefect Run form shows what its flow reads: `PipelineSettings` (every stage: the
pipeline's parameter) and `PipelineConfig` (those plus the `sweep` section: a YAML config, the sweep's parameter).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import yaml
from pydantic import ConfigDict, Field, model_validator

from shrinkflow.core.config.base import Section
from shrinkflow.core.config.data import DataConfig
from shrinkflow.core.config.model import ModelConfig, student_problem
from shrinkflow.core.config.stages import (
    LOSSES, QUALITY_METRICS, ClusterConfig, DistillConfig, ExportConfig, OnnxConfig, PruneConfig, QuantizeConfig,
    SelectConfig, TrainConfig,
)
from shrinkflow.core.config.sweep import SweepConfig


class PipelineSettings(Section):
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
    def _check_stages(self) -> PipelineSettings:
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


class PipelineConfig(PipelineSettings):
    """A config file: the pipeline's settings and how `shrinkflow sweep` searches around them."""

    model_config = ConfigDict(title="Pipeline and sweep settings")

    sweep: SweepConfig = Field(SweepConfig(), title="Sweep")

    @model_validator(mode="after")
    def _check_quality_floor(self) -> PipelineConfig:
        """The floor is in the units of select.quality: an accuracy from 0 to 1, an R2 up to 1, an RMSE from 0."""
        floor, metric = self.sweep.quality_floor, self.select.quality
        low, high = {"accuracy": (0.0, 1.0), "r2": (-math.inf, 1.0)}.get(metric, (0.0, math.inf))
        if floor is not None and not low <= floor <= high:
            raise ValueError(f"sweep.quality_floor: {floor} is no {metric}; give one from {low:g} to {high:g}")
        return self

    @classmethod
    def of(cls, settings: PipelineSettings) -> PipelineConfig:
        """`settings` as a config (a Run form's settings have no sweep section: the default one)."""
        return settings if isinstance(settings, PipelineConfig) else cls.model_validate(settings.model_dump())
