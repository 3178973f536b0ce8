"""What a trial hands back: which variant its pipeline would ship and how it did (never models)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shrinkflow.core.selection import Selection
from shrinkflow.core.variants import Variant


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial hands back (never models): which variant its pipeline would ship and how it did.

    Attributes:
        number: the Optuna trial number.
        params: the sampled values by dotted config key (empty for the base trial).
        status: "complete", or "failed" (invalid config, a stage that raised, nothing selected).
        reason: why it failed.
        variant: the shipped variant's name.
        quality, gzip_size_bytes: the shipped variant's test quality (select.quality: accuracy, rmse or r2) and
            gzipped size.
        metric: what the quality is (accuracy, rmse or r2).
        baseline_quality: the trial's own baseline's quality.
        worker: the Dask worker that ran it ("" when it ran in the flow's process).
        seconds: the trial task's wall time; stage_seconds: the part spent inside the pipeline's stages.
    """

    number: int
    params: dict[str, Any]
    status: Literal["complete", "failed"] = "complete"
    reason: str = ""
    variant: str = ""
    quality: float | None = None
    metric: str = "accuracy"  # what `quality` measures (select.quality)
    gzip_size_bytes: int | None = None
    baseline_quality: float | None = None
    worker: str = ""
    seconds: float = 0.0
    stage_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    def to_json(self) -> str:
        return json.dumps({name: getattr(self, name) for name in self.__dataclass_fields__}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrialOutcome:
        return cls(**json.loads(text))


def shipped_outcome(selection: Selection, variants: Sequence[Variant], quality: str) -> tuple[str, float, int] | None:
    """The trial's result: the shipped variant's name, quality (the metric select.quality names) and gzipped
    size (None if nothing ships). The one place that says what a trial scores."""
    if selection.selected is None:
        return None
    shipped = next(variant for variant in variants if variant.name == selection.selected)
    return shipped.name, shipped.metrics[quality], int(shipped.metrics["gzip_size_bytes"])
