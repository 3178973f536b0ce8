"""The sweep section: which config keys `shrinkflow sweep` searches, how, and what counts as best."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from shrinkflow.core.config.base import Section


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
