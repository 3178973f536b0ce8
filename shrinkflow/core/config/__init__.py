"""The pipeline's config: YAML validated by pydantic, one section per stage.

Unknown keys are errors everywhere, so a typo never silently falls back to a default. The same model is the
Prefect flow's parameter, so a deployment's Run form shows these typed fields.
"""

from shrinkflow.core.config.base import Section, Task
from shrinkflow.core.config.data import IMAGE_FOLDER_PREFIX, DataConfig
from shrinkflow.core.config.loading import (
    apply_override, format_validation_error, load_config, section_at, set_value, shorten, validate_config,
)
from shrinkflow.core.config.model import ModelConfig, StudentConfig, student_problem
from shrinkflow.core.config.pipeline import PipelineConfig, PipelineSettings
from shrinkflow.core.config.stages import (
    LOSSES, QUALITY_METRICS, ClusterConfig, DistillConfig, ExportConfig, OnnxConfig, Optimizer, PruneConfig,
    QualityMetric, QuantizationMode, QuantizeConfig, SelectConfig, SelectionMetric, TrainConfig, resolve_loss,
)
from shrinkflow.core.config.sweep import SearchEntry, SearchSpace, SweepConfig

__all__ = [
    "IMAGE_FOLDER_PREFIX", "LOSSES", "QUALITY_METRICS", "ClusterConfig", "DataConfig", "DistillConfig", "ExportConfig", "ModelConfig",
    "OnnxConfig", "Optimizer", "PipelineConfig", "PipelineSettings", "PruneConfig", "QualityMetric", "QuantizationMode",
    "QuantizeConfig", "SearchEntry", "SearchSpace", "Section", "SelectConfig", "SelectionMetric", "StudentConfig", "SweepConfig",
    "Task", "TrainConfig", "apply_override", "format_validation_error", "load_config", "resolve_loss", "section_at",
    "set_value", "shorten", "student_problem", "validate_config",
]
