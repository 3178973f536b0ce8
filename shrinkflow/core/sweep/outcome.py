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
        quality: the shipped variant's validation quality (select.quality: accuracy, rmse or r2): what trials are
            compared on, as variants are, so the test split is never used to choose.
        test_quality: its test quality, reported (for the chosen trial, the number the sweep stands by).
        gzip_size_bytes: its gzipped size.
        metric: what the quality is (accuracy, rmse or r2).
        baseline_quality: the trial's own baseline's validation quality.
        worker: the Dask worker that ran it ("" when it ran in the flow's process).
        seconds: the trial task's wall time; stage_seconds: the part spent inside the pipeline's stages.
    """

    number: int
    params: dict[str, Any]
    status: Literal["complete", "failed"] = "complete"
    reason: str = ""
    variant: str = ""
    quality: float | None = None
    test_quality: float | None = None
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


def shipped_outcome(selection: Selection, variants: Sequence[Variant], quality: str) -> dict[str, Any] | None:
    """The trial's result as TrialOutcome fields: the shipped variant's name, validation and test quality (the
    metric select.quality names) and gzipped size (None if nothing ships). The one place that says what a trial
    scores."""
    if selection.selected is None:
        return None
    shipped = next(variant for variant in variants if variant.name == selection.selected)
    return {
        "variant": shipped.name, "quality": shipped.metrics[f"val_{quality}"], "test_quality": shipped.metrics[quality],
        "gzip_size_bytes": int(shipped.metrics["gzip_size_bytes"]),
    }
